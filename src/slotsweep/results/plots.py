"""Aggregation plots, PNG files of FIGSIZE_IN x DPI pixels.

Figures are made without pyplot (no global backend state), except Optuna's plots, which use
pyplot: the CLI selects the Agg backend so they work on nodes without a display.

- each metric against each numeric swept config key, mean ± std over seeds as error bars: lines
  through the groups that differ in that key only (a grid), or one scatter of every group when
  groups also differ in other keys (a continuous search: lines would join arbitrary points);
- an Optuna study's optimization history and parameter importances;
- a sweep's learning curves (its curves.json): value against device-hours per trial, seed mean,
  trials that did not complete in grey.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matplotlib.figure import Figure

from slotsweep.runs.study_storage import find_storage_files, open_storage_file

if TYPE_CHECKING:
    from slotsweep.results.records import Group, Table

__all__ = ["DPI", "FIGSIZE_IN", "param_figure", "plot_curves", "plot_optuna", "plot_params"]

FIGSIZE_IN, DPI = (6.0, 4.0), 100  # every plot is 600 x 400 pixels


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


def _shown(value: str) -> str:
    """A config value for a legend: floats to 3 significant digits (an Optuna trial's 0.123456789...)."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if number.is_integer() else f"{number:.3g}"


def param_figure(groups: list[Group], param: str, others: list[str], metric: str) -> Figure:
    """`metric` (mean ± std over seeds) against the numeric config key `param`, for `groups`.

    Groups equal in every other key (`others`) form one line, labelled by those keys (a grid).
    When some group has no such partner (a continuous Optuna search, where trials share no other
    value), lines would join arbitrary points: all groups are one unlabelled scatter instead.
    """
    series: dict[tuple[str, ...], list[Group]] = defaultdict(list)
    for group in groups:
        series[tuple(str(group.params[k]) for k in others)].append(group)
    scatter = any(len(members) < 2 for members in series.values())
    if scatter:
        series = {(): groups}
    fig = Figure(figsize=FIGSIZE_IN, dpi=DPI)
    ax = fig.subplots()
    for rest, members in series.items():
        points = sorted((g.params[param], g.stats[metric]) for g in members if g.stats[metric].n > 0)
        if not points:
            continue
        label = None if scatter else ", ".join(f"{k}={_shown(v)}" for k, v in zip(others, rest, strict=True))
        ax.errorbar(
            [x for x, _ in points],
            [s.mean for _, s in points],
            yerr=[0.0 if s.n < 2 else s.std for _, s in points],
            fmt="o" if scatter else "o-",
            capsize=4,
            label=label[:60] if label else None,
        )
    xs = [g.params[param] for g in groups]
    if all(x > 0 for x in xs) and max(xs) / min(xs) >= 100:
        ax.set_xscale("log")
    else:  # plain numbers on the axis, not an offset such as "+1e-3" that the reader must add
        ax.ticklabel_format(axis="x", style="plain", useOffset=False)
    ax.ticklabel_format(axis="y", style="plain", useOffset=False)
    ax.set_xlabel(param)
    ax.set_ylabel(metric)
    each = "one point per config" if scatter else "mean ± std over seeds"
    ax.set_title(f"{metric} vs {param} ({each})", fontsize=10)
    if len(series) > 1:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_params(table: Table, out_dir: Path) -> list[Path]:
    """Each metric against each numeric config key that differs between groups (param_figure)."""
    written = []
    groups = [g for g in table.groups if g.published is None]  # published rows have no config
    for param in table.keys:
        xs = [g.params[param] for g in groups]
        if not all(_numeric(x) for x in xs) or len(set(xs)) < 2:
            continue
        others = [k for k in table.keys if k != param]
        for metric in table.metrics:
            path = out_dir / f"{_slug(metric)}__{_slug(param)}.png"
            param_figure(groups, param, others, metric).savefig(path, dpi=DPI)
            written.append(path)
    return written


def plot_optuna(sweep_dir: Path, out_dir: Path) -> list[Path]:
    """Optimization history and parameter importances of every Optuna study stored below sweep_dir."""
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as optuna_plots

    written = []
    for file in find_storage_files(sweep_dir):
        storage = open_storage_file(file)
        for name in optuna.get_all_study_names(storage):
            study = optuna.load_study(study_name=name, storage=storage)
            completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            n_params = len({p for trial in completed for p in trial.params})
            objectives = study.metric_names or [f"objective {i}" for i in range(len(study.directions))]
            for i, objective in enumerate(objectives):
                # One objective: optuna draws the best-so-far line itself; several need a target.
                target = None if len(objectives) == 1 else (lambda t, i=i: t.values[i])
                plots = [("history", optuna_plots.plot_optimization_history)]
                if len(completed) < 2:
                    print(f"{file} study {name}: no importances ({len(completed)} completed trials, need 2)")
                elif n_params < 2:
                    print(f"{file} study {name}: no importances ({n_params} parameter: nothing to compare)")
                else:
                    plots.append(("importances", optuna_plots.plot_param_importances))
                for kind, plot in plots:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                        ax = plot(study, target=target, target_name=objective)
                    fig = ax.figure
                    fig.set_size_inches(*FIGSIZE_IN)
                    fig.tight_layout()
                    path = out_dir / f"optuna_{_slug(name)}_{kind}_{_slug(objective)}.png"
                    fig.savefig(path, dpi=DPI)
                    plt.close(fig)
                    written.append(path)
    return written


CURVES_FILE = "curves.json"  # written by the sweeper in each sweep dir (slotsweep.sweeps.curves)


def _mean_curve(seeds: dict[str, list[list[Any]]]) -> list[tuple[int, float]]:
    """(step, mean over the seeds that reached it) of a trial's seed curves ([step, value, ...])."""
    at: dict[int, list[float]] = defaultdict(list)
    for curve in seeds.values():
        for step, value, *_ in curve:
            if _numeric(value):
                at[int(step)].append(value)
    return [(step, sum(values) / len(values)) for step, values in sorted(at.items())]


def plot_curves(sweep_dir: Path, out_dir: Path) -> list[Path]:
    """Each curves.json below sweep_dir: a trial's seed-mean value against its device-hours.

    A trial's device-hours at a step are its total spread over its steps in proportion (its cost
    is measured per job, not per step); completed trials in colour, the others grey.
    """
    written = []
    for file in sorted(Path(sweep_dir).rglob(CURVES_FILE)):
        curves = json.loads(file.read_text())
        fig = Figure(figsize=FIGSIZE_IN)
        ax = fig.add_subplot()
        for trial in curves["trials"]:
            mean = _mean_curve(trial["seeds"])
            if not mean:
                continue
            last = max(step for step, _ in mean)
            hours = [trial["device_hours"] * step / last for step, _ in mean]
            done = trial["state"] == "COMPLETE"
            ax.plot(
                hours,
                [value for _, value in mean],
                color=None if done else "0.75",
                linewidth=1.5 if done else 0.8,
                label=f"trial {trial['number']}" if done else None,
                zorder=2 if done else 1,
            )
        ax.set_xlabel("device-hours of the trial")
        ax.set_ylabel(f"{curves['objective']} (seed mean)")
        ax.set_title(f"{curves['study']}: learning curves (grey: not completed)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
        fig.tight_layout()
        path = out_dir / f"curves_{_slug(curves['study'])}.png"
        fig.savefig(path, dpi=DPI)
        written.append(path)
    return written

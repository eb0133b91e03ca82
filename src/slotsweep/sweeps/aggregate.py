"""Seed aggregation: is the best config better than seed noise?

Runs are read from their results.json (tracking.py), grouped by experiment id (the config without
the seed) or by config keys, and each metric is summarised over the completed seeds as
mean ± sample std and a Student-t 95% confidence interval. Failed and missing seeds are reported,
never averaged in. Sources:

- any directory holding run dirs (`runs/`, `runs/<exp_id>/`): every results.json below it;
- a Hydra multirun dir (it has `multirun.yaml`): the runs whose config that sweep produced, found
  under its `paths.runs_dir`; its `seed=` sweep gives the planned seeds;
- `wandb:<entity>/<project>`: the project's runs through the W&B API (needs network).

`python src/aggregate.py SOURCE [--by k1,k2] [--metrics m1,m2] [--best] [--out DIR]` prints the
Markdown table and writes table.md/.csv/.tex (tables.py) and PNG plots (plots.py); docs/wandb.md.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep
from hydra.errors import OverrideParseException
from omegaconf import OmegaConf
from scipy import stats

from slotsweep.errors import SlotsweepError
from slotsweep.sweeps.plots import plot_optuna, plot_params
from slotsweep.sweeps.tables import format_csv, format_latex, format_markdown
from slotsweep.tracking import NON_RESULT_KEYS, RESULTS_FILE

__all__ = ["Group", "Run", "Stat", "Table", "aggregate", "load_local", "load_wandb", "main", "seed_stat"]

DEFAULT_METRICS = ("val/video_fg_ari", "val/video_mbo")


@dataclass
class Run:
    """One seed of one experiment, as results.json (or W&B) describes it."""

    exp_id: str
    seed: int
    status: str  # "completed", "failed", or what W&B says ("running", ...)
    metrics: dict[str, float]  # final validation values
    best_metrics: dict[str, float]  # best over validations
    config: dict[str, Any]  # flattened resolved config: {"grouper.n_slots": 7, ...}
    error: str | None
    source: str  # results.json path or W&B run path, for messages


@dataclass
class Stat:
    """A metric over the completed seeds of a group; nan where undefined (std and CI need n >= 2)."""

    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1)
    ci_low: float  # Student-t 95% confidence interval of the mean
    ci_high: float


@dataclass
class Group:
    label: str
    params: dict[str, Any]  # the config keys that differ between groups -> this group's values
    runs: list[Run]
    stats: dict[str, Stat] = field(default_factory=dict)
    missing: dict[int, str] = field(default_factory=dict)  # seed -> why ("failed", "absent", ...)

    @property
    def seeds(self) -> list[int]:
        return sorted(run.seed for run in self.runs if run.status == "completed")


@dataclass
class Table:
    keys: list[str]
    metrics: list[str]
    groups: list[Group]
    best: dict[str, str]  # metric -> label of the best group
    notes: list[str]  # failed runs' errors, NaN values: printed under the table


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _is_result_key(key: str) -> bool:
    return not any(key == skip or key.startswith(f"{skip}.") for skip in NON_RESULT_KEYS)


def _run_from_results(results: dict[str, Any], source: str) -> Run:
    return Run(
        exp_id=results["exp_id"],
        seed=int(results["seed"]),
        status=results["status"],
        metrics=results.get("metrics") or {},
        best_metrics=results.get("best_metrics") or {},
        config=flatten(results.get("config") or {}),
        error=results.get("error"),
        source=source,
    )


def _read_runs(directories: list[Path]) -> list[Run]:
    paths = {path.resolve() for d in directories if d.is_dir() for path in d.rglob(RESULTS_FILE)}
    return [_run_from_results(json.loads(path.read_text()), str(path)) for path in sorted(paths)]


def load_local(source: Path) -> tuple[list[Run], list[int]]:
    """Runs below `source` and the seeds the sweep planned ([] when unknown).

    A Hydra multirun dir holds no results itself: its `multirun.yaml` says which configs it ran,
    and those runs are looked up under its `paths.runs_dir`.
    """
    if not source.is_dir():
        raise FileNotFoundError(
            f"{source} is not a directory; pass a runs dir, a multirun dir or wandb:<entity>/<project>"
        )
    if not (source / "multirun.yaml").is_file():
        return _read_runs([source]), []
    config = OmegaConf.load(source / "multirun.yaml")
    runs_dir = _runs_dir_of_sweep(config, source)
    hydra = config.pop("hydra")
    reference = flatten(OmegaConf.to_container(config, resolve=True))
    allowed, free, planned = _sweep_space(hydra)
    runs = [run for run in _read_runs([source, runs_dir]) if _in_sweep(run.config, reference, allowed, free)]
    return runs, planned


def _runs_dir_of_sweep(config: Any, sweep_dir: Path) -> Path:
    """The runs dir the sweep wrote to: as many levels above sweep_dir as `hydra.sweep.dir` is below
    `paths.runs_dir` (runs/multirun/<time>, runs/sweeps/<sweep>/<exp_name>). Re-resolving
    paths.runs_dir alone would use this shell's env variables and working directory."""
    pattern = OmegaConf.to_container(config.hydra.sweep, resolve=False)["dir"]  # ${now:} needs Hydra
    runs_dir = Path(config.paths.runs_dir)
    prefix = "${paths.runs_dir}/"
    if pattern.startswith(prefix):
        depth = len(Path(pattern.removeprefix(prefix)).parts)
    elif Path(pattern).is_relative_to(runs_dir):  # a literal dir, e.g. hydra.sweep.dir=runs/sweeps/mine
        depth = len(Path(pattern).relative_to(runs_dir).parts)
    else:  # the sweep dir was set outside the runs dir
        return runs_dir
    return sweep_dir.resolve().parents[depth - 1]


def _sweep_space(hydra: Any) -> tuple[dict[str, list[Any]], list[str], list[int]]:
    """From multirun.yaml's hydra node: {swept key: values}, free key prefixes, planned seeds."""
    parser = OverridesParser.create()
    groups = set(hydra.runtime.choices)
    # Sweeper `params` (the basic sweeper's and Optuna's search space) sweep like CLI overrides.
    params = [f"{key}={value}" for key, value in (hydra.sweeper.get("params") or {}).items()]
    allowed: dict[str, list[Any]] = {}
    free: list[str] = []
    for text in [*hydra.overrides.task, *params]:
        try:
            override = parser.parse_override(text)
        except OverrideParseException:  # a sweeper's own search-space syntax: any value belongs
            free.append(text.split("=", 1)[0])
            continue
        key = override.key_or_group
        if not override.is_sweep_override():
            continue
        if key in groups or isinstance(override.value(), IntervalSweep):
            free.append(key)  # a swept group changes every key below it; an interval has no list
        else:
            allowed[key] = list(override.sweep_iterator())
    # The Optuna sweeper runs every trial with each of `hydra.sweeper.seeds`.
    seeds = allowed.pop("seed", None) or hydra.sweeper.get("seeds") or []
    return allowed, free, sorted(int(seed) for seed in seeds)


def _in_sweep(config: dict[str, Any], reference: dict[str, Any], allowed: dict, free: list[str]) -> bool:
    for key in set(config) | set(reference):
        if not _is_result_key(key) or any(key == f or key.startswith(f"{f}.") for f in free):
            continue
        if key in allowed:
            if config.get(key) not in allowed[key]:
                return False
        elif config.get(key) != reference.get(key):
            return False
    return True


def load_wandb(project: str) -> list[Run]:
    """Runs of a W&B project (`entity/project`) with the fields results.json would hold."""
    import wandb

    runs = []
    for run in wandb.Api().runs(project):
        summary = dict(run.summary)
        # define_best_summaries stores {"max": .., "last": ..}; other runs keep plain numbers.
        final = {k: v["last"] if isinstance(v, dict) else v for k, v in summary.items() if _number(v, "last")}
        best = {k: v["max"] for k, v in summary.items() if isinstance(v, dict) and _number(v, "max")}
        state = {"finished": "completed", "crashed": "failed", "failed": "failed"}.get(run.state, run.state)
        runs.append(
            Run(
                exp_id=run.group or run.id,
                seed=int(run.config.get("seed", -1)),
                status=state,
                metrics=final,
                best_metrics=best,
                config=flatten(dict(run.config)),
                error=None if state == "completed" else f"W&B state {run.state}",
                source=f"wandb:{project}/{run.id}",
            )
        )
    return runs


def _number(value: Any, part: str) -> bool:
    value = value.get(part) if isinstance(value, dict) else value
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def seed_stat(values: list[float]) -> Stat:
    """Mean, sample std (ddof=1) and Student-t 95% CI of the mean over seeds."""
    n = len(values)
    if n == 0:
        return Stat(0, math.nan, math.nan, math.nan, math.nan)
    mean = math.fsum(values) / n
    if n == 1:
        return Stat(1, mean, math.nan, math.nan, math.nan)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
    return Stat(n, mean, std, mean - half, mean + half)


def _higher_is_better(metric: str) -> bool:
    return "loss" not in metric  # ARI and mBO; losses (train/loss, val/...) are minimised


def _sort_key(value: Any) -> tuple:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return (0, value, "") if numeric else (1, 0, str(value))


def aggregate(
    runs: list[Run],
    metrics: list[str] | tuple[str, ...] = DEFAULT_METRICS,
    by: list[str] | None = None,
    planned_seeds: list[int] | None = None,
    use_best: bool = False,
) -> Table:
    """Group runs (by exp_id, or by the values of the config keys `by`) and summarise each metric.

    A seed counts for a group when its run completed; planned seeds (the sweep's, and every seed
    seen in any group) that a group lacks are reported as missing with the reason.
    """
    if not runs:
        raise SlotsweepError("no runs to aggregate (no results.json found)")
    for metric in metrics:
        if not any(metric in (run.best_metrics if use_best else run.metrics) for run in runs):
            known = sorted({k for run in runs for k in run.metrics})
            raise SlotsweepError(f"--metrics {metric}: no run has it; the runs have {known}")
    notes: list[str] = []
    buckets: dict[tuple, list[Run]] = defaultdict(list)
    seen: dict[tuple[str, int], Run] = {}
    # A seed found twice (a copied run dir, one set aside by force=true) counts once: the one in
    # its own <exp_id>/seed<k>/ dir.
    for run in sorted(runs, key=lambda r: (Path(r.source).parent.name != f"seed{r.seed}", r.source)):
        first = seen.setdefault((run.exp_id, run.seed), run)
        if first is not run:
            notes.append(
                f"{run.exp_id} seed {run.seed}: also in {run.source}, left out (counted {first.source})"
            )
            continue
        buckets[_group_key(run, by)].append(run)
    keys = list(by) if by else _differing_keys(buckets)
    groups = [
        Group(
            label=key[0] if not by else ", ".join(f"{k}={v}" for k, v in zip(by, key, strict=True)),
            params={k: members[0].config.get(k) for k in keys},
            runs=members,
        )
        for key, members in buckets.items()
    ]
    groups.sort(key=lambda g: ([_sort_key(g.params[k]) for k in keys], g.label))
    planned = set(planned_seeds or ()) | {run.seed for run in runs}
    for group in groups:
        for run in group.runs:
            if run.status != "completed":
                group.missing[run.seed] = run.status
                error = (run.error or "").strip().splitlines()
                notes.append(
                    f"{group.label} seed {run.seed}: {run.status}" + (f": {error[0]}" if error else "")
                )
        present = {run.seed for run in group.runs}
        group.missing.update({seed: "absent" for seed in sorted(planned - present)})
        for metric in metrics:
            values = []
            for run in (r for r in group.runs if r.status == "completed"):
                value = (run.best_metrics if use_best else run.metrics).get(metric)
                if value is None or not math.isfinite(value):
                    notes.append(f"{group.label} seed {run.seed}: {metric} is {value}, left out")
                else:
                    values.append(float(value))
            group.stats[metric] = seed_stat(values)
    best = {}
    for metric in metrics:
        scored = [g for g in groups if g.stats[metric].n > 0]
        sign = 1 if _higher_is_better(metric) else -1
        if scored:
            best[metric] = max(scored, key=lambda g: sign * g.stats[metric].mean).label
    return Table(keys=keys, metrics=list(metrics), groups=groups, best=best, notes=notes)


def _group_key(run: Run, by: list[str] | None) -> tuple:
    if not by:
        return (run.exp_id,)
    for key in by:
        if key not in run.config:
            close = difflib.get_close_matches(key, list(run.config), n=3)
            raise SlotsweepError(f"--by {key}: not a config key of {run.source}; close keys: {close}")
    return tuple(_hashable(run.config[key]) for key in by)


def _hashable(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _differing_keys(buckets: dict[tuple, list[Run]]) -> list[str]:
    """Config keys (results-relevant, seed left out) whose values differ between groups."""
    configs = [members[0].config for members in buckets.values()]
    keys = sorted({k for config in configs for k in config if _is_result_key(k)})
    return [k for k in keys if len({json.dumps(c.get(k), default=str) for c in configs}) > 1]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="aggregate.py", description="Mean ± std over seeds of each experiment, as tables and plots."
    )
    parser.add_argument("source", help="runs dir, Hydra multirun dir, or wandb:<entity>/<project>")
    parser.add_argument("--by", help="group by these config keys (comma-separated) instead of exp_id")
    parser.add_argument("--metrics", default=",".join(DEFAULT_METRICS), help="comma-separated metric keys")
    parser.add_argument(
        "--best", action="store_true", help="each run's best validation value, not its final one"
    )
    parser.add_argument(
        "--out", type=Path, help="output dir (default: <source>/aggregate or ./aggregate/<project>)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    matplotlib.use("Agg")  # files only: cluster login nodes have no display
    args = _parse_args(argv)
    try:
        if args.source.startswith("wandb:"):
            project = args.source.removeprefix("wandb:")
            runs, planned = load_wandb(project), []
            out = args.out or Path("aggregate") / project.replace("/", "_")
        else:
            source = Path(args.source)
            runs, planned = load_local(source)
            out = args.out or source / "aggregate"
        by = [k for k in args.by.split(",") if k] if args.by else None
        metrics = [m for m in args.metrics.split(",") if m]
        table = aggregate(runs, metrics, by=by, planned_seeds=planned, use_best=args.best)
    except (SlotsweepError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    (out / "plots").mkdir(parents=True, exist_ok=True)
    markdown = format_markdown(table)
    (out / "table.md").write_text(markdown)
    (out / "table.csv").write_text(format_csv(table))
    (out / "table.tex").write_text(format_latex(table))
    print(markdown)
    plots = plot_params(table, out / "plots")
    if not args.source.startswith("wandb:"):
        plots += plot_optuna(Path(args.source), out / "plots")
    print(f"wrote {out}/table.md, table.csv, table.tex and {len(plots)} plots in {out}/plots")
    return 0

"""The sweep's summary: optimization_results.yaml in the sweep dir, and the same as a printed table.

Per trial: state, value (± std over seeds), the rung it reached (asha), the seeds it ran, steps
trained and device-hours (from the jobs' results.json, slotsweep.training.cost); the totals and
the forecast of the same sweep unpruned; whether `hydra.sweeper.budget_hours` stopped the search;
the best trial (or the Pareto front); and the confirmation ranking when there was one.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf
from optuna.trial import TrialState

from slotsweep.runs.pool_queue import PoolQueue

if TYPE_CHECKING:
    import optuna

__all__ = ["RESULTS_FILE", "format_table", "summarize"]

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"


def _trial_row(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    value = trial.values if trial.values is None or len(trial.values) > 1 else trial.values[0]
    if trial.state == TrialState.PRUNED and trial.intermediate_values:  # its last reported value
        value = trial.intermediate_values[max(trial.intermediate_values)]
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": value,
        "std": trial.user_attrs.get("std"),
        "rung": trial.user_attrs.get("rung"),  # asha: the last rung it trained to (0-based)
        "seeds": sum(job.get("run_dir") is not None for job in trial.user_attrs.get("jobs", [])),
        "steps": trial.user_attrs.get("steps", 0),
        "device_hours": trial.user_attrs.get("device_seconds", 0.0) / 3600,
        "pools": _pools(trial),
        "params": trial.params,
    }


def _pools(trial: optuna.trial.FrozenTrial) -> list[str] | None:
    """`<pool>@<step>` per seed of a pooled trial (hydra.sweeper.pool_size > 1): the pool that
    trained it and the stream step it joined at ("?" before its pool accepted it); None unpooled."""
    jobs = [job for job in trial.user_attrs.get("jobs", []) if job.get("ticket") is not None]
    if not jobs:
        return None
    pools = []
    for job in jobs:
        record = PoolQueue(Path(job["pool_dir"])).accepted(job["ticket"]) or {}
        pools.append(f"{Path(job['pool_dir']).name}@{record.get('start_step', '?')}")
    return pools


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, list):
        return ", ".join(_fmt(v) for v in x)
    return "nan" if math.isnan(x) else f"{x:.4g}"


def format_table(summary: dict[str, Any]) -> str:
    """Markdown table of the trials (with the pool@step of each seed in a pooled sweep), totals,
    budget line, and the confirmation ranking."""
    pooled = any(row.get("pools") for row in summary["trials"])
    header = "| trial | state | value | std | rung | seeds | steps | device-h |"
    lines = [
        header + (" pool@step |" if pooled else ""),
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |" + (" --- |" if pooled else ""),
    ]
    for row in summary["trials"]:
        rung = "-" if row["rung"] is None else row["rung"]
        pools = f" {', '.join(row.get('pools') or ['-'])} |" if pooled else ""
        lines.append(
            f"| {row['number']} | {row['state']} | {_fmt(row['value'])} | {_fmt(row['std'])} | {rung} "
            f"| {row['seeds']} | {row['steps']} | {row['device_hours']:.4f} |{pools}"
        )
    total = summary["total"]
    lines.append(
        f"| total | {total['trials']} trials | | | | | {total['steps']} | {total['device_hours']:.4f} |"
        + (" |" if pooled else "")
    )
    lines.append("")
    lines.append(summary["budget"]["note"])
    forecast = summary.get("unpruned_forecast")
    if forecast:
        lines.append(
            f"unpruned, the same trials would take {forecast['steps']} steps, "
            f"~{forecast['device_hours']:.4f} device-hours at this sweep's cost per step: this sweep "
            f"used {forecast['fraction']:.0%} of it"
        )
    confirmed = summary.get("confirmation")
    if confirmed:
        lines += [
            "",
            "Confirmation (all seeds):",
            "| rank | trial | mean ± std | seeds |",
            "| ---: | ---: | --- | --- |",
        ]
        for i, row in enumerate(confirmed["ranking"], 1):
            seeds = ", ".join(f"{s}: {v:.4g}" for s, v in sorted(row["seeds"].items()))
            lines.append(f"| {i} | {row['trial']} | {_fmt(row['mean'])} ± {_fmt(row['std'])} | {seeds} |")
        lines += ["", confirmed["verdict"]]
    return "\n".join(lines)


def summarize(
    study: optuna.Study,
    sweep_dir: Path,
    dashboard: str,
    directions: list[str],
    budget_hours: float | None,
    stopped: str | None,
    confirmation: dict[str, Any] | None = None,
    unpruned_steps: int | None = None,
) -> dict[str, Any]:
    """Write optimization_results.yaml, log its table and the best trial(s); return the summary.

    Args:
        unpruned_steps: the training steps of the sweep's trials, each seed to the end (the forecast's
            base; None: no forecast).
    """
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    rows = [_trial_row(t) for t in trials if t.state.is_finished()]
    spent = sum(row["device_hours"] for row in rows)
    if stopped == "budget":
        note = (
            f"budget: hydra.sweeper.budget_hours={budget_hours} spent ({spent:.4f} device-hours) after "
            f"{len(rows)} trials: the search stopped early"
        )
    elif budget_hours is not None:
        note = f"budget: {spent:.4f} of hydra.sweeper.budget_hours={budget_hours} device-hours spent"
    else:
        note = f"budget: none set; {spent:.4f} device-hours spent"
    summary: dict[str, Any] = {
        "name": "optuna",
        "study_name": study.study_name,
        "storage": dashboard,
        "directions": directions,
        "n_complete": states.count(TrialState.COMPLETE),
        "n_pruned": states.count(TrialState.PRUNED),
        "n_failed": states.count(TrialState.FAIL),
        "trials": rows,
        "total": {"trials": len(rows), "steps": sum(row["steps"] for row in rows), "device_hours": spent},
        "budget": {
            "hours": budget_hours,
            "spent_hours": spent,
            "stopped_early": stopped == "budget",
            "note": note,
        },
    }
    steps = summary["total"]["steps"]
    if unpruned_steps and steps:  # the sweep's own cost per step, spent on every step of every trial
        hours = spent * unpruned_steps / steps
        summary["unpruned_forecast"] = {
            "steps": unpruned_steps,
            "device_hours": hours,
            "fraction": spent / hours if hours else None,
        }
    if summary["n_complete"] == 0:
        log.warning(f"No trial of study '{study.study_name}' completed")
    elif len(directions) == 1:
        best = study.best_trial
        summary.update(best_trial=best.number, best_params=best.params, best_value=best.value)
        if "std" in best.user_attrs:
            summary["best_value_std"] = best.user_attrs["std"]
        log.info(f"Best trial {best.number}: value {best.value}, params {best.params}")
    else:
        summary["best_trials"] = [
            {"number": t.number, "params": t.params, "values": t.values} for t in study.best_trials
        ]
        for t in study.best_trials:
            log.info(f"Pareto-optimal trial {t.number}: values {t.values}, params {t.params}")
    if confirmation is not None:
        summary["confirmation"] = confirmation
    OmegaConf.save(OmegaConf.create(summary), sweep_dir / RESULTS_FILE)
    log.info(f"Sweep summary:\n{format_table(summary)}")
    log.info(f"Results: {sweep_dir / RESULTS_FILE}; browse the study with: optuna-dashboard {dashboard}")
    return summary

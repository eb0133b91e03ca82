"""Every sweep's learning curves, kept in the sweep dir: curves.json.

One entry per trial: its state, params, steps and device-hours (the summary's), and per seed the
objective at each validation step with the run's device-seconds by then (null where the job did
not report them), read from the run dirs' validation.jsonl
(slotsweep.runs.trial_files). Confirmation seeds are included. Compact (no per-step metadata), so a
sweep's curves can be kept, compared offline (benchmarks/bench_sweeps_replay.py) and plotted
(`aggregate.py`: value against device-hours, pruned trials grey).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slotsweep.runs.trial_files import read_report_lines
from slotsweep.sweeps import confirmation
from slotsweep.sweeps.trial_jobs import JOBS_ATTR

if TYPE_CHECKING:
    import optuna

__all__ = ["CURVES_FILE", "write_curves"]

CURVES_FILE = "curves.json"


def _seed_curves(attrs: list[dict[str, Any]]) -> dict[str, list[list[float | None]]]:
    """{seed: [[step, value of the first objective, device-seconds], ...]} of the jobs' run dirs."""
    curves = {}
    for job in attrs:
        if job.get("run_dir") is None:  # a task without run dirs reports nothing
            continue
        reports = read_report_lines(Path(job["run_dir"]))
        curves[str(job["seed"])] = [
            [step, entry["values"][0], entry.get("device_seconds")] for step, entry in sorted(reports.items())
        ]
    return curves


def write_curves(study: optuna.Study, sweep_dir: Path) -> Path:
    """Write <sweep_dir>/curves.json; return its path."""
    trials = []
    for trial in study.get_trials(deepcopy=False):
        seeds = _seed_curves(trial.user_attrs.get(JOBS_ATTR, []))
        seeds.update(_seed_curves(confirmation.stored_jobs(study, trial.number)))
        trials.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "params": trial.params,
                "steps": trial.user_attrs.get("steps", 0),
                "device_hours": trial.user_attrs.get("device_seconds", 0.0) / 3600,
                "seeds": seeds,
            }
        )
    curves = {
        "study": study.study_name,
        "objective": study.metric_names[0] if study.metric_names else "objective",
        "direction": study.directions[0].name.lower(),
        "trials": trials,
    }
    path = Path(sweep_dir) / CURVES_FILE
    path.write_text(json.dumps(curves, separators=(",", ":")))
    return path

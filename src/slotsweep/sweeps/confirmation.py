"""Confirmation seeds: the best trials of a search, run again on extra seeds and compared paired.

A search on few seeds picks its winner partly by seed luck. `hydra.sweeper.confirm.top_k` trials
run on `hydra.sweeper.confirm.seeds` after the search (seeds they ran already are skipped); each is
then ranked by its mean over all its seeds, and the best is compared with every other by a paired
t-test on the seeds both ran (the same seed is the same data order and init: pairing removes that
shared noise). The jobs and values live in study user attrs (a finished trial's own attrs are
frozen), so a relaunch finds them.
"""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING, Any

from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    import optuna

    from slotsweep.sweeps.trial_jobs import TrialJobs

__all__ = ["rank", "store_jobs", "store_values", "stored_jobs", "top_trials"]

SIGNIFICANCE = 0.05  # p below this: "beyond seed noise"


def top_trials(study: optuna.Study, k: int) -> list[FrozenTrial]:
    """The k best completed trials, best first."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    maximize = study.direction == StudyDirection.MAXIMIZE
    return sorted(complete, key=lambda t: t.value, reverse=maximize)[:k]


def stored_jobs(study: optuna.Study, number: int) -> list[dict[str, Any]]:
    return study.user_attrs.get(f"confirm_jobs_{number}", [])


def store_jobs(study: optuna.Study, number: int, attrs: list[dict[str, Any]]) -> None:
    study.set_user_attr(f"confirm_jobs_{number}", attrs)


def store_values(study: optuna.Study, trial_jobs: TrialJobs) -> None:
    """{seed: value} of the trial's confirmation jobs; a failed job's value is null."""
    values = {
        str(job.seed): job.outcome[0] if isinstance(job.outcome, tuple) else None for job in trial_jobs.jobs
    }
    study.set_user_attr(f"confirm_values_{trial_jobs.number}", values)


def _seed_values(
    study: optuna.Study, trial: FrozenTrial, search_seeds: list[int | None], config_seed: int | None
) -> dict[int, float]:
    """{seed: value} over the search's and the confirmation's seeds; failed or NaN seeds left out."""
    if search_seeds == [None]:
        values = {config_seed: trial.value} if config_seed is not None else {}
    else:
        values = {seed: trial.user_attrs.get(f"seed{seed}") for seed in search_seeds}
    confirmed = study.user_attrs.get(f"confirm_values_{trial.number}", {})
    values.update({int(seed): value for seed, value in confirmed.items()})
    return {s: float(v) for s, v in values.items() if v is not None and not math.isnan(v)}


def rank(
    study: optuna.Study, top: list[FrozenTrial], search_seeds: list[int | None], config_seed: int | None
) -> dict[str, Any]:
    """The confirmed trials ranked by their mean over all seeds, the paired tests, and a verdict."""
    from scipy.stats import ttest_rel

    maximize = study.direction == StudyDirection.MAXIMIZE
    rows = []
    for trial in top:
        values = _seed_values(study, trial, search_seeds, config_seed)
        mean = statistics.fmean(values.values()) if values else math.nan
        std = statistics.stdev(values.values()) if len(values) > 1 else math.nan
        rows.append(
            {"trial": trial.number, "params": trial.params, "seeds": values, "mean": mean, "std": std}
        )
    rows.sort(key=lambda r: (math.isnan(r["mean"]), -r["mean"] if maximize else r["mean"]))  # NaN last
    best, tests = rows[0], []
    for other in rows[1:]:
        shared = sorted(set(best["seeds"]) & set(other["seeds"]))
        a, b = [best["seeds"][s] for s in shared], [other["seeds"][s] for s in shared]
        # ttest_rel of identical pairs is NaN (no variance); fewer than 2 pairs cannot be tested
        p = float(ttest_rel(a, b).pvalue) if len(shared) > 1 else math.nan
        tests.append({"best": best["trial"], "other": other["trial"], "shared_seeds": shared, "p_value": p})
    return {"ranking": rows, "paired_tests": tests, "verdict": _verdict(rows, tests)}


def _verdict(rows: list[dict[str, Any]], tests: list[dict[str, Any]]) -> str:
    if not tests:
        return f"only trial {rows[0]['trial']} was confirmed: nothing to compare it with"
    best, runner_up, test = rows[0], rows[1], tests[0]
    n, p = len(test["shared_seeds"]), test["p_value"]
    if math.isnan(p):
        return (
            f"trial {best['trial']} ranks first, but it cannot be tested against trial "
            f"{runner_up['trial']} on {n} shared seed(s): add seeds to hydra.sweeper.confirm.seeds"
        )
    if p < SIGNIFICANCE:
        return (
            f"trial {best['trial']} beats the runner-up, trial {runner_up['trial']}, beyond seed noise "
            f"(paired t-test on {n} seeds, p={p:.3g} < {SIGNIFICANCE})"
        )
    return (
        f"trial {best['trial']} is NOT better than the runner-up, trial {runner_up['trial']}, beyond "
        f"seed noise (paired t-test on {n} seeds, p={p:.3g} >= {SIGNIFICANCE}): treat them as tied, or "
        "confirm on more seeds"
    )

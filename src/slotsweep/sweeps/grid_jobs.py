"""A Hydra grid on SLURM, followed job by job: one line as each job ends, then a summary.

hydra-submitit-launcher waits for a grid's job array with submitit's `results()`, which asks
`sacct` for the jobs' states every few seconds. A cluster without accounting (the one-node test
cluster, many small clusters) fails every such call, and submitit logs each failure ("Bypassing
sacct error ..."), while the user sees no result until all jobs end. `follow_jobs` waits first,
with `squeue` and the jobs' result files (as the Optuna sweeper's SlurmJobs does), and prints what
each job returned as it ends; submitit's wait that follows finds every result file at once.
"""

import logging
import time
from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn, JobStatus

from slotsweep.errors import SlotsweepError
from slotsweep.sweeps.jobs import squeue_states

__all__ = ["describe_job", "follow_jobs"]

log = logging.getLogger(__name__)
POLL_S = 5.0  # seconds between two looks at squeue and the result files


def describe_job(job: Any) -> tuple[str, str]:
    """(state, what it returned) of an ended submitit job: ("completed", "0.4123"), ("failed",
    "<error>"), or ("lost", where its log is) when it ended without a result file."""
    from submitit.core.utils import pickle_load

    if not job.paths.result_pickle.exists():
        return "lost", f"no result (cancelled, killed or out of memory); log: {job.paths.stderr}"
    outcome, value = pickle_load(job.paths.result_pickle)
    if outcome != "success":  # submitit's own failure: value is the traceback
        return "failed", str(value).strip().splitlines()[-1]
    assert isinstance(value, JobReturn)
    if value.status != JobStatus.COMPLETED:
        error = value._return_value  # return_value would re-raise it here
        return "failed", f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    returned = value._return_value  # the objective(s) train.py returns
    values = returned if isinstance(returned, tuple | list) else (returned,)
    return "completed", ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in values)


def follow_jobs(jobs: Sequence[Any], overrides: Sequence[Sequence[str]], first_index: int) -> None:
    """Wait until every job of a grid has ended; log one line per job as it ends, then a summary.

    Args:
        jobs: submitit jobs, in the order of `overrides` (job `first_index + i` ran `overrides[i]`).
    Raises:
        SlotsweepError: some job ended without a result file (submitit would wait for it forever
            on a cluster without sacct); the others' results are in their run dirs.
    """
    common = set.intersection(*(set(o) for o in overrides)) if overrides else set()
    waiting = {str(job.job_id): i for i, job in enumerate(jobs)}
    states: dict[str, int] = {}
    while waiting:
        listed = squeue_states(list(waiting))
        for job_id, i in list(waiting.items()):
            job = jobs[i]
            if job_id in listed and not job.paths.result_pickle.exists():
                continue  # a job that wrote its result is done even while squeue shows it completing
            del waiting[job_id]
            state, what = describe_job(job)
            states[state] = states.get(state, 0) + 1
            own = " ".join(o for o in overrides[i] if o not in common)  # what this job sweeps
            log.info(f"job #{first_index + i} ({job_id}) {state}: {what} [{own}]")
        if waiting:
            time.sleep(POLL_S)
    counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    log.info(f"grid: {len(jobs)} SLURM jobs ended: {counts}")
    if states.get("lost"):
        raise SlotsweepError(
            f"hydra.launcher: {states['lost']} of {len(jobs)} SLURM jobs ended without a result "
            "(see their lines above); the others' results are in their run dirs"
        )

"""The jobs of one trial while it is in flight: one per seed, with what they have reported.

A `TrialJobs` is what the scheduler in optuna_sweeper.py holds for each running trial. Its jobs'
ids and run dirs are stored (trial user attr `jobs`) the moment they are submitted, so a relaunched
sweeper rebuilds the same object from the study and adopts the jobs instead of starting twins.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from slotsweep.runs import experiment
from slotsweep.runs.pool_queue import PoolQueue
from slotsweep.runs.trial_files import read_reports, reported_cost, request_stop, stop_requested
from slotsweep.sweeps.jobs import Jobs
from slotsweep.sweeps.pools import Pools

if TYPE_CHECKING:
    import optuna

__all__ = ["JOBS_ATTR", "SeedJob", "TrialJobs", "spent_hours"]

log = logging.getLogger(__name__)

JOBS_ATTR = "jobs"  # trial user attr: [{seed, job_id, kind, run_dir}], written at each submission


@dataclass
class SeedJob:
    """One seed's job, or one seed's head in a trial pool (`ticket` set: sweeps/pools.py).
    `outcome`, once it ended: the task's values, or why it has none."""

    seed: int | None
    overrides: list[str]
    run_dir: Path | None  # None for a task without slotsweep run dirs (no reports, no cost)
    job_id: str | None = None  # a pooled head's: its pool's job
    kind: str | None = None  # the backend that started it: "slurm" or "local"
    state: str = "pending"  # as the backend last said: pending, running or ended
    outcome: tuple[float, ...] | str | None = None
    cancelled: bool = False  # by this sweeper (a pruned trial's late or pending job)
    # device-seconds its run dir held when it was submitted (the job's own count is the rest)
    previous_seconds: float = 0.0
    task_cfg: DictConfig | None = None  # its composed config (a pooled head's ticket); not stored
    ticket: str | None = None  # a pooled head's ticket in pool_dir (runs/pool_queue.py)
    pool_dir: Path | None = None

    @property
    def name(self) -> str:
        return "job" if self.seed is None else f"seed={self.seed}"

    def ended(self) -> bool:
        """Whether its outcome is in (a pool counts its open places by this)."""
        return self.outcome is not None

    def as_attr(self) -> dict[str, Any]:
        run_dir = None if self.run_dir is None else str(self.run_dir)
        attr = {"seed": self.seed, "job_id": self.job_id, "kind": self.kind, "run_dir": run_dir}
        if self.ticket is not None:
            attr |= {"ticket": self.ticket, "pool_dir": str(self.pool_dir)}
        return attr

    def adopt(self, stored: dict[str, Any]) -> None:
        """Take a stored job's ids (a relaunched sweeper follows it instead of starting a twin)."""
        self.job_id, self.kind = stored["job_id"], stored["kind"]
        if stored.get("ticket") is not None:
            self.ticket, self.pool_dir = stored["ticket"], Path(stored["pool_dir"])
            # the head's own (it may have joined at a later step), once its pool accepted it
            self.run_dir = None if stored.get("run_dir") is None else Path(stored["run_dir"])


@dataclass
class TrialJobs:
    """The jobs of trial `number`; `save(attrs)` stores their ids where a relaunch finds them, and
    `as_values` turns a job's return value into the objective's values (raising on a bad one)."""

    number: int
    jobs: list[SeedJob]
    save: Callable[[list[dict[str, Any]]], None]
    as_values: Callable[[Any], tuple[float, ...]]
    stop_requested_at: float | None = None  # set when the trial was pruned
    stop_reason: str = ""
    reported: dict[int, float] = field(default_factory=dict)  # {step: mean} told to the study
    pools: Pools | None = None  # hydra.sweeper.pool_size > 1: the seeds are heads of trial pools

    def launch(self, backend: Jobs) -> None:
        """Submit the jobs that have none (all of them, or those a killed sweeper had not submitted),
        or hand them to trial pools.

        A stored job of another backend (the sweep was relaunched with another launcher) cannot
        be followed: its seed is submitted again and resumes from the run dir's checkpoint.
        """
        for index, job in enumerate(self.jobs):
            if job.job_id is not None and job.kind == backend.kind:
                if self.pools is not None and job.ticket is not None:
                    self.pools.adopt(job.pool_dir, job.job_id, job.ticket, job.ended)
                continue
            job_num = 1000 * self.number + index
            if self.pools is not None:
                assert job.task_cfg is not None, "a pooled head is placed with its composed config"
                job.ticket = f"trial{self.number:05d}-seed{job.seed}"
                job.run_dir = None  # the head's run dir is known once its pool has accepted it
                job.pool_dir, job.job_id = self.pools.place(
                    job.ticket, job.task_cfg, job.overrides, job_num, job.ended
                )
            else:
                earlier = experiment.read_results(job.run_dir) if job.run_dir is not None else None
                job.previous_seconds = float((earlier or {}).get("device_seconds", 0.0))
                job.job_id = backend.submit(job.overrides, job_num)
            job.kind = backend.kind
            self.save([j.as_attr() for j in self.jobs])  # at once: a kill now must not lose the id

    def unended(self) -> list[SeedJob]:
        return [job for job in self.jobs if job.outcome is None]

    @property
    def ended(self) -> bool:
        return not self.unended()

    def collect(self, backend: Jobs, states: dict[str, str]) -> None:
        """Note each job's state; read the outcome of every job that has ended."""
        for job in self.unended():
            assert job.job_id is not None
            if job.ticket is not None:
                self._collect_head(job, backend, states[job.job_id])
                continue
            job.state = states[job.job_id]
            if job.state != "ended":
                continue
            self._count_from_outside(job, backend)
            if job.cancelled:  # killed by scancel/SIGTERM: no result is coming, do not wait for one
                job.outcome = "cancelled"
                continue
            try:
                job.outcome = self.as_values(backend.result(job.job_id).return_value)
            except Exception as error:  # the job's own exception, re-raised by JobReturn
                job.outcome = f"{type(error).__name__}: {error}"

    def _count_from_outside(self, job: SeedJob, backend: Jobs) -> None:
        """Where the OS measured an ended CPU job (a local job: its reaped process tree), that is
        its session's cost: its run dir's results.json gets it as device_seconds (the job's own
        count, which misses the launcher's wrapper and the exit after it wrote, is kept as
        device_seconds_by_job), so the trial, the budget and a later session of the run dir count
        every second once."""
        measured = backend.measured_cpu_seconds(job.job_id)
        if measured is None or job.run_dir is None:
            return
        results = experiment.read_results(job.run_dir)
        if results is None or results.get("device_kind") != "cpu":  # a GPU's cost is its wall time
            return
        own = float(results["device_seconds"])
        if job.previous_seconds + measured > own:
            results["device_seconds_by_job"] = own
            results["device_seconds"] = job.previous_seconds + measured
            experiment.write_results(job.run_dir, results)

    def _collect_head(self, job: SeedJob, backend: Jobs, pool_state: str) -> None:
        """A pooled head: its run dir once accepted, its outcome once its pool recorded one."""
        record = PoolQueue(job.pool_dir).accepted(job.ticket)
        if record is not None and record.get("run_dir") and job.run_dir is None:
            job.run_dir = Path(record["run_dir"])
            self.save([j.as_attr() for j in self.jobs])
        status = None if record is None else record.get("status")
        if status is not None:
            job.state = "ended"
            if status == "failed":
                job.outcome = str(record["error"])
                return
            try:
                job.outcome = self.as_values(record["objective"])
            except Exception as error:
                job.outcome = f"{type(error).__name__}: {error}"
        elif pool_state == "ended":  # the pool job ended without ending this head
            job.state = "ended"
            if job.cancelled:
                job.outcome = "cancelled"
                return
            try:
                backend.result(job.job_id)
                job.outcome = f"pool job {job.job_id} ended without training {job.ticket}"
            except Exception as error:  # the pool's own exception
                job.outcome = f"pool job {job.job_id}: {type(error).__name__}: {error}"
        else:
            job.state = "running" if record is not None else "pending"

    def new_intermediate_values(self) -> list[tuple[int, float]]:
        """(step, mean over the seeds that reached it) of steps not yet reported, in step order.

        A step is ready once every running seed has reached it: a seed that ended before it
        (failed, stopped) or has not started (queued behind others) is left out of its mean and
        does not hold the trial's pruning back. Each step is reported once.
        """
        reports = {i: read_reports(j.run_dir) for i, j in enumerate(self.jobs) if j.run_dir is not None}
        if len(reports) != len(self.jobs):
            return []
        ready_until = min(
            max(steps, default=-1) if self.jobs[i].state == "running" else math.inf
            for i, steps in reports.items()
        )
        steps = sorted(
            {s for steps in reports.values() for s in steps if s <= ready_until} - set(self.reported)
        )
        values = [(s, statistics.fmean(r[s][0] for r in reports.values() if s in r)) for s in steps]
        self.reported.update(values)
        return values

    def stop(self, backend: Jobs, reason: str, grace_s: float) -> None:
        """Ask the running jobs to stop at their next validation; cancel those still pending, and
        those that have not stopped `grace_s` after the first request."""
        now = time.monotonic()
        if self.stop_requested_at is None:
            self.stop_requested_at = now
            self.stop_reason = reason
            for job in self.unended():
                if job.run_dir is not None:
                    request_stop(job.run_dir, reason)
        late = now - self.stop_requested_at > grace_s
        for job in self.unended():
            if job.ticket is not None:  # a pooled head: never cancel the pool, its other heads train on
                self._stop_head(job)
                continue
            # A pending job cannot read the request, nor can a task without run dirs. Cancelled once:
            # a cancelled SLURM job stays listed (completing) for a while.
            if not job.cancelled and (late or job.state == "pending" or job.run_dir is None):
                log.warning(f"Trial {self.number}: cancelling job {job.job_id} ({job.state})")
                backend.cancel(job.job_id)
                job.cancelled = True

    def _stop_head(self, job: SeedJob) -> None:
        """Withdraw a head still waiting for its pool; ask an accepted one (which may have been
        accepted since the stop began) to stop at its next validation."""
        if job.run_dir is None:
            if not job.cancelled and PoolQueue(job.pool_dir).withdraw(job.ticket):
                log.info(f"Trial {self.number}: {job.ticket} withdrawn from pool {job.pool_dir.name}")
                job.cancelled, job.state, job.outcome = True, "ended", "cancelled"
        elif not stop_requested(job.run_dir):
            request_stop(job.run_dir, self.stop_reason)

    def current_seconds(self) -> float:
        """Device-seconds of the trial so far: each run dir's results.json, or a running job's cost
        at its last validation when that is more (the run dir's earlier sessions included)."""
        total = 0.0
        for job in self.jobs:
            if job.run_dir is None:
                continue
            results = experiment.read_results(job.run_dir) or {}
            total += max(float(results.get("device_seconds", 0.0)), reported_cost(job.run_dir))
        return total

    def cost(self) -> dict[str, Any]:
        """{device_seconds, steps, device_kind} summed over the seeds' results.json."""
        results = [experiment.read_results(j.run_dir) for j in self.jobs if j.run_dir is not None]
        results = [r for r in results if r is not None and "device_seconds" in r]
        kinds = sorted({r["device_kind"] for r in results})
        return {
            "device_seconds": sum(r["device_seconds"] for r in results),
            "steps": sum(r["steps"] for r in results),
            "device_kind": "+".join(kinds) or None,
        }


def spent_hours(study: optuna.Study, in_flight: dict[int, TrialJobs]) -> float:
    """Device-hours of the study so far: the trials' recorded cost, and the in-flight trials' at
    their running jobs' last validation."""
    seconds = sum(
        t.user_attrs.get("device_seconds", 0.0)
        for t in study.get_trials(deepcopy=False)
        if t.number not in in_flight
    )
    return (seconds + sum(trial.current_seconds() for trial in in_flight.values())) / 3600

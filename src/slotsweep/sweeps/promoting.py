"""The sweep loop of `hydra/sweeper/pruner=asha`: trials pause at rungs and the best are promoted.

A trial's segment is one job per seed that trains its run dir up to the rung's step with
`pause_at_step` (the job checkpoints there, writes results.json with status `paused` and returns the
objective at that step). When all its seeds have paused, the trial waits in the study as RUNNING with
user attrs `paused: true` and `rung`; its per-seed values at each rung are in `rung_values`, their
mean is reported as the intermediate value at the rung's step. Whenever fewer than n_jobs trials are
in flight, the paused trial that slotsweep.sweeps.promotion.next_promotion picks is resumed to the
next rung (its seeds from their checkpoints, seeds it gains from step 0), else a new trial starts at
rung 0. A trial that finishes the last rung is COMPLETE with the mean over all its seeds; when nothing
is left to start or promote, the trials still paused are PRUNED with their last rung's value.

Everything the loop needs is in the study, so a relaunched sweeper adopts the trials whose jobs run
and finds the paused ones where they wait.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from typing import Any

import optuna
from optuna.trial import FrozenTrial, Trial, TrialState

from slotsweep.sweeps.jobs import Jobs
from slotsweep.sweeps.promotion import Promotion, RungResult, Rungs, next_promotion
from slotsweep.sweeps.search_space import SearchSpace, override_string
from slotsweep.sweeps.trial_jobs import JOBS_ATTR, SeedJob, TrialJobs, spent_hours

__all__ = ["PAUSED_ATTR", "PromotionLoop", "RUNG_ATTR", "RUNG_VALUES_ATTR"]

log = logging.getLogger(__name__)

RUNG_ATTR = "rung"  # the rung (0-based) the trial's jobs train to, or where it is paused
PAUSED_ATTR = "paused"  # true: all its jobs paused at `rung`, none in flight
RUNG_VALUES_ATTR = "rung_values"  # {rung: {seed: value}} of the rungs it reached


class PromotionLoop:
    """Runs `OptunaSweep`'s study with pause-and-promote (see the module docstring)."""

    def __init__(
        self, sweep: Any, study: optuna.Study, space: SearchSpace, backend: Jobs, rungs: Rungs
    ) -> None:
        """`sweep`: the OptunaSweep that runs this loop (its settings and job helpers; not typed by
        name, since the sweeper imports this module)."""
        self.sweep, self.study, self.space, self.backend, self.rungs = sweep, study, space, backend, rungs
        self.steps = rungs.steps
        self.maximize = sweep.directions[0] == "maximize"

    def run(self, planned: int) -> tuple[str | None, int]:
        """Until `planned` trials have started and none can be promoted; (why the search stopped
        early or None, failed trials)."""
        log.info(
            f"asha: rungs at steps {self.steps}, seeds per rung "
            f"{[self.rungs.seeds_at(k) for k in range(len(self.steps))]}, reduction factor {self.rungs.eta}"
        )
        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        in_flight = {t.number: self._adopt(t) for t in running if not t.user_attrs.get(PAUSED_ATTR)}
        stopped: str | None = None
        n_failed = 0
        while True:
            self._poll(in_flight)
            trials = self.study.get_trials(deepcopy=False)
            n_failed = sum(t.state == TrialState.FAIL for t in trials)
            if n_failed > self.sweep.max_failure_rate * planned:
                stopped = stopped or "failures"
            spent = spent_hours(self.study, in_flight)
            budget = self.sweep.budget_hours
            if budget is not None and spent >= budget and stopped is None:
                stopped = "budget"
                log.warning(
                    f"hydra.sweeper.budget_hours={budget} spent ({spent:.4f} device-hours): no trial is "
                    f"started or promoted; {len(in_flight)} in flight finish their rung"
                )
            while stopped is None and len(in_flight) < self.sweep.n_jobs:
                all_started = self._n_started() >= planned
                promoted = self._next_promotion(finishing=all_started)
                if promoted is not None:
                    in_flight[promoted.trial] = self._launch(promoted)
                    continue
                if all_started:
                    break
                trial = self.study.ask(self.space.distributions)
                trial.set_user_attr("overrides", [override_string(k, v) for k, v in trial.params.items()])
                launched = self._start(trial)
                if launched is not None:
                    in_flight[trial.number] = launched
            if not in_flight:
                break
            time.sleep(self.sweep.poll_s)
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.user_attrs.get(PAUSED_ATTR):  # never promoted: its last rung's value stands
                log.info(f"Trial {trial.number} stays at rung {trial.user_attrs[RUNG_ATTR]}: pruned")
                self.study.tell(trial.number, state=TrialState.PRUNED)
        return stopped, n_failed

    def _jobs(self, params: dict[str, Any], rung: int) -> list[SeedJob]:
        seeds = self.sweep.seeds[: self.rungs.seeds_at(rung)]
        pause = self.steps[rung] if rung < len(self.steps) - 1 else "null"
        return self.sweep._seed_jobs(params, self.space, seeds, (f"pause_at_step={pause}",))

    def _start(self, trial: Trial) -> TrialJobs | None:
        """A new trial at rung 0; None when its values do not compose (told FAIL)."""
        try:
            jobs = self._jobs(trial.params, 0)
        except Exception as error:
            trial.set_user_attr("fail_reason", f"config: {error}")
            self.study.tell(trial, state=TrialState.FAIL)
            log.warning(f"Trial {trial.number} failed before launch: {error}")
            return None
        log.info(f"Launching trial {trial.number} to step {self.steps[0]}: params {trial.params}")
        return self._submit(trial.number, 0, jobs)

    def _launch(self, promoted: Promotion) -> TrialJobs:
        """Resume a paused trial to its next rung (its seeds resume, new seeds start)."""
        number, rung = promoted.trial, promoted.rung + 1
        jobs = self._jobs(self.study.trials[number].params, rung)
        log.info(
            f"Promoting trial {number} to step {self.steps[rung]} with {len(jobs)} seed job(s): {promoted}"
        )
        return self._submit(number, rung, jobs)

    def _submit(self, number: int, rung: int, jobs: list[SeedJob]) -> TrialJobs:
        storage, trial_id = self.study._storage, self._trial_id(number)
        # The previous rung's ended jobs are forgotten first: a relaunch must never take their
        # results for this rung's.
        storage.set_trial_user_attr(trial_id, JOBS_ATTR, [])
        storage.set_trial_user_attr(trial_id, RUNG_ATTR, rung)
        storage.set_trial_user_attr(trial_id, PAUSED_ATTR, False)
        trial_jobs = self.sweep._trial_jobs(self.study, number, jobs)
        trial_jobs.launch(self.backend)
        return trial_jobs

    def _adopt(self, trial: FrozenTrial) -> TrialJobs:
        """A trial a killed sweeper left with jobs in flight: follow them, submit those it had not."""
        rung = trial.user_attrs.get(RUNG_ATTR, 0)
        jobs = self._jobs(trial.params, rung)
        return self.sweep._adopt_jobs(self.study, trial, jobs, self.backend)

    def _n_started(self) -> int:
        """Trials asked so far (enqueued ones that wait to be asked do not count)."""
        return sum(t.state != TrialState.WAITING for t in self.study.get_trials(deepcopy=False))

    def _trial_id(self, number: int) -> int:
        return self.study._storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)

    def _poll(self, in_flight: dict[int, TrialJobs]) -> None:
        """Collect ended jobs; a trial whose jobs all ended pauses, completes or fails."""
        ids = [job.job_id for trial in in_flight.values() for job in trial.unended() if job.job_id]
        states = self.backend.states(ids) if ids else {}
        for number, trial_jobs in list(in_flight.items()):
            trial_jobs.collect(self.backend, states)
            if not trial_jobs.ended:
                continue
            del in_flight[number]
            trial = Trial(self.study, self._trial_id(number))
            for key, value in trial_jobs.cost().items():  # run dirs carry their cost: the total so far
                trial.set_user_attr(key, value)
            rung = self.study.trials[number].user_attrs.get(RUNG_ATTR, 0)
            outcomes = {str(job.seed): job.outcome for job in trial_jobs.jobs}
            values = {s: v[0] for s, v in outcomes.items() if isinstance(v, tuple) and math.isfinite(v[0])}
            if len(values) == len(outcomes):
                stored = dict(self.study.trials[number].user_attrs.get(RUNG_VALUES_ATTR, {}))
                stored[str(rung)] = values
                trial.set_user_attr(RUNG_VALUES_ATTR, stored)
            if rung == len(self.steps) - 1 or len(values) != len(outcomes):
                self.sweep._finish(self.study, trial, trial_jobs)  # COMPLETE, or FAIL with the reason
                continue
            mean = statistics.fmean(values.values())
            trial.report(mean, self.steps[rung])
            trial.set_user_attr(PAUSED_ATTR, True)
            log.info(f"Trial {number} paused at step {self.steps[rung]}: {mean:.4g} (mean of {len(values)})")

    def _next_promotion(self, finishing: bool) -> Promotion | None:
        results: dict[int, list[RungResult]] = {}
        for trial in self.study.get_trials(deepcopy=False):
            if trial.state == TrialState.FAIL:
                continue
            paused_at = trial.user_attrs.get(RUNG_ATTR) if trial.user_attrs.get(PAUSED_ATTR) else None
            paused_at = paused_at if trial.state == TrialState.RUNNING else None
            for rung, values in trial.user_attrs.get(RUNG_VALUES_ATTR, {}).items():
                if int(rung) < len(self.steps) - 1:
                    # values in the sweep's seed order, as seed_noise pairs them across trials
                    ordered = tuple(values[str(seed)] for seed in self.sweep.seeds if str(seed) in values)
                    result = RungResult(trial.number, int(rung), ordered, int(rung) == paused_at)
                    results.setdefault(result.rung, []).append(result)
        return next_promotion(results, self.rungs.eta, self.maximize, finishing=finishing)

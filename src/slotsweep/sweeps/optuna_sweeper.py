"""Optuna studies over Hydra jobs: up to n_jobs trials in flight, each one job per seed.

`hydra_plugins.slotsweep_sweeper.OptunaSweeper` (selected with `hydra/sweeper=optuna`) hands each
sweep to `OptunaSweep.run`. The scheduler keeps `n_jobs` trials running: the moment one ends (all
its seeds done, pruned or failed) the next is asked and launched, so no GPU waits for a batch's
straggler. Jobs go through slotsweep.sweeps.jobs (SLURM via submitit, or local subprocesses); each
training job writes its validation objective to its run dir, the sweeper reports the per-step mean
over seeds to the study and, when the pruner says so, asks the jobs to stop (slotsweep.runs.trial_files).
The study lives in persistent storage in the sweep dir, with every trial's job ids, so relaunching
the same command resumes it and adopts the jobs a killed sweeper left running. See docs/sweeps.md.
"""

import logging
import math
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from hydra.plugins.launcher import Launcher
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, Trial, TrialState

from slotsweep import numerics
from slotsweep.errors import SlotsweepError
from slotsweep.runs import experiment
from slotsweep.runs.study_storage import open_storage
from slotsweep.sweeps import confirmation
from slotsweep.sweeps.curves import write_curves
from slotsweep.sweeps.forecast import sweep_forecast
from slotsweep.sweeps.job_devices import check_local_devices, check_slurm_tasks
from slotsweep.sweeps.jobs import Jobs, make_jobs
from slotsweep.sweeps.pools import Pools
from slotsweep.sweeps.promoting import PromotionLoop
from slotsweep.sweeps.promotion import Rungs
from slotsweep.sweeps.search_space import SearchSpace, override_string, parse_search_space
from slotsweep.sweeps.settings import ASHA_TARGET, OptunaSweeperConf
from slotsweep.sweeps.summary import RESULTS_FILE, summarize
from slotsweep.sweeps.trial_jobs import JOBS_ATTR, SeedJob, TrialJobs, spent_hours

__all__ = ["OptunaSweep", "RESULTS_FILE"]

log = logging.getLogger(__name__)

SEED_KEY = "seed"  # the task's seed key: a trial with seeds [0, 1] runs seed=0 and seed=1
STUDY_ATTR = "slotsweep_sweep"  # study user attr: what the study optimises, checked on relaunch


class OptunaSweep:
    """One sweep: the settings of OptunaSweeperConf (see its comments), run by `run`."""

    def __init__(self, settings: OptunaSweeperConf) -> None:
        direction, n_trials, n_jobs = settings.direction, settings.n_trials, settings.n_jobs
        max_failure_rate, seeds = settings.max_failure_rate, settings.seeds
        self.directions = [direction] if isinstance(direction, str) else list(direction)
        bad = [d for d in self.directions if d not in ("maximize", "minimize")]
        if bad or not self.directions:
            raise SlotsweepError(
                f"hydra.sweeper.direction={direction}: give maximize or minimize, or a list of them "
                "(one per objective key)"
            )
        if n_trials < 1 or n_jobs < 1:
            raise SlotsweepError(
                f"hydra.sweeper.n_trials={n_trials} and hydra.sweeper.n_jobs={n_jobs} must be >= 1"
            )
        if not 0 <= max_failure_rate <= 1:
            raise SlotsweepError(f"hydra.sweeper.max_failure_rate={max_failure_rate} must be in [0, 1]")
        if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
            raise SlotsweepError(
                f"hydra.sweeper.seeds={list(seeds)} must be distinct seeds, or null for one job per trial"
            )
        self.sampler_cfg = settings.sampler
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.batch = settings.batch
        self.seeds: list[int | None] = list(seeds) if seeds is not None else [None]
        self.max_failure_rate = max_failure_rate
        self.study_name = settings.study_name
        self.storage = settings.storage
        self.params = dict(settings.params or {})
        self.pruner_cfg = settings.pruner
        self.poll_s, self.prune_grace_s, self.budget_hours = (
            settings.poll_s,
            settings.prune_grace_s,
            settings.budget_hours,
        )
        self.confirm = OmegaConf.create(settings.confirm)
        self.forecast_gpu = settings.forecast_gpu
        self.pool_size = settings.pool_size
        self.pools: Pools | None = None  # set by run() when pool_size > 1
        # hydra/sweeper/pruner=asha: the sweeper pauses and promotes (sweeps/promoting.py)
        self.rungs_cfg = self.pruner_cfg if self.pruner_cfg._target_ == ASHA_TARGET else None
        if self.rungs_cfg is not None and self.confirm.top_k > 0:
            raise SlotsweepError(
                f"hydra.sweeper.confirm.top_k={self.confirm.top_k} with hydra/sweeper/pruner=asha: its last "
                "rung is the confirmation (every seed of hydra.sweeper.seeds); set confirm.top_k=0"
            )
        if self.pool_size < 1:
            raise SlotsweepError(
                f"hydra.sweeper.pool_size={self.pool_size} must be >= 1 (1: one job per trial and seed)"
            )
        if self.pool_size > 1 and self.rungs_cfg is not None:
            raise SlotsweepError(
                f"hydra.sweeper.pool_size={self.pool_size} with hydra/sweeper/pruner=asha: a pool's "
                "heads do not pause at rungs yet; use pool_size=1 with asha, or another pruner"
            )
        pruning = get_class(self.pruner_cfg._target_) is not optuna.pruners.NopPruner
        if pruning and len(self.directions) > 1:
            raise SlotsweepError(
                f"hydra/sweeper/pruner={self.pruner_cfg._target_} with {len(self.directions)} directions: "
                "Optuna prunes single-objective studies only; use hydra/sweeper/pruner=none"
            )
        if self.confirm.top_k > 0 and (len(self.directions) > 1 or not self.confirm.seeds):
            raise SlotsweepError(
                f"hydra.sweeper.confirm={OmegaConf.to_container(self.confirm)}: confirmation needs one "
                "direction and a non-empty list of extra seeds, e.g. 'hydra.sweeper.confirm.seeds=[3,4]'"
            )
        # Set by run(): the sweep's config (task and hydra keys) and its config loader.
        self.config: DictConfig | None = None
        self.config_loader: Any = None

    def run(
        self,
        arguments: list[str],
        *,
        config: DictConfig,
        launcher: Launcher,
        hydra_context: Any,
        task_function: Any,
    ) -> dict[str, Any]:
        """Run (or resume) the study until it holds n_trials finished trials; return the summary."""
        self.config, self.config_loader = config, hydra_context.config_loader
        sweep_dir = Path(config.hydra.sweep.dir)
        space = parse_search_space(
            [*(f"{k}={v}" for k, v in self.params.items()), *arguments], self.config_loader
        )
        self._check(space, config)
        rungs = self._rungs(config) if self.rungs_cfg is not None else None  # bad rungs fail here
        sampler_class = get_class(self.sampler_cfg._target_)
        is_grid = issubclass(sampler_class, optuna.samplers.GridSampler)
        planned = self.n_trials
        if is_grid:
            n_points = math.prod(len(values) for values in space.listed.values())
            planned = min(planned, n_points)
            log.info(f"Grid of {n_points} points: {planned} trials")
        if self.forecast_gpu is not None:  # a bad device name fails here, before the study exists
            self._log_forecast(space, config, planned)
        sweep_dir.mkdir(parents=True, exist_ok=True)  # only once the settings are known to be good
        storage, dashboard = open_storage(self.storage, sweep_dir)
        study_name = self.study_name or OmegaConf.select(config, "sweep") or sweep_dir.name
        sampler = (
            instantiate(self.sampler_cfg, search_space=space.grid())
            if is_grid
            else instantiate(self.sampler_cfg)
        )
        study = optuna.create_study(
            study_name=study_name,
            storage=storage,
            sampler=sampler,
            pruner=optuna.pruners.NopPruner() if self.rungs_cfg is not None else instantiate(self.pruner_cfg),
            directions=self.directions,
            load_if_exists=True,
        )
        self._check_same_study(study, space, config, sweep_dir)
        OmegaConf.save(config, sweep_dir / "multirun.yaml")  # a refused relaunch keeps the study's own
        objective = OmegaConf.select(config, "objective")
        if objective is not None:  # dashboards and plots name the objective(s)
            with warnings.catch_warnings():  # "experimental" since Optuna 3.2, unchanged since
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(list(objective))
        log.info(f"Study '{study_name}' in {dashboard}: {planned} trials of {len(self.seeds)} seed(s)")
        backend = make_jobs(launcher, config, hydra_context, task_function)
        if self.pool_size > 1:
            self.pools = Pools(sweep_dir / "pools", self.pool_size, backend)
        if rungs is not None:
            stopped, n_failed = PromotionLoop(self, study, space, backend, rungs).run(planned)
        else:
            stopped, n_failed = self._search(study, space, backend, planned)
        write_curves(study, sweep_dir)
        if stopped == "failures":
            summarize(study, sweep_dir, dashboard, self.directions, self.budget_hours, stopped)
            raise SlotsweepError(
                f"{n_failed} of {planned} planned trials failed, more than "
                f"hydra.sweeper.max_failure_rate={self.max_failure_rate}: sweep stopped. Each failed "
                f"trial's fail_reason is in the study ({dashboard}). Failed trials count as run: "
                "relaunch with a higher hydra.sweeper.max_failure_rate to go on, or fix the cause "
                "and start a new study (another hydra.sweep.dir)"
            )
        confirmed = None
        if self.confirm.top_k > 0:
            confirmed = self._confirm(study, space, backend)
            write_curves(study, sweep_dir)  # with the confirmation seeds
        # every trial that ran, each of its seeds to trainer.max_steps
        n_ran = sum(t.state != TrialState.FAIL for t in study.get_trials(deepcopy=False))
        max_steps = OmegaConf.select(config, "trainer.max_steps")
        unpruned = n_ran * len(self.seeds) * max_steps if isinstance(max_steps, int) else None
        return summarize(
            study, sweep_dir, dashboard, self.directions, self.budget_hours, stopped, confirmed, unpruned
        )

    def _search(
        self, study: optuna.Study, space: SearchSpace, backend: Jobs, planned: int
    ) -> tuple[str | None, int]:
        """Keep n_jobs trials in flight until `planned` have ended (Optuna's pruners stop them);
        (why the search stopped early or None, failed trials)."""
        in_flight = {t.number: self._adopt(study, t, space, backend) for t in _running(study)}
        stopped: str | None = None  # why no new trial is launched, once that is so
        while True:
            self._poll(study, in_flight, backend)
            n_finished, n_failed = _finished_counts(study)
            if n_failed > self.max_failure_rate * planned:
                stopped = stopped or "failures"
            spent = spent_hours(study, in_flight)
            if self.budget_hours is not None and spent >= self.budget_hours and stopped is None:
                stopped = "budget"
                log.warning(
                    f"hydra.sweeper.budget_hours={self.budget_hours} spent ({spent:.4f} device-hours): "
                    f"no new trial is launched; {len(in_flight)} in flight finish"
                )
            can_launch = stopped is None and not (self.batch and in_flight)
            while can_launch and len(in_flight) < self.n_jobs and n_finished + len(in_flight) < planned:
                trial = study.ask(space.distributions)
                launched = self._launch(study, trial, space, backend)
                if launched is None:  # did not compose: failed at once
                    n_finished, n_failed = _finished_counts(study)
                    if n_failed > self.max_failure_rate * planned:
                        stopped, can_launch = "failures", False
                    continue
                in_flight[trial.number] = launched
            if not in_flight:
                break
            time.sleep(self.poll_s)
        return stopped, n_failed

    def _check(self, space: SearchSpace, config: DictConfig) -> None:
        """Fail before launching anything when the settings contradict the task config."""
        if not space.distributions:
            raise SlotsweepError(
                "nothing to optimise: give a search space in hydra.sweeper.params or on the command "
                "line, e.g. 'loss.timesim.weight=interval(0.01, 1)'"
            )
        if self.seeds != [None] and (
            SEED_KEY in space.distributions or any(f.split("=")[0] == SEED_KEY for f in space.fixed)
        ):
            raise SlotsweepError(
                f"{SEED_KEY}= is set while hydra.sweeper.seeds={self.seeds} already runs every trial "
                f"with each of those seeds: drop one of the two"
            )
        paced = [key for key in ("trainer.max_steps", "pause_at_step") if key in space.distributions]
        if self.rungs_cfg is not None and paced:
            raise SlotsweepError(
                f"{paced[0]} is swept with hydra/sweeper/pruner=asha, whose rungs pause trials at steps "
                "up to trainer.max_steps: fix it for the sweep, or use another pruner"
            )
        objective = OmegaConf.select(config, "objective")
        if objective is not None and len(objective) != len(self.directions):
            raise SlotsweepError(
                f"objective={list(objective)} has {len(objective)} keys but "
                f"hydra.sweeper.direction={self.directions} has {len(self.directions)}: give one "
                "direction per objective key"
            )
        # Compose with each swept key at one value (every option of a choice), as the jobs will: a
        # key that does not exist or a missing option stops here, before the study records a trial.
        for key, distribution in space.distributions.items():
            categorical = isinstance(distribution, CategoricalDistribution)
            values = distribution.choices if categorical else [distribution.low]
            for value in values:
                overrides = [*space.fixed, override_string(key, value)]
                try:
                    job_cfg = self.config_loader.load_sweep_config(
                        master_config=config, sweep_overrides=overrides
                    )
                except Exception as error:  # Hydra's composition errors name the key and the fix
                    message = f"{key}={value} does not compose with the config: {error}"
                    raise SlotsweepError(message) from error
                check_slurm_tasks(job_cfg)  # a multi-task job's trainer, before any trial exists
                check_local_devices(job_cfg)
                if self.pool_size > 1:
                    self._check_poolable(job_cfg)

    def _check_poolable(self, job_cfg: DictConfig) -> None:
        """pool_size > 1 trains training runs on one device each: refuse any other task or trainer."""
        if _run_dir(job_cfg) is None:
            raise SlotsweepError(
                f"hydra.sweeper.pool_size={self.pool_size}: only src/train.py's runs can share a pool; "
                "set hydra.sweeper.pool_size=1"
            )
        from slotsweep.training.pool import check_stream  # torch: only a pooled sweep needs it

        check_stream([_task_config(job_cfg)])

    def _log_forecast(self, space: SearchSpace, config: DictConfig, planned: int) -> None:
        """Log what the planned trials x seeds x steps cost (sweeps/forecast.py), for the sweep's
        config with its fixed overrides, composed as a job's (the swept keys at their defaults)."""
        job_cfg = self.config_loader.load_sweep_config(
            master_config=config, sweep_overrides=list(space.fixed)
        )
        with open_dict(job_cfg):
            del job_cfg["hydra"]  # the job's own hydra node (job num, ...) is not resolvable here
        block = sweep_forecast(job_cfg, self.forecast_gpu, planned, len(self.seeds), self.pool_size)
        if block is not None:
            log.info(block)

    def _check_same_study(
        self, study: optuna.Study, space: SearchSpace, config: DictConfig, sweep_dir: Path
    ) -> None:
        """A relaunch must optimise what the study was started with, or its trials would mix."""
        objective = OmegaConf.select(config, "objective")
        signature = {
            "params": {key: repr(d) for key, d in space.distributions.items()},
            "fixed": space.fixed,
            "seeds": None if self.seeds == [None] else self.seeds,
            "directions": self.directions,
            "objective": list(objective) if objective is not None else None,
        }
        started = study.user_attrs.get(STUDY_ATTR)
        if started is None:
            study.set_user_attr(STUDY_ATTR, signature)
            return
        changed = {
            key: (started.get(key), value) for key, value in signature.items() if started.get(key) != value
        }
        if changed:
            details = "; ".join(f"{key}: was {old}, now {new}" for key, (old, new) in changed.items())
            raise SlotsweepError(
                f"study '{study.study_name}' in {sweep_dir} was started with other settings ({details}). "
                "Relaunch with the same arguments to resume it, or start a new study with another "
                "hydra.sweep.dir (or hydra.sweeper.study_name)"
            )

    def _rungs(self, config: DictConfig) -> Rungs:
        """The asha rungs of this sweep (trainer.max_steps is the last)."""
        assert self.rungs_cfg is not None
        max_steps = int(config.trainer.max_steps)
        fraction = self.rungs_cfg.min_fraction
        if fraction is not None and not 0 < fraction <= 1:
            raise SlotsweepError(
                f"hydra.sweeper.pruner.min_fraction={fraction} must be in (0, 1]: the first rung's share "
                "of trainer.max_steps (or null, and the first rung at hydra.sweeper.pruner.min_steps)"
            )
        return Rungs(
            min_steps=self.rungs_cfg.min_steps if fraction is None else max(1, round(fraction * max_steps)),
            eta=self.rungs_cfg.reduction_factor,
            max_steps=max_steps,
            n_seeds=len(self.seeds),
            seeds_as_fidelity=self.rungs_cfg.seeds_as_fidelity,
        )

    def _seed_jobs(
        self, params: dict[str, Any], space: SearchSpace, seeds: list[int | None], extra: tuple[str, ...] = ()
    ) -> list[SeedJob]:
        """One job per seed: its overrides (`extra` last) and run dir (composed as the job will:
        raises when the values do not compose together)."""
        overrides = [override_string(key, value) for key, value in params.items()]
        jobs = []
        for seed in seeds:
            job = [*space.fixed, *overrides, *([] if seed is None else [f"{SEED_KEY}={seed}"]), *extra]
            job_cfg = self.config_loader.load_sweep_config(master_config=self.config, sweep_overrides=job)
            task_cfg = _task_config(job_cfg) if self.pools is not None else None  # a pooled head's ticket
            jobs.append(SeedJob(seed=seed, overrides=job, run_dir=_run_dir(job_cfg), task_cfg=task_cfg))
        return jobs

    def _trial_jobs(self, study: optuna.Study, number: int, jobs: list[SeedJob]) -> TrialJobs:
        trial_id = _trial_id(study, number)
        return TrialJobs(
            number=number,
            jobs=jobs,
            save=lambda attrs: study._storage.set_trial_user_attr(trial_id, JOBS_ATTR, attrs),
            as_values=lambda value: _as_values(value, len(self.directions)),
            pools=self.pools,
        )

    def _launch(
        self, study: optuna.Study, trial: Trial, space: SearchSpace, backend: Jobs
    ) -> TrialJobs | None:
        """Submit every seed's job of a new trial; None when its values do not compose (FAIL)."""
        trial.set_user_attr("overrides", [override_string(k, v) for k, v in trial.params.items()])
        try:  # compose here, as the jobs will: a bad key or option fails now, not on a GPU node
            jobs = self._seed_jobs(trial.params, space, self.seeds)
        except Exception as error:
            trial.set_user_attr("fail_reason", f"config: {error}")
            _tell(study, trial, state=TrialState.FAIL)
            log.warning(f"Trial {trial.number} failed before launch: {error}")
            return None
        launched = self._trial_jobs(study, trial.number, jobs)
        log.info(f"Launching trial {trial.number}: {len(jobs)} job(s), params {trial.params}")
        launched.launch(backend)
        return launched

    def _adopt(self, study: optuna.Study, trial: FrozenTrial, space: SearchSpace, backend: Jobs) -> TrialJobs:
        """A trial a killed sweeper left RUNNING: follow its stored jobs, submit those it had not."""
        return self._adopt_jobs(study, trial, self._seed_jobs(trial.params, space, self.seeds), backend)

    def _adopt_jobs(
        self, study: optuna.Study, trial: FrozenTrial, jobs: list[SeedJob], backend: Jobs
    ) -> TrialJobs:
        """`_adopt` with the trial's jobs given (an asha trial's at its rung)."""
        for job, stored in zip(jobs, trial.user_attrs.get(JOBS_ATTR, []), strict=False):
            job.adopt(stored)
        adopted = self._trial_jobs(study, trial.number, jobs)
        adopted.reported = dict(trial.intermediate_values)  # pruning goes on from what was reported
        ids = [job.job_id for job in jobs if job.job_id is not None and job.kind == backend.kind]
        log.warning(f"Trial {trial.number} was left running by a previous sweeper: adopting job(s) {ids}")
        adopted.launch(backend)
        return adopted

    def _poll(self, study: optuna.Study, in_flight: dict[int, TrialJobs], backend: Jobs) -> None:
        """Collect ended jobs, report new intermediate values, prune, and tell ended trials."""
        ids = [job.job_id for trial in in_flight.values() for job in trial.unended() if job.job_id]
        states = backend.states(ids) if ids else {}
        for number, trial_jobs in list(in_flight.items()):
            trial_jobs.collect(backend, states)
            trial = Trial(study, _trial_id(study, number))
            if len(self.directions) == 1 and trial_jobs.stop_requested_at is None:
                for step, value in trial_jobs.new_intermediate_values():
                    trial.report(value, step)
                if trial_jobs.reported and not trial_jobs.ended and trial.should_prune():
                    step = max(trial_jobs.reported)
                    log.info(f"Trial {number} pruned at step {step} (value {trial_jobs.reported[step]})")
                    trial_jobs.stop(backend, f"trial {number} pruned at step {step}", self.prune_grace_s)
            elif trial_jobs.stop_requested_at is not None and not trial_jobs.ended:
                trial_jobs.stop(backend, "", self.prune_grace_s)  # cancels the late ones
            if trial_jobs.ended:
                for key, value in trial_jobs.cost().items():
                    trial.set_user_attr(key, value)
                self._finish(study, trial, trial_jobs)
                del in_flight[number]

    def _finish(self, study: optuna.Study, trial: Trial, trial_jobs: TrialJobs) -> None:
        """PRUNED (value: the last intermediate value), FAIL when a seed's job raised or returned
        NaN, else COMPLETE with the mean over seeds."""
        if trial_jobs.stop_requested_at is not None:
            _tell(study, trial, state=TrialState.PRUNED)
            return
        per_seed: list[tuple[float, ...]] = []
        errors = []
        for job in trial_jobs.jobs:
            if isinstance(job.outcome, str):
                errors.append(f"{job.name}: {job.outcome}")
                continue
            assert job.outcome is not None
            values = job.outcome
            if job.seed is not None:
                trial.set_user_attr(f"seed{job.seed}", values[0] if len(values) == 1 else list(values))
            if any(math.isnan(v) for v in values):
                errors.append(f"{job.name} returned NaN")
                continue
            per_seed.append(values)
        if errors:
            trial.set_user_attr("fail_reason", "; ".join(errors))
            _tell(study, trial, state=TrialState.FAIL)
            log.warning(f"Trial {trial.number} failed ({'; '.join(errors)}); params {trial.params}")
            return
        means = [statistics.fmean(column) for column in zip(*per_seed, strict=True)]
        if len(per_seed) > 1:
            stds = [statistics.stdev(column) for column in zip(*per_seed, strict=True)]
            trial.set_user_attr("std", stds[0] if len(stds) == 1 else stds)
        _tell(study, trial, values=means)
        shown = means[0] if len(means) == 1 else means
        log.info(f"Trial {trial.number} finished: {shown} (mean of {len(per_seed)}), params {trial.params}")

    def _confirm(self, study: optuna.Study, space: SearchSpace, backend: Jobs) -> list[dict[str, Any]]:
        """Run the top_k trials on the extra seeds (n_jobs trials at a time); their per-seed values."""
        top = confirmation.top_trials(study, self.confirm.top_k)
        extra = [seed for seed in self.confirm.seeds if seed not in self.seeds]
        pending = []
        for trial in top:
            jobs = self._seed_jobs(trial.params, space, extra)
            stored = confirmation.stored_jobs(study, trial.number)
            for job, attr in zip(jobs, stored, strict=False):
                job.job_id, job.kind = attr["job_id"], attr["kind"]
            adopted = [job.job_id for job in jobs if job.job_id is not None and job.kind == backend.kind]
            if adopted:
                log.warning(
                    f"Trial {trial.number}'s confirmation was left running by a previous sweeper: "
                    f"adopting job(s) {adopted}"
                )
            pending.append(
                TrialJobs(
                    number=trial.number,
                    jobs=jobs,
                    save=lambda attrs, n=trial.number: confirmation.store_jobs(study, n, attrs),
                    as_values=lambda value: _as_values(value, 1),
                )
            )
        log.info(f"Confirming trials {[t.number for t in top]} on seeds {extra}")
        in_flight: list[TrialJobs] = []
        while pending or in_flight:
            while pending and len(in_flight) < self.n_jobs:
                in_flight.append(pending.pop(0))
                in_flight[-1].launch(backend)
            ids = [job.job_id for trial in in_flight for job in trial.unended() if job.job_id]
            states = backend.states(ids) if ids else {}
            for trial_jobs in list(in_flight):
                trial_jobs.collect(backend, states)
                if trial_jobs.ended:
                    confirmation.store_values(study, trial_jobs)
                    in_flight.remove(trial_jobs)
            if in_flight:
                time.sleep(self.poll_s)
        return confirmation.rank(study, top, self.seeds, OmegaConf.select(self.config, SEED_KEY))


def _as_values(value: Any, n_objectives: int) -> tuple[float, ...]:
    values = tuple(float(v) for v in value) if isinstance(value, (tuple, list)) else (float(value),)
    if len(values) != n_objectives:
        raise SlotsweepError(
            f"the task returned {len(values)} value(s) {values} for {n_objectives} direction(s) in "
            "hydra.sweeper.direction"
        )
    return values


def _tell(study: optuna.Study, trial: Trial | int, **outcome: Any) -> None:
    try:
        study.tell(trial, **outcome)
    except RuntimeError:
        # GridSampler calls study.stop() after the last grid point, which Optuna only allows inside
        # study.optimize (optuna#4121, #5141); the trial is stored before that call raises.
        if not isinstance(study.sampler, optuna.samplers.GridSampler):
            raise


def _task_config(job_cfg: DictConfig) -> DictConfig:
    """A job's config without its own hydra node (job num, ...), which is not resolvable here."""
    task_cfg = job_cfg.copy()
    with open_dict(task_cfg):
        del task_cfg["hydra"]
    return task_cfg


def _run_dir(job_cfg: DictConfig) -> Path | None:
    """The run dir a training job of this config writes (slotsweep.runs.experiment); None for another task."""
    if OmegaConf.select(job_cfg, "paths.runs_dir") is None or "exp_name" not in job_cfg:
        return None
    launcher = {key: OmegaConf.select(job_cfg, f"hydra.launcher.{key}") for key in numerics.GPU_LAUNCHER_KEYS}
    task_cfg = _task_config(job_cfg)
    # the job's numerics where it will run: a GPU launcher's jobs get a GPU, whatever this node has
    resolved = numerics.resolve(task_cfg, launcher, assume_gpu=True)
    return experiment.run_dir(task_cfg, experiment.experiment_id(task_cfg, resolved)).resolve()


def _trial_id(study: optuna.Study, number: int) -> int:
    # Optuna's public API reaches a trial through its handle only; a relaunch has its number.
    return study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)


def _running(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def _finished_counts(study: optuna.Study) -> tuple[int, int]:
    """(finished: completed, pruned or failed; failed) trials. Pruned never counts as failed."""
    trials: list[FrozenTrial] = study.get_trials(deepcopy=False)
    n_finished = sum(t.state.is_finished() for t in trials)
    n_failed = sum(t.state == TrialState.FAIL for t in trials)
    return n_finished, n_failed

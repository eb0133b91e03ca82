"""Optuna studies over Hydra jobs: ask a batch of trials, launch one job per (trial, seed), tell the mean.

`hydra_plugins.slotsweep_sweeper.OptunaSweeper` (selected with `hydra/sweeper=optuna`) hands each
sweep to `OptunaSweep.run`. The study lives in persistent storage in the sweep dir, so relaunching
the same command resumes it: finished trials are kept; trials cut off by a killed sweeper are marked
failed and their parameters run again, where their seeds' run dirs are found by experiment id
(finished seeds are skipped, the others resume from their checkpoints). See docs/sweeps.md.
"""

import logging
import math
import shutil
import statistics
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, Trial, TrialState

from slotsweep.errors import SlotsweepError
from slotsweep.sweeps.search_space import SearchSpace, override_string, parse_search_space
from slotsweep.sweeps.settings import OptunaSweeperConf
from slotsweep.sweeps.storage import open_storage

__all__ = ["OptunaSweep", "RESULTS_FILE"]

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"
SEED_KEY = "seed"  # the task's seed key: a trial with seeds [0, 1] runs seed=0 and seed=1
RETRY_OF = "retry_of"  # trial user attr: number of the cut-off trial whose parameters it re-runs
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
        self.seeds: list[int | None] = list(seeds) if seeds is not None else [None]
        self.max_failure_rate = max_failure_rate
        self.study_name = settings.study_name
        self.storage = settings.storage
        self.params = dict(settings.params or {})
        # Set by run(): the sweep's config (task and hydra keys), its launcher and config loader.
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None
        self.config_loader: Any = None

    def run(
        self, arguments: list[str], *, config: DictConfig, launcher: Launcher, config_loader: Any
    ) -> dict[str, Any]:
        """Run (or resume) the study until it holds n_trials finished trials; return the summary."""
        self.config, self.launcher, self.config_loader = config, launcher, config_loader
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(config, sweep_dir / "multirun.yaml")
        space = parse_search_space([*(f"{k}={v}" for k, v in self.params.items()), *arguments], config_loader)
        self._check(space, config)
        storage, dashboard = open_storage(self.storage, sweep_dir)
        study_name = self.study_name or OmegaConf.select(config, "sweep") or sweep_dir.name
        sampler_class = get_class(self.sampler_cfg._target_)
        is_grid = issubclass(sampler_class, optuna.samplers.GridSampler)
        sampler = (
            instantiate(self.sampler_cfg, search_space=space.grid())
            if is_grid
            else instantiate(self.sampler_cfg)
        )
        study = optuna.create_study(
            study_name=study_name,
            storage=storage,
            sampler=sampler,
            directions=self.directions,
            load_if_exists=True,
        )
        self._check_same_study(study, space, config, sweep_dir)
        if _retry_cut_off(study):
            _wait_for_orphaned_jobs(OmegaConf.select(config, "hydra.launcher.submitit_folder"))
        planned = self.n_trials
        if is_grid:
            n_points = math.prod(len(values) for values in space.listed.values())
            planned = min(planned, n_points)
            log.info(f"Grid of {n_points} points: {planned} trials")
        log.info(f"Study '{study_name}' in {dashboard}: {planned} trials of {len(self.seeds)} seed(s)")

        while True:
            n_complete, n_failed = _finished_counts(study)
            if n_failed > self.max_failure_rate * planned:
                self._summarize(study, sweep_dir, dashboard)
                raise SlotsweepError(
                    f"{n_failed} of {planned} planned trials failed, more than "
                    f"hydra.sweeper.max_failure_rate={self.max_failure_rate}: sweep stopped. Each failed "
                    f"trial's fail_reason is in the study ({dashboard}). Failed trials count as run: "
                    "relaunch with a higher hydra.sweeper.max_failure_rate to go on, or fix the cause "
                    "and start a new study (another hydra.sweep.dir)"
                )
            remaining = planned - n_complete - n_failed
            if remaining <= 0:
                break
            trials = [study.ask(space.distributions) for _ in range(min(self.n_jobs, remaining))]
            self._run_batch(study, trials, space)
        return self._summarize(study, sweep_dir, dashboard)

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
                    self.config_loader.load_sweep_config(master_config=config, sweep_overrides=overrides)
                except Exception as error:  # Hydra's composition errors name the key and the fix
                    message = f"{key}={value} does not compose with the config: {error}"
                    raise SlotsweepError(message) from error

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

    def _run_batch(self, study: optuna.Study, trials: list[Trial], space: SearchSpace) -> None:
        """Launch every (trial, seed) job of the batch in one launcher call, then tell each trial."""
        batch: list[tuple[Trial, list[list[str]]]] = []
        for trial in trials:
            overrides = [override_string(key, value) for key, value in trial.params.items()]
            trial.set_user_attr("overrides", overrides)
            seeds = [[] if seed is None else [f"{SEED_KEY}={seed}"] for seed in self.seeds]
            jobs = [[*space.fixed, *overrides, *seed] for seed in seeds]
            try:  # compose here, as the jobs will: a bad key or option fails now, not on a GPU node
                for job in jobs:
                    self.config_loader.load_sweep_config(master_config=self.config, sweep_overrides=job)
            except Exception as error:
                trial.set_user_attr("fail_reason", f"config: {error}")
                _tell(study, trial, state=TrialState.FAIL)
                log.warning(f"Trial {trial.number} failed before launch: {error}")
                continue
            batch.append((trial, jobs))
        if not batch:
            return
        numbers = [trial.number for trial, _ in batch]
        jobs = [job for _, trial_jobs in batch for job in trial_jobs]
        log.info(f"Launching trial(s) {numbers}: {len(jobs)} job(s)")
        try:
            returns = self.launcher.launch(jobs, initial_job_idx=numbers[0] * len(self.seeds))
        except BaseException:
            # The trials stay RUNNING: a relaunch of the sweep retries them (finished seeds are
            # skipped by their run dirs), as after a killed sweeper.
            log.error(f"The launcher failed on trial(s) {numbers}; relaunch the sweep to retry them")
            raise
        n_seeds = len(self.seeds)
        for i, (trial, _) in enumerate(batch):
            self._report(study, trial, returns[i * n_seeds : (i + 1) * n_seeds])

    def _report(self, study: optuna.Study, trial: Trial, returns: Sequence[JobReturn]) -> None:
        """Tell the mean over seeds, or FAIL when a seed's job raised or returned NaN."""
        per_seed: list[tuple[float, ...]] = []
        errors = []
        for seed, job in zip(self.seeds, returns, strict=True):
            name = "job" if seed is None else f"{SEED_KEY}={seed}"
            try:
                values = _as_values(job.return_value, len(self.directions))
            except Exception as error:  # the job's own exception, re-raised by JobReturn
                errors.append(f"{name}: {type(error).__name__}: {error}")
                continue
            if seed is not None:
                trial.set_user_attr(f"seed{seed}", values[0] if len(values) == 1 else list(values))
            if any(math.isnan(v) for v in values):
                errors.append(f"{name} returned NaN")
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

    def _summarize(self, study: optuna.Study, sweep_dir: Path, dashboard: str) -> dict[str, Any]:
        """Write optimization_results.yaml in the sweep dir and log the best trial(s)."""
        n_complete, n_failed = _finished_counts(study)
        summary: dict[str, Any] = {
            "name": "optuna",
            "study_name": study.study_name,
            "storage": dashboard,
            "directions": self.directions,
            "n_complete": n_complete,
            "n_failed": n_failed,
        }
        if n_complete == 0:
            log.warning(f"No trial of study '{study.study_name}' completed")
        elif len(self.directions) == 1:
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
        OmegaConf.save(OmegaConf.create(summary), sweep_dir / RESULTS_FILE)
        log.info(f"Results: {sweep_dir / RESULTS_FILE}; browse the study with: optuna-dashboard {dashboard}")
        return summary


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


def _retry_cut_off(study: optuna.Study) -> list[FrozenTrial]:
    """Trials left RUNNING by a killed sweeper: mark them FAIL and queue their parameters again."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs[RETRY_OF] for t in trials if RETRY_OF in t.user_attrs}
    cut_off = [t for t in trials if t.state == TrialState.RUNNING]
    for trial in cut_off:
        log.warning(
            f"Trial {trial.number} was cut off (the sweeper stopped before it finished): marked FAIL, "
            f"its parameters {trial.params} run again"
        )
        # Queue first: a sweeper killed between the two steps leaves a RUNNING trial that already
        # has its retry, and is not queued twice on the next relaunch.
        if trial.number not in retried:
            study.enqueue_trial(trial.params, user_attrs={RETRY_OF: trial.number})
        _tell(study, trial.number, state=TrialState.FAIL)
    return cut_off


def _wait_for_orphaned_jobs(submitit_folder: str | None, poll_s: float = 10.0) -> None:
    """Wait until the SLURM jobs of a killed sweeper have ended.

    They go on without it, and the re-run of their trials would otherwise start a twin job in each
    of their run dirs. submitit keeps one folder per job, named by job id, in which it writes a
    result file when the job ends; jobs without one are looked up in squeue.
    """
    if submitit_folder is None or shutil.which("squeue") is None:  # not SLURM: the jobs died with it
        return
    folders = Path(submitit_folder).parent  # the folder pattern ends with %j
    unfinished = [d.name for d in folders.glob("*") if d.is_dir() and not any(d.glob("*_result.pkl"))]
    announced = False
    while unfinished:
        squeue = subprocess.run(
            ["squeue", "--noheader", "--format=%i", f"--jobs={','.join(unfinished)}"],
            capture_output=True,
            text=True,
        )
        # squeue fails on ids it has forgotten (long ended) when it knows none of the others.
        alive = squeue.stdout.split() if squeue.returncode == 0 else []
        if not alive:
            return
        if not announced:
            log.warning(f"Waiting for SLURM jobs {alive} of the previous sweeper to end (or scancel them)")
            announced = True
        time.sleep(poll_s)
        unfinished = alive


def _finished_counts(study: optuna.Study) -> tuple[int, int]:
    """(completed, failed) trials, not counting cut-off trials that were queued again."""
    trials: list[FrozenTrial] = study.get_trials(deepcopy=False)
    retried = {t.user_attrs[RETRY_OF] for t in trials if RETRY_OF in t.user_attrs}
    n_complete = sum(t.state == TrialState.COMPLETE for t in trials)
    n_failed = sum(t.state == TrialState.FAIL and t.number not in retried for t in trials)
    return n_complete, n_failed

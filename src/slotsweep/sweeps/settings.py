"""Settings of slotsweep's Optuna sweeper (`hydra/sweeper=optuna`) and of its samplers.

One dataclass per node, one comment per field: Hydra checks the keys at compose time
(hydra_plugins/slotsweep_sweeper/config.py registers these), and `OptunaSweep` reads the same
object, so every setting is declared once. Samplers are selected with
`hydra/sweeper/sampler=tpe|random|cmaes|gp|grid`, pruners with
`hydra/sweeper/pruner=none|median|percentile|successive_halving|hyperband|wilcoxon|threshold|asha`;
each but asha (the sweeper's own pause-and-promote scheduler) names its Optuna class by `_target_`,
and any other argument of that class can be added with `+hydra.sweeper.sampler.<arg>=...`
(`+hydra.sweeper.pruner.<arg>=...`).
"""

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

__all__ = [
    "ASHA_TARGET",
    "AshaConf",
    "CmaEsSamplerConf",
    "ConfirmConf",
    "GPSamplerConf",
    "GridSamplerConf",
    "OptunaSweeperConf",
    "PRUNERS",
    "RandomSamplerConf",
    "SAMPLERS",
    "TPESamplerConf",
]


@dataclass
class TPESamplerConf:
    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = None  # sampler seed: same seed + same results -> same suggestions
    n_startup_trials: int = 10  # random trials before the model takes over


@dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = None


@dataclass
class CmaEsSamplerConf:
    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: int | None = None
    n_startup_trials: int = 1  # continuous params only; choice() params are sampled at random


@dataclass
class GPSamplerConf:
    _target_: str = "optuna.samplers.GPSampler"
    seed: int | None = None
    n_startup_trials: int = 10


@dataclass
class GridSamplerConf:
    # The grid is built by the sweeper from the choice()/range() params; n_trials is capped at
    # its size. interval() params are refused: a grid needs listed values.
    _target_: str = "optuna.samplers.GridSampler"
    seed: int | None = None  # order in which the grid points are visited


# Pruners judge a trial by its intermediate values: the mean over its seeds of the objective at each
# validation step (training jobs write them to their run dir; the sweeper reports them). A "step"
# is a training step, so n_warmup_steps, min_resource etc. count training steps.


@dataclass
class NopPrunerConf:
    _target_: str = "optuna.pruners.NopPruner"  # never prunes: every trial runs to its end


@dataclass
class MedianPrunerConf:
    # prunes when the trial's value at a step is worse than the median of earlier trials' at that step
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5  # trials that are never pruned, to have a median to compare with
    n_warmup_steps: int = 0  # steps of a trial before it can be pruned
    interval_steps: int = 1
    n_min_trials: int = 1  # trials that reached a step before that step can prune


@dataclass
class PercentilePrunerConf:
    _target_: str = "optuna.pruners.PercentilePruner"
    percentile: float = 25.0  # keep the best 25% at each step (in [0, 100])
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class SuccessiveHalvingPrunerConf:
    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "auto"  # steps before the first rung ("auto": from the first finished trial)
    reduction_factor: int = 4  # 1/reduction_factor of the trials go on at each rung
    min_early_stopping_rate: int = 0
    bootstrap_count: int = 0


@dataclass
class HyperbandPrunerConf:
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1  # steps: the smallest budget a trial gets
    max_resource: Any = "auto"  # steps: trainer.max_steps ("auto": from the first finished trial)
    reduction_factor: int = 3
    bootstrap_count: int = 0


@dataclass
class WilcoxonPrunerConf:
    # paired test of the trial against the best one on the same steps; prunes when it is worse with
    # p < p_threshold
    _target_: str = "optuna.pruners.WilcoxonPruner"
    p_threshold: float = 0.1
    n_startup_steps: int = 2


@dataclass
class ThresholdPrunerConf:
    # prunes a trial whose value leaves [lower, upper]; e.g. lower=0.05 drops collapsed runs early
    _target_: str = "optuna.pruners.ThresholdPruner"
    lower: float | None = None
    upper: float | None = None
    n_warmup_steps: int = 0
    interval_steps: int = 1


@dataclass
class AshaConf:
    # Not an Optuna pruner: the sweeper pauses every trial at each rung (its job checkpoints and
    # ends, the slot is free) and resumes the best paused ones (slotsweep.sweeps.promotion); the
    # study itself has no pruner. Rungs at min_steps x reduction_factor^k and trainer.max_steps.
    _target_: str = "slotsweep.sweeps.promotion.Rungs"
    min_steps: int = 200  # the first rung: every trial trains this far
    # the first rung as a fraction of trainer.max_steps instead (to the nearest step), so that a
    # named sweep's rungs move with the experiment's length; null: min_steps
    min_fraction: float | None = None
    reduction_factor: int = 3  # 1/reduction_factor of a rung's trials go on (or within seed noise)
    # true: hydra.sweeper.seeds are spread over the rungs (one seed at the low rungs, all at the last;
    # confirmation is the last rung); false: every rung runs every seed
    seeds_as_fidelity: bool = True


ASHA_TARGET = AshaConf._target_


@dataclass
class ConfirmConf:
    # after the search, the top_k trials run again on these seeds (the seeds they already ran are
    # not re-run); the summary ranks them over all their seeds with a paired t-test. 0: no confirmation
    top_k: int = 0
    seeds: list[int] = field(default_factory=list)


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.slotsweep_sweeper.OptunaSweeper"
    _recursive_: bool = False  # the sampler is built by the sweeper (the grid needs the space)

    sampler: Any = MISSING  # hydra/sweeper/sampler=tpe|random|cmaes|gp|grid (default in optuna.yaml)
    pruner: Any = MISSING  # hydra/sweeper/pruner=none|median|...: see the pruner classes above
    # "maximize"/"minimize", or a list of them, one per key of the task's `objective`
    direction: Any = "maximize"
    # trials run to an end (completed, pruned or failed) that the study should hold; a trial whose
    # jobs still run when the sweeper is killed is adopted by the relaunched sweeper
    n_trials: int = 20
    # trials in flight at once (each runs one job per seed); when one ends the next is launched
    n_jobs: int = 1
    # true: launch n_jobs trials together and ask the next ones only when all have ended (Hydra's
    # batch behaviour; GPUs wait for the batch's slowest trial, but the sampler's suggestions do
    # not depend on which trial ended first)
    batch: bool = False
    # every trial runs one job per seed (override seed=k) and reports the mean; null: one job,
    # with the config's own seed
    seeds: list[int] | None = None
    # stop when more than this fraction of n_trials has failed (0: stop at the first failure)
    max_failure_rate: float = 0.25
    # null: the sweep's name (`sweep`), else the sweep dir's name
    study_name: str | None = None
    # null: SQLite file <sweep dir>/optuna.db; "journal": <sweep dir>/optuna_journal.log (for
    # shared cluster disks, where SQLite locking is unreliable); else any RDB URL
    storage: str | None = None
    # search space {dotted key: override value}, e.g. {grouper.n_slots: "range(4, 12)"};
    # command-line sweeps (key=interval(a,b)) are added to it and win on the same key
    params: dict[str, str] | None = None
    # seconds between two looks at the jobs in flight (squeue, their validation.jsonl)
    poll_s: float = 5.0
    # seconds a job of a pruned trial has to stop at its next validation before it is cancelled
    # (scancel); make it longer than the time between two validations
    prune_grace_s: float = 600.0
    # device-hours (GPU-hours on GPU, CPU-hours otherwise; summed from the jobs' results.json) after
    # which no new trial is launched; trials in flight finish or are pruned. null: no budget
    budget_hours: float | None = None
    # the GPU of conf/estimate/devices.yaml (h100, h200, a100, l40s) whose device-hours the sweep's
    # start-of-sweep forecast states, beside this machine's CPU (src/estimate.py's forecast for
    # trials x seeds x trainer.max_steps; it counts the model's FLOPs once on meta tensors, a few
    # seconds of CPU). null: no forecast
    forecast_gpu: str | None = "h100"
    # trials of one input stream (same seed, data, encoder, trainer) trained as heads of one job
    # over one encoder forward, this many at once (training/pool.py, sweeps/pools.py); a pool job
    # takes the next trial's head as soon as one of its heads ends. 1: one job per trial and seed
    pool_size: int = 1
    # local launcher: job slot k of n_jobs x len(seeds) gets the k-th block of the machine's GPUs and
    # cores (sweeps/local_shares.py); false: every job sees every GPU and core
    split_local_devices: bool = True
    confirm: ConfirmConf = field(default_factory=ConfirmConf)


# hydra/sweeper/sampler=<name>
SAMPLERS = {
    "tpe": TPESamplerConf,
    "random": RandomSamplerConf,
    "cmaes": CmaEsSamplerConf,
    "gp": GPSamplerConf,
    "grid": GridSamplerConf,
}


# hydra/sweeper/pruner=<name>
PRUNERS = {
    "none": NopPrunerConf,
    "median": MedianPrunerConf,
    "percentile": PercentilePrunerConf,
    "successive_halving": SuccessiveHalvingPrunerConf,
    "hyperband": HyperbandPrunerConf,
    "wilcoxon": WilcoxonPrunerConf,
    "threshold": ThresholdPrunerConf,
    "asha": AshaConf,
}

"""Settings of slotsweep's Optuna sweeper (`hydra/sweeper=optuna`) and of its samplers.

One dataclass per node, one comment per field: Hydra checks the keys at compose time
(hydra_plugins/slotsweep_sweeper/config.py registers these), and `OptunaSweep` reads the same
object, so every setting is declared once. Samplers are selected with
`hydra/sweeper/sampler=tpe|random|cmaes|gp|grid`; each names its Optuna class by `_target_`, and any
other argument of that class can be added with `+hydra.sweeper.sampler.<arg>=...`.
"""

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

__all__ = [
    "CmaEsSamplerConf",
    "GPSamplerConf",
    "GridSamplerConf",
    "OptunaSweeperConf",
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


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.slotsweep_sweeper.OptunaSweeper"
    _recursive_: bool = False  # the sampler is built by the sweeper (the grid needs the space)

    sampler: Any = MISSING  # hydra/sweeper/sampler=tpe|random|cmaes|gp|grid (default in optuna.yaml)
    # "maximize"/"minimize", or a list of them, one per key of the task's `objective`
    direction: Any = "maximize"
    # trials run to an end (completed or failed) that the study should hold; a trial cut off by a
    # killed sweeper does not count and is re-run on relaunch
    n_trials: int = 20
    # trials launched together in one batch (each runs one job per seed)
    n_jobs: int = 1
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


# hydra/sweeper/sampler=<name>
SAMPLERS = {
    "tpe": TPESamplerConf,
    "random": RandomSamplerConf,
    "cmaes": CmaEsSamplerConf,
    "gp": GPSamplerConf,
    "grid": GridSamplerConf,
}

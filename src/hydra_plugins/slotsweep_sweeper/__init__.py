"""slotsweep's Optuna sweeper as a Hydra plugin: `python src/train.py -m hydra/sweeper=optuna ...`.

Hydra only instantiates plugin classes defined under `hydra_plugins`, and imports every module here
at each start-up, so this front stays light: Optuna is imported by `slotsweep.sweeps.optuna_sweeper`
only when a sweep actually runs. The schema is in `config.py`, the behaviour in that module.
"""

import sys
from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

__all__ = ["OptunaSweeper"]


class OptunaSweeper(Sweeper):
    """Hydra Sweeper that runs an Optuna study; arguments are the fields of OptunaSweeperConf."""

    def __init__(
        self,
        sampler: DictConfig,
        direction: str | list[str],
        n_trials: int,
        n_jobs: int,
        seeds: list[int] | None,
        max_failure_rate: float,
        study_name: str | None,
        storage: str | None,
        params: dict[str, str] | None,
    ) -> None:
        self.settings = dict(
            sampler=sampler,
            direction=direction,
            n_trials=n_trials,
            n_jobs=n_jobs,
            seeds=seeds,
            max_failure_rate=max_failure_rate,
            study_name=study_name,
            storage=storage,
            params=params,
        )
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        from slotsweep.errors import SlotsweepError
        from slotsweep.sweeps.optuna_sweeper import OptunaSweep

        assert self.hydra_context is not None and self.config is not None and self.launcher is not None
        try:
            return OptunaSweep(**self.settings).run(
                arguments,
                config=self.config,
                launcher=self.launcher,
                config_loader=self.hydra_context.config_loader,
            )
        except SlotsweepError as error:
            # Bad settings or too many failed trials: one line, as the entry points print it.
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

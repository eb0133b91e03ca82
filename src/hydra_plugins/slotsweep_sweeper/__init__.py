"""slotsweep's Optuna sweeper as a Hydra plugin: `python src/train.py -m hydra/sweeper=optuna ...`.

Hydra only instantiates plugin classes defined under `hydra_plugins`, and imports every module here
at each start-up, so this front stays light: Optuna is imported by `slotsweep.sweeps.optuna_sweeper`
only when a sweep actually runs. The schema is in `config.py`, the behaviour in that module.
"""

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

__all__ = ["OptunaSweeper"]


class OptunaSweeper(Sweeper):
    """Hydra Sweeper that runs an Optuna study; arguments are the fields of OptunaSweeperConf."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings  # OptunaSweeperConf's fields, as Hydra composed them
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.task_function = task_function
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        from slotsweep.cli import exit_with_error
        from slotsweep.errors import SlotsweepError
        from slotsweep.sweeps.optuna_sweeper import OptunaSweep
        from slotsweep.sweeps.settings import OptunaSweeperConf

        assert self.hydra_context is not None and self.config is not None and self.launcher is not None
        try:
            return OptunaSweep(OptunaSweeperConf(**self.settings)).run(
                arguments,
                config=self.config,
                launcher=self.launcher,
                hydra_context=self.hydra_context,
                task_function=self.task_function,
            )
        except SlotsweepError as error:
            # Bad settings or too many failed trials: one line, as the entry points print it.
            exit_with_error(error)

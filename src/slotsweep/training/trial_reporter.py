"""TrialReporter: the training side of a sweep trial (see slotsweep.runs.trial_files).

At each validation during fit it appends the objective to the run dir's validation.jsonl, then
stops the fit if the sweeper has asked for it (the trial was pruned). Outside a sweep the file is
written all the same; nothing reads it and no stop request ever appears.
"""

from collections.abc import Callable
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from slotsweep.runs.trial_files import append_report, stop_requested

__all__ = ["TrialReporter"]


class TrialReporter(Callback):
    """Reports `objective` after each validation of fit; stops the fit on a stop request.

    After fit, `stopped` says whether it stopped on request, `last_metrics` holds the validation
    metrics it reported last (a pruned run's results), `last_step` the step they were measured at
    (None: no validation this session) and `start_step` the global step this session started from
    (after a resume: the checkpoint's).
    """

    def __init__(
        self, directory: Path, objective: list[str], cost: Callable[[L.Trainer], float] | None = None
    ) -> None:
        self.directory = Path(directory)
        self.objective = list(objective)
        self.cost = cost  # the run's device-seconds so far, reported with each value
        self.stopped = False
        self.last_metrics: dict[str, float] = {}
        self.last_step: int | None = None
        self.start_step = 0

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.start_step = trainer.global_step

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if all(key in metrics for key in self.objective):  # a dataset without masks has none
            self.last_metrics, self.last_step = metrics, trainer.global_step
            if trainer.is_global_zero:
                values = [metrics[key] for key in self.objective]
                cost = None if self.cost is None else self.cost(trainer)
                append_report(self.directory, trainer.global_step, values, cost)
        # Every DDP rank must stop at the same step, and they may see the file at different times.
        if trainer.strategy.reduce_boolean_decision(stop_requested(self.directory), all=False):
            self.stopped = True
            trainer.should_stop = True  # the fit loop ends after this step: checkpoint, results

"""One step number in every output: a value belongs to the optimizer step that produced it.

After N optimizer steps `trainer.global_step` is N: the console's step and validation lines,
validation.jsonl, results.json, checkpoint names and mask pictures all say N. Lightning's loggers
(metrics.csv, TensorBoard, W&B's `trainer/global_step`) would say N - 1 for both the N-th step's
training loss and a validation after it, because they count batches that have stepped and the
count grows only after the batch's hooks and validation have run. A metric logged under the name
"step" is the x-axis Lightning hands to every logger, so `StepAxis` logs it: N for the N-th
step's training values and for a validation after N steps.
"""

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

__all__ = ["STEP_KEY", "StepAxis"]

STEP_KEY = "step"  # Lightning's name for an explicit x-axis (it is taken out of the logged metrics)


class StepAxis(Callback):
    """Logs the step axis, and with `log_lr` each optimizer's learning rate of the step
    (`lr-<Optimizer class>`, LearningRateMonitor's name), at the step that used it."""

    def __init__(self, log_lr: bool = True) -> None:
        self.log_lr = log_lr

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, *_: Any) -> None:
        # This batch makes step N = global_step + 1, with the lr the optimizer holds now (Lightning
        # steps the scheduler before on_train_batch_end); both go out with the batch's own values.
        module.log(STEP_KEY, float(trainer.global_step + 1))
        if self.log_lr:
            for optimizer in trainer.optimizers:
                module.log(f"lr-{type(optimizer).__name__}", optimizer.param_groups[0]["lr"])

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            module.log(STEP_KEY, float(trainer.global_step), sync_dist=True)

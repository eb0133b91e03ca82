"""Lightning callbacks of the training run."""

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from slotsweep.runs.checkpoint_files import LAST, link_last
from slotsweep.training.module import NonFiniteLossError, ObjectCentricModule

__all__ = ["VerifiedCheckpoint"]


class VerifiedCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that writes one file per save, links `last.ckpt` to the newest
    (runs.checkpoint_files.link_last), and never leaves a run with only weights whose loss was NaN/inf.

    A step checkpoint holds the weights after that step's update; their loss is only seen on the next
    batch. So the step checkpoint before the newest is deleted once a batch trained from the newest
    weights ends (its loss was finite), not when the newest is written. If that loss is NaN/inf
    instead, the newest checkpoint is dropped and `last` links back to the one before.

    A fresh run also checkpoints its initial weights (step 0), so a NaN within the first
    `every_n_train_steps` steps has a finite-loss checkpoint to roll back to as well.

    Args: those of ModelCheckpoint, without `save_last` (always the link) and `save_top_k` (1: the
    newest step checkpoint, as the reference keeps).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(save_top_k=1, save_last=False, **kwargs)  # last.ckpt is our link, not a copy
        self._superseded: list[str] = []  # older step checkpoints, kept until the newest proves good

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            link_last(Path(filepath))

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        self._superseded.append(filepath)

    def _drop_superseded(self, trainer: L.Trainer) -> None:
        for path in self._superseded:
            super()._remove_checkpoint(trainer, path)
        self._superseded.clear()

    def save_final(self, trainer: L.Trainer) -> None:
        """The state at the end of fit (after its last validation, with the step a pause stopped at)
        as the newest step checkpoint, which a later resume, eval and aggregation read through
        last.ckpt; it replaces a step checkpoint of the same step, and the older one is removed."""
        path = self.format_checkpoint_name({"step": torch.tensor(trainer.global_step)})
        previous, self.best_model_path = self.best_model_path, path  # before saving: part of the state
        self._save_checkpoint(trainer, path)
        if previous and previous != path:
            super()._remove_checkpoint(trainer, previous)

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        super().on_train_start(trainer, module)
        if self.dirpath is None:
            return
        # A session killed between writing a checkpoint and verifying it leaves the older one behind;
        # a resumed session removes it like any other superseded checkpoint.
        if trainer.is_global_zero:
            for path in sorted(Path(self.dirpath).glob("*.ckpt")):
                if str(path) != self.best_model_path and path.name != LAST:
                    self._superseded.append(str(path))
        if trainer.global_step == 0:  # the initial weights: what a NaN in the first steps rolls back to
            initial = self.format_checkpoint_name(self._monitor_candidates(trainer))
            self._superseded = [path for path in self._superseded if path != initial]
            self._save_checkpoint(trainer, initial)  # every rank: saving synchronises them
            self.best_model_path = initial

    def on_train_batch_end(
        self, trainer: L.Trainer, module: ObjectCentricModule, *args: Any, **kwargs: Any
    ) -> None:
        # The module keeps its NaN flag on the device; it is read (a host sync) only on the steps
        # that decide a checkpoint: before one is written, and on the batch that proves the newest.
        save_due = self._every_n_train_steps >= 1 and trainer.global_step % self._every_n_train_steps == 0
        if self._superseded or save_due:
            module.check_finite()
        self._drop_superseded(trainer)  # this batch's loss, from the newest weights, was finite
        super().on_train_batch_end(trainer, module, *args, **kwargs)

    def on_train_end(self, trainer: L.Trainer, module: ObjectCentricModule) -> None:
        module.check_finite()  # the last steps' losses, before their weights are kept
        super().on_train_end(trainer, module)
        self._drop_superseded(trainer)

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, NonFiniteLossError) or self.dirpath is None:
            return
        if self._superseded:  # the newest checkpoint's weights gave this loss: roll back past it
            good, bad = self._superseded.pop(), self.best_model_path
            super()._remove_checkpoint(trainer, bad)
            self.best_model_path = good
            self._drop_superseded(trainer)
        if self.best_model_path and trainer.is_global_zero:
            link_last(Path(self.best_model_path))

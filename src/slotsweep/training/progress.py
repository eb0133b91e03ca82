"""Training progress for a terminal (a bar over max_steps) or for a log file (plain lines).

Training length is set by steps and the loader is re-iterated, so Lightning's per-epoch bar counts
one pass over the clips (e.g. 62 batches) and never the run's total. On a terminal the bar counts
optimizer steps up to `trainer.max_steps`. When stdout or stderr is not a terminal (SLURM, nohup,
CI, `| tee`) a redrawn bar is kilobytes of carriage returns, so plain lines replace it: one every
`trainer.log_every_n_steps` steps and one per validation.
"""

import datetime
import logging
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import _update_n
from lightning.pytorch.trainer.states import TrainerFn

from slotsweep.metric_names import METRICS, val_key

__all__ = ["PlainProgress", "StepProgressBar", "progress_callbacks"]

log = logging.getLogger(__name__)
# What a step line repeats of the last validation: the loss and the progress-bar metrics (the
# validation line itself has every value); a SLURM log of a long run stays short.
STEP_LINE_KEYS = ("val/loss", *(val_key(name) for name, spec in METRICS.items() if spec.prog_bar))


def progress_callbacks(enabled: bool, every_n_steps: int) -> list[Callback]:
    """The progress callback for this process's output: a bar on a terminal, else plain lines."""
    if not enabled:
        return []
    if sys.stdout.isatty() and sys.stderr.isatty():
        return [StepProgressBar()]
    return [PlainProgress(every_n_steps)]


class StepProgressBar(TQDMProgressBar):
    """Lightning's terminal bar, counting optimizer steps over the whole run (resumed ones included)."""

    def on_train_start(self, trainer: L.Trainer, *_: Any) -> None:
        super().on_train_start(trainer)
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps)
        bar.initial = trainer.global_step
        bar.set_description("train")

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        pass  # an epoch is one pass over the clips, not a unit of this run's length

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *_: Any) -> None:
        bar = self.train_progress_bar
        if self._should_update(trainer.global_step, bar.total):
            _update_n(bar, trainer.global_step)
            bar.set_postfix(self.get_metrics(trainer, module))


def _values(metrics: dict[str, Any], prefix: str, keys: tuple[str, ...] | None = None) -> str:
    """`k=v` for the metrics under `prefix` (only `keys` of them, when given)."""
    chosen = sorted(k for k in metrics if k.startswith(prefix) and (keys is None or k in keys))
    return " ".join(f"{k}={float(metrics[k]):.4g}" for k in chosen)


class PlainProgress(Callback):
    """Progress as log lines, for files: `step 500/1500 | 2.41 steps/s | ETA 0:06:55 | train/loss=...
    | last val/...` (STEP_LINE_KEYS), and `validation at step N: val/...` (every value) after each
    validation (`final validation` for the one after training). Rank 0 only.

    Args:
        every_n_steps: a line every this many optimizer steps (and at the last step).
    """

    def __init__(self, every_n_steps: int) -> None:
        self.every_n_steps = max(1, every_n_steps)
        self._start: tuple[float, int] = (time.monotonic(), 0)  # (clock, step) when this session began
        self._last_val = ""

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._start = (time.monotonic(), trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, *_: Any) -> None:
        step, total = trainer.global_step, trainer.max_steps
        if not trainer.is_global_zero or (step % self.every_n_steps and step != total):
            return
        clock, first = self._start
        rate = (step - first) / max(time.monotonic() - clock, 1e-9)
        eta = datetime.timedelta(seconds=round((total - step) / rate)) if rate > 0 else "?"
        losses = _values(trainer.callback_metrics, "train/")
        last_val = f" | last {self._last_val}" if self._last_val else ""
        log.info(f"step {step}/{total} | {rate:.2f} steps/s | ETA {eta} | {losses}{last_val}")

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        self._last_val = _values(metrics, "val/", STEP_LINE_KEYS)
        final = "" if trainer.state.fn == TrainerFn.FITTING else "final "  # trainer.validate after fit
        log.info(f"{final}validation at step {trainer.global_step}: {_values(metrics, 'val/')}")

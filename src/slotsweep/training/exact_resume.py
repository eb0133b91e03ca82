"""Stopping at a given step and resuming from there as if the run had never stopped.

A sweep that pauses a trial at a rung and promotes it later (slotsweep.sweeps.promotion) needs the
two-segment run to equal the uninterrupted one, bit for bit. Three things make it so:

- Model randomness (slot initialisation, dropout) draws from the process's global generators. Their
  state after each training step is kept by `ExactResume` and stored in every checkpoint; a resumed
  session restores it just before its first training step.
- Validation leaves the training generators as it found them (it runs on a fork of their state), so
  the stream of training draws does not depend on where or how often a run validates, nor on the
  validation a pause adds at its step.
- Data randomness (the shuffle, random windows and flips) draws from a generator of its own, seeded
  per epoch from the run's seed (`EpochStream`), never from the global one. An epoch's batches are
  then a function of (seed, epoch) alone, and a session that starts inside an epoch draws that
  epoch's first batches again and drops them (the data loading of up to one epoch, no training).

Exact for single-process training (one device, as a sweep's trials run). Data loader worker
processes draw from seeds taken from the epoch's generator, so they are exact too, except that
persistent workers carry their generators across epochs: a resume in a later epoch than the first
gives them fresh ones (same distribution, other draws). Under DDP Lightning replaces the sampler
with its distributed one and the epoch stream is not used: that resume restarts the epoch's data.
"""

import contextlib
import random
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from slotsweep.errors import SlotsweepError

__all__ = ["EpochStream", "ExactResume", "StopAtStep", "kept_global_rng", "use_epoch_stream"]


def _global_rng_state() -> dict[str, Any]:
    """The global generators' state, as tensors and numbers only: checkpoints are read without
    unpickling arbitrary objects (SafeCheckpointIO), which numpy arrays would need."""
    name, keys, position, has_gauss, cached_gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gauss],
        "python": [version, torch.tensor(internal, dtype=torch.int64), gauss_next],
    }


def _set_global_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, position, has_gauss, cached_gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal.tolist()), gauss_next))


@contextlib.contextmanager
def kept_global_rng() -> Iterator[None]:
    """Whatever the block draws from the global generators, they hold their state from before it
    afterwards (a pool builds a joining head without moving the other heads' draws)."""
    state = _global_rng_state()
    try:
        yield
    finally:
        _set_global_rng_state(state)


class ExactResume(Callback):
    """Keeps the global generators' state after each training step in the checkpoints, restores it
    on resume, and runs validation on a fork of it (see the module docstring)."""

    def __init__(self) -> None:
        self._after_step: dict[str, Any] | None = None  # state after the newest training step
        self._to_restore: dict[str, Any] | None = None  # loaded from the checkpoint resumed from
        self._around_validation: dict[str, Any] | None = None

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._to_restore is not None:  # after the sanity check, before the first step
            _set_global_rng_state(self._to_restore)
            self._after_step, self._to_restore = self._to_restore, None

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        # Before ModelCheckpoint (Lightning runs checkpoint callbacks last) and before validation.
        self._after_step = _global_rng_state()

    def on_validation_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._around_validation = _global_rng_state()

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._around_validation is not None:
            _set_global_rng_state(self._around_validation)
            self._around_validation = None

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self._after_step} if self._after_step is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = state_dict.get("rng")


class StopAtStep(Callback):
    """Ends fit once `step` training steps are done (a pause: the task checkpoints and exits).

    Lightning validates at the step a fit is stopped at, so the pause step always has a validation.
    """

    def __init__(self, step: int) -> None:
        self.step = step
        self.stopped = False

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.global_step >= self.step:
            self.stopped = True
            trainer.should_stop = True


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + 12_345) % (2**63)


class EpochStream:
    """The batches of one epoch of `loader`, drawn with a generator seeded from (seed, epoch), the
    first `skip` of them drawn and dropped.

    Around each draw the global torch generator holds the epoch's data state and gets the caller's
    back after it, so datasets that draw from torch's global generator keep working unchanged.

    Args:
        loader: the train DataLoader (iterated with its own sampler, workers and collate).
        seed, epoch: which stream.
        skip: batches of the epoch already trained by an earlier session.
    """

    def __init__(self, loader: DataLoader, seed: int, epoch: int, skip: int) -> None:
        self.loader, self.skip = loader, skip
        generator = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
        self.state = generator.get_state()

    def _draw(self, get: Callable[[], Any]) -> Any:
        caller = torch.get_rng_state()
        torch.set_rng_state(self.state)
        try:
            return get()
        finally:
            self.state = torch.get_rng_state()
            torch.set_rng_state(caller)

    def __iter__(self) -> Iterator[Any]:
        iterator = self._draw(lambda: iter(DataLoader.__iter__(self.loader)))
        for _ in range(self.skip):
            self._draw(lambda: next(iterator))
        while True:
            try:
                batch = self._draw(lambda: next(iterator))
            except StopIteration:
                return
            yield batch


class _SteppedLoader(DataLoader):
    """The train DataLoader whose iteration is an EpochStream at the trainer's position.

    Made by swapping the class of the datamodule's loader (`use_epoch_stream`): Lightning still sees
    a DataLoader (its checks, its DDP sampler replacement, which rebuilds a plain-iterating copy).
    """

    _stream_seed: int
    _position: Callable[[], int]  # training batches done so far (global step x accumulation)

    def __iter__(self) -> Iterator[Any]:
        if not hasattr(self, "_position"):  # a copy Lightning rebuilt (DDP): plain iteration
            return super().__iter__()
        batches = len(self)
        done = self._position()
        # Lightning asks for a new iterator at the start of each epoch, and once at the start of fit.
        return iter(EpochStream(self, self._stream_seed, done // batches, done % batches))


def _n_batches(loader: DataLoader) -> int:
    """len(loader), or 0 where it has none: a DataLoader over an IterableDataset without __len__
    (the shard streams) raises TypeError on len()."""
    try:
        return len(loader)
    except TypeError:
        return 0


def use_epoch_stream(
    datamodule: L.LightningDataModule, trainer: L.Trainer, seed: int, start_step: int = 0
) -> None:
    """Make the datamodule's train loader iterate as EpochStreams of `seed` at `trainer`'s step,
    the stream entered at `start_step` (a trial pool's head that joined a running stream, and a
    solo run of its config: `stream_start_step`)."""
    make_loader = datamodule.train_dataloader

    def train_dataloader() -> Any:
        loader = make_loader()
        if type(loader) is not DataLoader or not _n_batches(loader):  # an iterable stream: left as it is
            if start_step:
                raise SlotsweepError(
                    f"stream_start_step={start_step}: this dataset's train loader is a stream "
                    "without a length, which cannot be entered at a step; use stream_start_step=0"
                )
            return loader
        loader.__class__ = _SteppedLoader
        loader._stream_seed = seed
        accumulate = trainer.accumulate_grad_batches
        loader._position = lambda: (start_step + trainer.global_step) * accumulate
        return loader

    datamodule.train_dataloader = train_dataloader

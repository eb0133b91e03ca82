"""Checkpoint files that survive a kill: written whole or not at all, one file per save, and a
resume that skips a damaged one.

A SIGKILL (preemption, OOM) during `torch.save` leaves half a file; written to a temporary name
and renamed, a checkpoint is either the old one or the new one. A file damaged some other way
(a full disk, a copy cut short) is found by its zip checksums before Lightning loads it.

Each save is one step file (`step<N>.ckpt`); `last.ckpt` is a relative symbolic link to the newest,
swapped in by a rename too, so it names a whole file at every moment and costs no second copy.
"""

import logging
import os
import zipfile
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.types import _PATH
from omegaconf import DictConfig, OmegaConf

from slotsweep.errors import SlotsweepError
from slotsweep.runs.safe_load import load_file

__all__ = [
    "LAST_CHECKPOINT",
    "AtomicCheckpointIO",
    "SafeCheckpointIO",
    "is_readable",
    "link_last",
    "load_run_config",
    "resume_checkpoint",
]

log = logging.getLogger(__name__)
LAST = "last.ckpt"
LAST_CHECKPOINT = f"checkpoints/{LAST}"  # in the run dir: what resume, eval and aggregation read


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def _replace(tmp: Path, path: Path) -> None:
    with tmp.open("rb") as f:
        os.fsync(f.fileno())  # on disk before the rename makes it the checkpoint
    os.replace(tmp, path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch.save checkpoints, through a temporary file and an atomic rename."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temporary(path)
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            _replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def link_last(checkpoint: Path) -> Path:
    """Point `last.ckpt` beside `checkpoint` at it (a relative link: a copied run dir keeps it);
    the link is made under a temporary name and renamed over the old one. Returns the link."""
    checkpoint = Path(checkpoint)
    last = checkpoint.with_name(LAST)
    tmp = _temporary(last)
    tmp.unlink(missing_ok=True)
    try:
        tmp.symlink_to(checkpoint.name)
        os.replace(tmp, last)
    finally:
        tmp.unlink(missing_ok=True)
    return last


def is_readable(path: Path) -> bool:
    """A whole torch zip checkpoint: its central directory is there and every member's CRC holds."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError):
        return False


def resume_checkpoint(directory: Path) -> Path | None:
    """What a run resumes from: `last.ckpt`, or, when it is unreadable, the newest readable step
    checkpoint (with a warning); None for a fresh run. Temporary files a kill left are removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    for leftover in directory.glob(".*.tmp*"):
        leftover.unlink(missing_ok=True)
    last = directory / LAST
    steps = sorted((p for p in directory.glob("*.ckpt") if p.name != LAST), reverse=True)
    candidates = ([last] if last.exists() else []) + steps
    for path in candidates:
        if is_readable(path):
            if path != last and last.exists():
                log.warning(f"{last} is unreadable (cut short or damaged): resuming from {path} instead")
            return path
    if candidates:
        raise SlotsweepError(
            f"no readable checkpoint in {directory} ({', '.join(p.name for p in candidates)} are damaged): "
            "pass force=true to set the run aside and start over"
        )
    return None


class SafeCheckpointIO(AtomicCheckpointIO):
    """Lightning's checkpoint IO, saving atomically (AtomicCheckpointIO) and loading through
    `load_file`: trainer.fit(ckpt_path=...) (resume) never unpickles arbitrary code. Lightning's
    own checkpoints hold only tensors, numbers, strings and plain containers, so they load with
    weights_only=True."""

    def __init__(self, allow_pickle: bool = False) -> None:
        super().__init__()
        self.allow_pickle = allow_pickle

    def load_checkpoint(self, path: _PATH, map_location: Any = None, weights_only: bool | None = None) -> Any:
        # weights_only from Lightning is ignored: allow_pickle decides, so no caller can turn it off.
        return load_file(path, "checkpoint", self.allow_pickle)


def load_run_config(
    ckpt: str | Path, config: str | Path | None = None, allow_pickle: bool = False
) -> DictConfig:
    """The resolved training config of a checkpoint: `config` (a config.yaml) when given, else the
    one the checkpoint carries (ObjectCentricModule stores it), so a checkpoint alone rebuilds its
    model wherever it was copied. allow_pickle: as in slotsweep.runs.safe_load.load_file."""
    if not Path(ckpt).is_file():  # also with config=: before a model is built
        raise SlotsweepError(f"ckpt={ckpt} does not exist: check the path")
    if config is not None:
        if not Path(config).is_file():
            raise SlotsweepError(f"config={config} does not exist: pass a run's config.yaml, or null")
        return OmegaConf.load(config)
    stored = load_file(ckpt, "ckpt", allow_pickle).get("slotsweep", {}).get("config")
    if stored is None:
        raise SlotsweepError(
            f"ckpt={ckpt} carries no training config (a reference checkpoint, or one written before "
            "checkpoints stored it): pass config=<its run's config.yaml>"
        )
    return OmegaConf.create(stored)

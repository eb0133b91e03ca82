"""Frozen-feature cache: the encoder's outputs for every stored clip, computed once, read by every run.

The encoder is frozen, so its outputs for a frame never change: a sweep of 100 trials need not run
the ViT over the same frames 100 times. With `encoder.cache=true` (or a directory) the task builder
encodes each split once and the datamodule then yields `features` and `keys` (T, P, D) float16
instead of `video`; the model skips its encoder (`ObjectCentricModel.forward(features=...)`).

What is cached, per split: block-N tokens and attention keys of every frame of every stored clip,
as float16 (N, V, T, P, D) arrays, V = 2 when the split flips clips at random (dataset.hflip=true):
flipping ViT tokens is not exact (each patch's content flips inside the patch), so the flipped
frames are encoded too, and a flipped sample reads the flipped variant: the same augmentation as
from images, at twice the build time and disk. A random window of frames reads those frames of the
stored clip, which is exact. Not cached: anything a datamodule does at random to the pixels beyond
picking frames and flipping (no such datamodule offers a cache).

Identity: a directory `<root>/<split>-<digest>/` per split, the digest a hash of everything that
decides the features: the dataset's content and deterministic transform (from the datamodule), the
split's flipping, the encoder config (the weights path left out) and a hash of the encoder's weights
(whatever their source), the timm and torch versions, and the storage format. Another setting is
another directory; the manifest inside repeats the full description and is checked on every load.

Concurrency: a directory appears complete or not at all (written under a temporary name, then
renamed), and builders of the same directory take turns on a lock file, so parallel sweep trials
build it once and the others wait, then read it.

The datamodule side is two methods, implemented by `slotsweep.data.shapes.ShapesDataModule`:
- `feature_cache_sources() -> dict[str, ClipSource]`: what to encode, per split;
- `use_feature_cache(stores: dict[str, FeatureStore])`: from now on, read features from these.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from slotsweep.errors import SlotsweepError
from slotsweep.lean_timm import timm
from slotsweep.models.encoder import ViTEncoder

__all__ = [
    "ClipSource",
    "FORMAT_VERSION",
    "FeatureStore",
    "attach_feature_cache",
    "cache_root",
    "cached_split",
    "encoder_identity",
]

log = logging.getLogger(__name__)

# Bump when what is stored or how it is laid out changes: older directories then get another digest.
FORMAT_VERSION = 1
_DTYPE = np.float16  # half the bytes of float32; DINO block outputs stay far inside its range
_ARRAYS = ("features", "keys")
MANIFEST = "manifest.json"
_NOT_FROZEN = (
    "encoder.cache needs a frozen encoder (its outputs are computed once): set encoder.frozen=true "
    "or encoder.cache=null"
)


class ClipSource(NamedTuple):
    """What a datamodule offers the cache for one split.

    identity: JSON-able description of everything that decides the encoder's input frames: the
        dataset's content and its deterministic transform (resolution, normalisation), not the
        random augmentation.
    clips: item i is {"video": (T, 3, H, W) float32}: every frame of stored clip i, transformed
        deterministically, unflipped.
    hflip: the split flips whole clips horizontally at random; the flipped frames are encoded too.
    """

    identity: dict[str, Any]
    clips: Dataset
    hflip: bool


class FeatureStore:
    """One split's cached encoder outputs, memory-mapped (opened lazily in each loader worker).

    Args:
        directory: a complete cache directory (manifest + arrays).
        spec: the description the caller expects; a manifest that says otherwise is an error.
    """

    def __init__(self, directory: Path, spec: dict[str, Any]) -> None:
        self.directory = Path(directory)
        manifest_path = self.directory / MANIFEST
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as err:
            raise SlotsweepError(
                f"feature cache {self.directory} has no readable {MANIFEST} ({err}); delete the "
                "directory to rebuild it"
            ) from err
        expected = _normalised(spec)
        if manifest.get("spec") != expected:
            differing = sorted(k for k in expected if manifest.get("spec", {}).get(k) != expected[k])
            raise SlotsweepError(
                f"feature cache {self.directory} was made for another setting (differs in "
                f"{differing or 'keys'}); delete the directory, or point encoder.cache elsewhere"
            )
        self.shape = tuple(manifest["shape"])  # (N, V, T, P, D)
        self._arrays: dict[str, np.ndarray] | None = None
        self._open()  # fail now, not in a worker, if an array is missing or truncated

    def _open(self) -> dict[str, np.ndarray]:
        arrays = {}
        for name in _ARRAYS:
            path = self.directory / f"{name}.npy"
            try:
                array = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as err:
                raise SlotsweepError(
                    f"feature cache file {path} is unreadable ({err}); delete {self.directory} to rebuild it"
                ) from err
            if array.shape != self.shape or array.dtype != _DTYPE:
                raise SlotsweepError(
                    f"feature cache file {path} is {array.dtype} {array.shape}, its manifest says "
                    f"{np.dtype(_DTYPE)} {self.shape}; delete {self.directory} to rebuild it"
                )
            arrays[name] = array
        self._arrays = arrays
        return arrays

    def __getstate__(self) -> dict:
        # Send the path, not the mapped arrays, to spawned workers; each maps the files itself.
        return {**self.__dict__, "_arrays": None}

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def n_variants(self) -> int:
        """V: 2 when flipped frames are stored too, else 1."""
        return self.shape[1]

    def read(self, index: int, frames: slice, flipped: bool = False) -> dict[str, Tensor]:
        """{"features", "keys"}: (t, P, D) float16 for frames `frames` of clip `index`."""
        if flipped and self.n_variants < 2:
            raise ValueError(f"{self.directory} holds no flipped frames (built without hflip)")
        arrays = self._arrays if self._arrays is not None else self._open()
        # np.array copies out of the read-only map, which torch refuses to wrap
        return {k: torch.from_numpy(np.array(a[index, int(flipped), frames])) for k, a in arrays.items()}


def cache_root(setting: bool | str | None, data_dir: str | Path, frozen: bool) -> Path | None:
    """Where `encoder.cache` puts caches: None when off, <data_dir>/features for true, else the path.

    Checks the setting first, so that a bad one fails before the encoder loads.
    """
    if setting is None or setting is False:
        return None
    if not frozen:
        raise SlotsweepError(_NOT_FROZEN)
    if setting is True:
        return Path(data_dir) / "features"
    if isinstance(setting, str) and setting:
        return Path(setting)
    raise SlotsweepError(
        f"encoder.cache={setting!r} is invalid: use null (off), true (<paths.data_dir>/features) "
        "or a directory"
    )


def encoder_identity(encoder: ViTEncoder, config: dict[str, Any]) -> dict[str, Any]:
    """What decides the encoder's outputs: its config, a hash of its weights, timm and torch versions.

    Args:
        encoder: the built encoder; its state dict is hashed, so hub weights, a local file and a
            seeded random init are all told apart by content, not by name.
        config: the encoder's config (`encoder.*`), without `cache`; `weights` (a path, which may
            differ between machines for the same file) is left out.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy())  # the raw bytes, for any dtype
    return {
        "config": {k: v for k, v in config.items() if k not in ("cache", "weights")},
        "weights_sha256": digest.hexdigest(),
        "timm": timm.__version__,
        "torch": torch.__version__.split("+")[0],  # the CPU and CUDA builds compute the same features
    }


def _normalised(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as JSON gives it back (tuples become lists), so a stored one compares equal."""
    return json.loads(json.dumps(spec, sort_keys=True))


def _digest(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(_normalised(spec), sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing); other builders wait here."""
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as err:  # some network file systems have no locks: builds may then overlap,
            log.warning("no lock on %s (%s): parallel builders may each encode it", path, err)
        yield  # the lock goes with the file's closing


def cached_split(
    encoder: ViTEncoder,
    source: ClipSource,
    split: str,
    root: Path,
    encoder_config: dict[str, Any],
    device: str | torch.device = "cpu",
    batch_frames: int = 64,
) -> FeatureStore:
    """The split's store under `root`, encoding it first if no complete one exists.

    Args:
        encoder: the frozen encoder (moved to `device` for the build, then back).
        source: the datamodule's clips and description of this split.
        split: its name ("train", "val").
        root: directory that holds cache directories (shared by runs and sweep trials).
        encoder_config: the encoder's config, for `encoder_identity`.
        device: where to encode.
        batch_frames: frames per encoder call.
    """
    if not encoder.frozen:
        raise SlotsweepError(_NOT_FROZEN)
    spec = {
        "format_version": FORMAT_VERSION,
        "dtype": np.dtype(_DTYPE).name,
        "split": split,
        "data": source.identity,
        "hflip": source.hflip,
        "encoder": encoder_identity(encoder, encoder_config),
    }
    directory = Path(root) / f"{split}-{_digest(spec)}"
    if not (directory / MANIFEST).is_file():
        directory.parent.mkdir(parents=True, exist_ok=True)
        with _lock(directory.with_name(f".{directory.name}.lock")):
            if not (directory / MANIFEST).is_file():  # nobody built it while we waited
                # forked: a run that builds the cache draws the same random numbers afterwards
                # as one that finds it (the loader draws a seed)
                with torch.random.fork_rng(devices=[]):
                    _build(encoder, source, spec, directory, torch.device(device), batch_frames)
    return FeatureStore(directory, spec)


def _build(
    encoder: ViTEncoder,
    source: ClipSource,
    spec: dict[str, Any],
    directory: Path,
    device: torch.device,
    batch_frames: int,
) -> None:
    """Encode every clip (and its flip) into a temporary directory, then rename it into place."""
    start = time.perf_counter()
    N, V = len(source.clips), 2 if source.hflip else 1
    T = source.clips[0]["video"].shape[0]
    P, D = encoder.n_patches, encoder.feat_dim
    shape = (N, V, T, P, D)
    mib = 2 * np.prod(shape) * np.dtype(_DTYPE).itemsize / 2**20
    flip_note = " and their horizontal flips (dataset.hflip=true)" if V == 2 else ""
    split = spec["split"]
    log.info(f"feature cache: encoding {N} {split} clips of {T} frames{flip_note} ({mib:.0f} MiB)")
    tmp = directory.with_name(f".{directory.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()
    home = next(encoder.parameters()).device
    try:
        arrays = {
            name: np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=_DTYPE, shape=shape)
            for name in _ARRAYS
        }
        loader = DataLoader(source.clips, batch_size=max(1, batch_frames // (T * V)))
        encoder.to(device)
        first = 0
        with torch.no_grad():
            for batch in loader:
                video = batch["video"]  # (b, T, 3, H, W)
                b = len(video)
                for variant in range(V):
                    frames = (video.flip(-1) if variant else video).flatten(0, 1).to(device)
                    out = encoder(frames)  # (b·T, P, D) each
                    for name, value in (("features", out.features), ("keys", out.keys)):
                        arrays[name][first : first + b, variant] = _to_storage(name, value, (b, T, P, D))
                first += b
        for array in arrays.values():
            array.flush()
        del arrays
        manifest = {
            "spec": _normalised(spec),
            "shape": list(shape),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": socket.gethostname(),
            "build_seconds": round(time.perf_counter() - start, 1),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        try:
            os.rename(tmp, directory)  # atomic: readers see a complete directory or none
        except OSError as err:
            if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            log.info(f"feature cache: {directory} was completed by another process meanwhile")
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        encoder.to(home)
    log.info(f"feature cache: {directory} built in {time.perf_counter() - start:.1f}s")


def _to_storage(name: str, value: Tensor, shape: tuple[int, ...]) -> np.ndarray:
    """(b·T, P, D) encoder output -> (b, T, P, D) float16 numpy, refusing values float16 cannot hold."""
    peak = float(value.abs().amax())
    if not peak < float(np.finfo(_DTYPE).max):  # also NaN
        raise SlotsweepError(
            f"encoder {name} reach {peak:g}, beyond float16's range: this encoder's outputs cannot "
            "be cached; set encoder.cache=null"
        )
    return value.reshape(shape).to(torch.float16).cpu().numpy()


def attach_feature_cache(
    datamodule: Any,
    encoder: ViTEncoder,
    root: Path,
    encoder_config: dict[str, Any],
    device: str | torch.device = "cpu",
) -> dict[str, FeatureStore]:
    """Encode (or find) every split the datamodule offers and make it read features from them.

    Args:
        datamodule: implements `feature_cache_sources()` and `use_feature_cache(stores)`.
        encoder, root, encoder_config, device: as in :func:`cached_split`.
    Returns:
        {split: store}.
    """
    if not hasattr(datamodule, "feature_cache_sources"):
        raise SlotsweepError(
            f"encoder.cache is not supported by {type(datamodule).__name__} (it has no "
            "feature_cache_sources()); set encoder.cache=null"
        )
    stores = {
        split: cached_split(encoder, source, split, root, encoder_config, device)
        for split, source in datamodule.feature_cache_sources().items()
    }
    datamodule.use_feature_cache(stores)
    return stores

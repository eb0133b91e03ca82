"""Frozen-feature cache: the encoder's outputs for every stored clip, computed once, read by every run.

The encoder is frozen, so its outputs for a frame never change: a sweep of 100 trials need not run
the ViT over the same frames 100 times. With `cache=true` the task builder encodes each split once
(into `paths.features_dir`) and the datamodule then yields `features` and `keys` (T, P, D) float16
instead of `video`; the model skips its encoder (`ObjectCentricModel.forward(features=...)`).

What is cached, per split: block-N tokens and attention keys of every frame of every stored clip
in each of its V *views*, as float16. A view is one of the finite set of deterministic images a
datamodule makes of a frame: a crop position and a flip. Flipping ViT tokens is not exact (each
patch's content flips inside the patch), nor is cropping them, so every view is encoded, and a
sample reads the view its random draw picked: the same augmentation as from images, at V times the
build time and disk. A random window of frames reads those frames of the stored clip, which is
exact. What a datamodule cannot reduce to a finite set of views (a crop at any offset) it cannot
serve from the cache, and it says which setting makes the set finite.

What is stored follows the losses: the block-N tokens always (the grouper's input), the keys only
when a loss reads them (`reads_keys`: `loss=dinosaur` never does, half of a float16 cache). Two
formats (`cache=true` or `cache=float16`, and `cache=int8`): float16 as the encoder gives it, or
int8 with one float16 scale per token (its largest magnitude / 127), the keys L2-normalised first
(the similarity target reads only their cosines). int8 is half the disk and page cache; a read
dequantises to float16 in the loader worker, so the batch is float16 either way. The deviation
of the losses against float16 is stated in docs/sweeps.md ("Feature cache") and tested.

Before a build: the size (frames x views x bytes per frame-view) and the free space under the
root are printed, and a build that would not fit is refused with one line, before anything is
written (`check_fits`).

Identity: a directory `<root>/<split>-<digest>/` per split, the digest a hash of everything that
decides the features: the dataset's content and deterministic transform (from the datamodule), its
views, the encoder config (the weights path left out) and a hash of the encoder's weights (whatever
their source), the timm and torch versions, and the storage format. Another setting is another
directory; the manifest inside repeats the full description and is checked on every load. Where
the directories live (`paths.features_dir`) is no part of the identity.

Concurrency: a directory appears complete or not at all (written under a temporary name, then
renamed), and builders of the same directory take turns on a lock file, so parallel sweep trials
build it once and the others wait, then read it. Where the file system has no working `flock`
(Lustre mounted `noflock`), the lock is a directory made with `mkdir` (atomic on every file
system, NFS and Lustre included) holding its owner's host and pid; a waiter takes over a lock whose
owner died on its own host, and names the lock to delete when the owner is on another host.

The datamodule side is the `CachedClipSource` protocol: `feature_cache_sources()` says what to
encode, per split, and `use_feature_cache(stores)` switches the loaders to the stores. This module
knows no dataset and no model class: the encoder is any `FrameEncoder` the task builder hands in.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import socket
import time
import uuid
import weakref
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from slotsweep.errors import SlotsweepError

__all__ = [
    "CachedClipSource",
    "ClipSource",
    "ClipViews",
    "FORMAT_VERSION",
    "FeatureStore",
    "FrameEncoder",
    "STORAGE_DTYPES",
    "attach_feature_cache",
    "bytes_per_frame_view",
    "cache_size",
    "cached_split",
    "check_fits",
    "encoder_identity",
    "feature_cache_sources",
    "storage_dtype",
    "stored_arrays",
    "weights_sha256",
]

log = logging.getLogger(__name__)

# Bump when what is stored or how it is laid out changes: older directories then get another digest.
FORMAT_VERSION = 3
STORAGE_DTYPES = ("float16", "int8")  # float16: half of float32; DINO block outputs stay far inside its range
_SCALE = np.float16  # int8's per-token scale
MANIFEST = "manifest.json"
CLIPS = "clips.json"
_NOT_FROZEN = (
    "cache=true needs a frozen encoder (its outputs are computed once): "
    "set encoder.frozen=true or cache=false"
)


class FrameEncoder(Protocol):
    """What the cache needs of an encoder (slotsweep.models.encoder.ViTEncoder is one)."""

    frozen: bool
    n_patches: int  # P
    feat_dim: int  # D

    def __call__(self, images: Tensor) -> Any:
        """images (B, 3, H, W) -> an output with `features` and `keys`, each (B, P, D)."""

    def state_dict(self) -> Mapping[str, Tensor]: ...

    def parameters(self) -> Iterator[torch.nn.Parameter]: ...

    def to(self, device: torch.device) -> Any: ...


class ClipViews(NamedTuple):
    """One stored clip as the cache encodes it.

    views: (V, T, 3, S, S) float32, every view of every frame, transformed deterministically.
    meta: JSON-able facts the datamodule reads back to serve samples without the pixels (which
        shard or file the clip came from, its frame size); the store adds `n_frames` = T.
    """

    views: Tensor
    meta: dict[str, Any]


class ClipSource(NamedTuple):
    """What a datamodule offers the cache for one split.

    identity: JSON-able description of everything that decides the views' pixels: the dataset's
        content and its deterministic transform (resolution, normalisation, the views), not the
        random draws.
    clips: every stored clip of the split, in a fixed order (read lazily: only a build iterates).
    n_views: V, views per frame (e.g. 2: unflipped and flipped).
    n_frames: F, frames of all its clips, known without decoding them (for the size estimate).
    """

    identity: dict[str, Any]
    clips: Iterable[ClipViews]
    n_views: int
    n_frames: int


@runtime_checkable
class CachedClipSource(Protocol):
    """A datamodule that the feature cache can serve (the datamodule contract's cache part)."""

    def feature_cache_sources(self, stage: str | None = None) -> dict[str, ClipSource]:
        """{split: source} of every split its loaders read at `stage` (Lightning's; None = all),
        after `setup(stage)`; raises SlotsweepError (naming the dataset key to set) when its
        augmentation has no finite set of views."""

    def use_feature_cache(self, stores: dict[str, FeatureStore]) -> None:
        """From now on, yield {"features"(, "keys")} read from `stores` ({split: store}) instead of
        "video"; every other batch entry (masks, rgb) stays as it was."""


def storage_dtype(cache: Any) -> str | None:
    """The storage format the `cache` key asks for: None (off), "float16" or "int8".

    `cache=true` is float16 (the format before int8 existed, so its runs keep their exp_ids).
    """
    if cache is False or cache is None:
        return None
    if cache is True:
        return "float16"
    if cache in STORAGE_DTYPES:
        return cache
    raise SlotsweepError(f"cache={cache} is not a cache setting: give false, true (float16) or int8")


def stored_arrays(losses: Iterable[Any]) -> tuple[str, ...]:
    """Which encoder outputs the cache stores for these losses: the tokens always (the grouper
    reads them), the keys when a loss reads them (its `reads_keys`; a loss without the attribute
    is assumed to read them, which only costs disk)."""
    reads_keys = any(getattr(loss, "reads_keys", True) for loss in losses)
    return ("features", "keys") if reads_keys else ("features",)


def _files(name: str, dtype: str) -> dict[str, tuple[np.dtype, int]]:
    """{file name: (numpy dtype, trailing dims: 1 = per channel (F, V, P, D), 0 = per token (F, V, P))}."""
    if dtype == "float16":
        return {f"{name}.f16": (np.dtype(np.float16), 1)}
    return {f"{name}.i8": (np.dtype(np.int8), 1), f"{name}.scale.f16": (np.dtype(_SCALE), 0)}


def _file_shape(shape: tuple[int, ...], per_channel: int) -> tuple[int, ...]:
    return shape if per_channel else shape[:-1]


def bytes_per_frame_view(n_patches: int, feat_dim: int, dtype: str, arrays: tuple[str, ...]) -> int:
    """Bytes one frame in one view takes on disk: P x D values (and P scales for int8) per array."""
    total = 0
    for name in arrays:
        for file_dtype, per_channel in _files(name, dtype).values():
            total += n_patches * (feat_dim if per_channel else 1) * file_dtype.itemsize
    return total


def cache_size(
    n_frames: int, n_views: int, n_patches: int, feat_dim: int, dtype: str, arrays: tuple[str, ...]
) -> int:
    """Bytes of a split's cache: frames x views x bytes per frame-view."""
    return n_frames * n_views * bytes_per_frame_view(n_patches, feat_dim, dtype, arrays)


def _free_bytes(root: Path) -> tuple[Path, int]:
    """(the nearest existing directory at or above `root`, its free bytes for this user)."""
    existing = Path(root).absolute()
    while not existing.exists():
        existing = existing.parent
    return existing, shutil.disk_usage(existing).free


def check_fits(root: Path, split: str, n_frames: int, n_views: int, frame_view_bytes: int) -> None:
    """Print the split's cache size and the free space under `root`; raise (one line naming
    paths.features_dir) when it does not fit. Writes nothing: `root` may not exist yet."""
    size = n_frames * n_views * frame_view_bytes
    where, free = _free_bytes(root)
    log.info(
        f"feature cache: {split} needs {n_frames} frames x {n_views} views x {frame_view_bytes} B = "
        f"{_human(size)}; {_human(free)} free at {where}"
    )
    if size > free:
        raise SlotsweepError(
            f"paths.features_dir={root}: the {split} cache needs {_human(size)} ({n_frames} frames x "
            f"{n_views} views x {frame_view_bytes} B) and {where} has {_human(free)} free; point "
            "paths.features_dir at a larger file system, store it compactly (cache=int8), or set cache=false"
        )


def _human(n_bytes: int) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= size:
            return f"{n_bytes / size:.2f} {unit}"
    return f"{n_bytes} B"


class FeatureStore:
    """One split's cached encoder outputs, memory-mapped (opened lazily in each loader worker).

    Frames of all clips lie one after another: each stored array is (F, V, P, D), F the total
    frame count (int8 ones with a (F, V, P) scale beside them); clip i holds rows
    offsets[i]:offsets[i + 1].

    Args:
        directory: a complete cache directory (manifest, clips.json, arrays).
        spec: the description the caller expects; a manifest that says otherwise is an error.
    """

    def __init__(self, directory: Path, spec: dict[str, Any]) -> None:
        self.directory = Path(directory)
        manifest = self._json(MANIFEST)
        expected = _normalised(spec)
        if manifest.get("spec") != expected:
            differing = sorted(k for k in expected if manifest.get("spec", {}).get(k) != expected[k])
            raise SlotsweepError(
                f"feature cache {self.directory} was made for another setting (differs in "
                f"{differing or 'keys'}); delete the directory, or point paths.features_dir elsewhere"
            )
        self.shape = tuple(manifest["shape"])  # (F, V, P, D)
        self.dtype: str = expected["dtype"]
        self.arrays: tuple[str, ...] = tuple(expected["arrays"])
        self.clips: list[dict[str, Any]] = self._json(CLIPS)
        self.offsets = np.cumsum([0] + [clip["n_frames"] for clip in self.clips])  # (N + 1,)
        if self.offsets[-1] != self.shape[0]:
            raise SlotsweepError(
                f"feature cache {self.directory}: {CLIPS} counts {self.offsets[-1]} frames, the "
                f"manifest {self.shape[0]}; delete the directory to rebuild it"
            )
        self._maps: dict[str, np.ndarray] | None = None
        self._open()  # fail now, not in a worker, if an array is missing or truncated

    def _json(self, name: str) -> Any:
        path = self.directory / name
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise SlotsweepError(
                f"feature cache file {path} is unreadable ({err}); delete {self.directory} to rebuild it"
            ) from err

    def _open(self) -> dict[str, np.ndarray]:
        maps = {}
        for name in self.arrays:
            for file, (dtype, per_channel) in _files(name, self.dtype).items():
                path, shape = self.directory / file, _file_shape(self.shape, per_channel)
                n_bytes = int(np.prod(shape)) * dtype.itemsize
                size = path.stat().st_size if path.is_file() else None
                if size != n_bytes:
                    raise SlotsweepError(
                        f"feature cache file {path} has {size} bytes, its manifest says {n_bytes} "
                        f"({dtype} {shape}); delete {self.directory} to rebuild it"
                    )
                maps[file] = np.memmap(path, dtype=dtype, mode="r", shape=shape)
        self._maps = maps
        return maps

    def __getstate__(self) -> dict:
        # Send the path, not the mapped arrays, to spawned workers; each maps the files itself.
        return {**self.__dict__, "_maps": None}

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def n_views(self) -> int:
        """V: views stored per frame."""
        return self.shape[1]

    def read(self, index: int, frames: slice, view: int = 0) -> dict[str, Tensor]:
        """{"features"(, "keys")}: (t, P, D) float16 for frames `frames` of clip `index` in `view`;
        "keys" only where the cache stores them (a loss reads them)."""
        if not 0 <= view < self.n_views:
            raise ValueError(f"{self.directory} holds views 0..{self.n_views - 1}, not view {view}")
        first, end = self.offsets[index], self.offsets[index + 1]
        rows = range(first, end)[frames]
        maps = self._maps if self._maps is not None else self._open()

        def rows_of(file: str) -> Tensor:
            # np.array copies out of the read-only map, which torch refuses to wrap
            return torch.from_numpy(np.array(maps[file][rows.start : rows.stop, view]))

        if self.dtype == "float16":
            return {name: rows_of(f"{name}.f16") for name in self.arrays}
        return {
            name: _dequantised(rows_of(f"{name}.i8"), rows_of(f"{name}.scale.f16")) for name in self.arrays
        }


def _quantised(name: str, value: Tensor) -> tuple[Tensor, Tensor]:
    """(n, P, D) float -> int8 values (n, P, D) and float16 scales (n, P): one scale per token,
    its largest magnitude / 127; keys are L2-normalised first (only their cosines are read)."""
    value = value.float()
    if name == "keys":
        value = torch.nn.functional.normalize(value, dim=-1)
    scale = (value.abs().amax(dim=-1) / 127).to(torch.float16)
    safe = scale.float().clamp_min(torch.finfo(torch.float16).tiny)  # an all-zero token stays zero
    q = (value / safe.unsqueeze(-1)).round().clamp(-127, 127).to(torch.int8)
    return q, scale


def _dequantised(q: Tensor, scale: Tensor) -> Tensor:
    """int8 (t, P, D) and float16 scales (t, P) -> float16 (t, P, D)."""
    return (q.float() * scale.float().unsqueeze(-1)).to(torch.float16)


def feature_cache_sources(datamodule: object, stage: str | None = None) -> dict[str, ClipSource]:
    """The datamodule's clip sources, or one line saying it cannot be cached.

    Cheap (nothing is read yet): called before the encoder is built, so a datamodule without a
    cache, or an augmentation without a finite set of views, fails before a ViT loads.
    """
    if not isinstance(datamodule, CachedClipSource):
        raise SlotsweepError(
            f"cache=true is not supported by {type(datamodule).__name__} (it does not implement "
            "slotsweep.cache.CachedClipSource); set cache=false"
        )
    return datamodule.feature_cache_sources(stage)


# module -> (its tensors' version counters, their sha256) of the last weights_sha256
_WEIGHTS_SHA256: weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple[int, ...], str]] = (
    weakref.WeakKeyDictionary()
)


def weights_sha256(module: torch.nn.Module) -> str:
    """sha256 of a module's state dict (names, dtypes, shapes and raw bytes, in name order).

    Computed once per module and state: a frozen encoder is hashed once per process, however many
    checkpoints and caches name it (ViT-B: ~0.3 GB of tensors). A tensor written in place (a load)
    bumps its version counter, which makes the module's next call hash it again.
    """
    state = module.state_dict()
    versions = tuple(tensor._version for tensor in state.values())
    known = _WEIGHTS_SHA256.get(module)
    if known is not None and known[0] == versions:
        return known[1]
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy())  # the raw bytes, for any dtype
    _WEIGHTS_SHA256[module] = (versions, digest.hexdigest())
    return digest.hexdigest()


def encoder_identity(encoder: FrameEncoder, config: dict[str, Any]) -> dict[str, Any]:
    """What decides the encoder's outputs: its config, a hash of its weights, timm and torch versions.

    Args:
        encoder: the built encoder; its state dict is hashed, so hub weights, a local file and a
            seeded random init are all told apart by content, not by name.
        config: the encoder's config (`encoder.*`); `weights` (a path, which may differ between
            machines for the same file) is left out.
    """
    return {
        "config": {k: v for k, v in config.items() if k != "weights"},
        "weights_sha256": weights_sha256(encoder),
        "timm": importlib.metadata.version("timm"),
        "torch": torch.__version__.split("+")[0],  # the CPU and CUDA builds compute the same features
    }


def _normalised(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as JSON gives it back (tuples become lists), so a stored one compares equal."""
    return json.loads(json.dumps(spec, sort_keys=True))


def _digest(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(_normalised(spec), sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing); other builders wait here.

    flock where the file system has it; where it refuses (ENOLCK, EOPNOTSUPP, ENOSYS: Lustre
    mounted noflock, some NFS setups) a `mkdir` lock beside it (`_DirLock`), never no lock.
    """
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as err:
            log.info(f"feature cache: no flock on {path} ({err.strerror}): locking with mkdir instead")
            with _DirLock(path.with_name(path.name + ".d")):
                yield
            return
        yield  # the lock goes with the file's closing


class _DirLock:
    """An exclusive lock that needs only an atomic `mkdir`: the directory exists while held, and
    its `owner` file says host and pid. A waiter polls; it removes a lock whose owner is on its own
    host and no longer alive, and says which directory to delete when the owner is elsewhere
    (a dead process on another host cannot be told from a slow one)."""

    POLL_S = 0.5
    WARN_S = 60.0

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> _DirLock:
        waited, warned = 0.0, False
        while True:
            try:
                self.path.mkdir()
                break
            except FileExistsError:
                pass
            owner = self._owner()
            if owner is not None and owner[0] == socket.gethostname() and not _alive(owner[1]):
                log.info(f"feature cache: taking over {self.path}, its owner (pid {owner[1]}) is gone")
                shutil.rmtree(self.path, ignore_errors=True)
                continue
            if waited >= self.WARN_S and not warned:
                log.warning(
                    f"feature cache: waiting on {self.path} (held by {owner or 'an unknown process'}); "
                    "if no build runs there any more, delete that directory"
                )
                warned = True
            time.sleep(self.POLL_S)
            waited += self.POLL_S
        (self.path / "owner").write_text(f"{socket.gethostname()} {os.getpid()}")
        return self

    def _owner(self) -> tuple[str, int] | None:
        try:
            host, pid = (self.path / "owner").read_text().split()
            return host, int(pid)
        except (OSError, ValueError):  # just made, not written yet
            return None

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def cached_split(
    encoder: FrameEncoder,
    source: ClipSource,
    split: str,
    root: Path,
    encoder_config: dict[str, Any],
    device: str | torch.device = "cpu",
    batch_frames: int = 64,
    dtype: str = "float16",
    arrays: tuple[str, ...] = ("features", "keys"),
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
        dtype: storage format, one of STORAGE_DTYPES.
        arrays: which encoder outputs to store (`stored_arrays` of the losses).
    """
    if not encoder.frozen:
        raise SlotsweepError(_NOT_FROZEN)
    if dtype not in STORAGE_DTYPES or "features" not in arrays:
        raise ValueError(f"dtype={dtype} must be one of {STORAGE_DTYPES}; arrays={arrays} must hold features")
    spec = {
        "format_version": FORMAT_VERSION,
        "dtype": dtype,
        "arrays": list(arrays),
        "split": split,
        "data": source.identity,
        "n_views": source.n_views,
        "encoder": encoder_identity(encoder, encoder_config),
    }
    directory = Path(root) / f"{split}-{_digest(spec)}"
    if not (directory / MANIFEST).is_file():
        frame_view = bytes_per_frame_view(encoder.n_patches, encoder.feat_dim, dtype, arrays)
        check_fits(Path(root), split, source.n_frames, source.n_views, frame_view)  # before any write
        directory.parent.mkdir(parents=True, exist_ok=True)
        with _lock(directory.with_name(f".{directory.name}.lock")):
            if not (directory / MANIFEST).is_file():  # nobody built it while we waited
                # forked: a run that builds the cache draws the same random numbers afterwards
                # as one that finds it (the loader draws a seed)
                with torch.random.fork_rng(devices=[]):
                    _build(encoder, source, spec, directory, torch.device(device), batch_frames)
    return FeatureStore(directory, spec)


def _encoded_rows(
    encoder: FrameEncoder, clips: Iterable[ClipViews], n_views: int, device: torch.device, batch_frames: int
) -> Iterator[tuple[Tensor, Tensor]]:
    """(features, keys), each (n, P, D), of every clip's frames in (T, V) order, in batches of
    `batch_frames` frames that run across clip boundaries (images are one frame each)."""
    pending: list[Tensor] = []
    n_pending = 0
    for clip in clips:
        V, T = clip.views.shape[:2]
        if n_views != V:
            raise SlotsweepError(f"clip {clip.meta} has {V} views, its source declares {n_views}")
        pending.append(clip.views.transpose(0, 1).flatten(0, 1))  # (T·V, 3, S, S), frame-major
        n_pending += T * V
        while n_pending >= batch_frames:
            frames = torch.cat(pending)
            pending, n_pending = [frames[batch_frames:]], n_pending - batch_frames
            out = encoder(frames[:batch_frames].to(device))
            yield out.features, out.keys
    if n_pending:
        out = encoder(torch.cat(pending).to(device))
        yield out.features, out.keys


def _build(
    encoder: FrameEncoder,
    source: ClipSource,
    spec: dict[str, Any],
    directory: Path,
    device: torch.device,
    batch_frames: int,
) -> None:
    """Encode every clip's views into a temporary directory, then rename it into place."""
    start = time.perf_counter()
    V, P, D = source.n_views, encoder.n_patches, encoder.feat_dim
    split, dtype, arrays = spec["split"], spec["dtype"], tuple(spec["arrays"])
    log.info(f"feature cache: encoding the {split} clips, {V} view(s) per frame, into {directory}")
    tmp = directory.with_name(f".{directory.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()
    home = next(encoder.parameters()).device
    clips: list[dict[str, Any]] = []

    def listed(items: Iterable[ClipViews]) -> Iterator[ClipViews]:
        for clip in items:
            clips.append({**clip.meta, "n_frames": clip.views.shape[1]})
            yield clip

    try:
        encoder.to(device)
        with contextlib.ExitStack() as files, torch.no_grad():
            sinks: dict[str, BinaryIO] = {
                file: files.enter_context(open(tmp / file, "wb"))
                for name in arrays
                for file in _files(name, dtype)
            }
            rows = _encoded_rows(encoder, listed(source.clips), V, device, batch_frames)
            for features, keys in rows:
                for name, value in (("features", features), ("keys", keys)):
                    if name in arrays:
                        for file, stored in _to_storage(name, value, dtype).items():
                            sinks[file].write(stored.tobytes())
        n_frames = sum(clip["n_frames"] for clip in clips)
        if n_frames == 0:
            raise SlotsweepError(f"feature cache: the {split} split has no clips to encode")
        (tmp / CLIPS).write_text(json.dumps(clips))
        manifest = {
            "spec": _normalised(spec),
            "shape": [n_frames, V, P, D],
            "n_clips": len(clips),
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
    size = _human(cache_size(n_frames, V, P, D, dtype, arrays))
    seconds = time.perf_counter() - start
    log.info(f"feature cache: {len(clips)} {split} clips ({size}) built in {seconds:.1f}s")


def _to_storage(name: str, value: Tensor, dtype: str) -> dict[str, np.ndarray]:
    """(n, P, D) encoder output -> {file: numpy rows}, refusing values float16 cannot hold (the
    float16 format, and int8's scales, which are the token's largest magnitude / 127)."""
    peak = float(value.abs().amax())
    if not peak < float(np.finfo(np.float16).max):  # also NaN
        raise SlotsweepError(
            f"encoder {name} reach {peak:g}, beyond float16's range: this encoder's outputs cannot "
            "be cached; set cache=false"
        )
    if dtype == "float16":
        return {f"{name}.f16": value.to(torch.float16).cpu().numpy()}
    q, scale = _quantised(name, value)
    return {f"{name}.i8": q.cpu().numpy(), f"{name}.scale.f16": scale.cpu().numpy()}


def attach_feature_cache(
    datamodule: CachedClipSource,
    sources: dict[str, ClipSource],
    encoder: FrameEncoder,
    root: Path,
    encoder_config: dict[str, Any],
    device: str | torch.device = "cpu",
    dtype: str = "float16",
    arrays: tuple[str, ...] = ("features", "keys"),
) -> dict[str, FeatureStore]:
    """Encode (or find) every split in `sources` and make the datamodule read features from them.

    Args:
        datamodule: where `sources` came from (:func:`feature_cache_sources`).
        encoder, root, encoder_config, device, dtype, arrays: as in :func:`cached_split`.
    Returns:
        {split: store}.
    """
    stores = {
        split: cached_split(encoder, source, split, root, encoder_config, device, dtype=dtype, arrays=arrays)
        for split, source in sources.items()
    }
    datamodule.use_feature_cache(stores)
    return stores

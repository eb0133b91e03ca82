"""The feature cache's side of the file readers (shards, video files): their content's identity,
their clips as the views the cache encodes, and samples read back from the cache.

Train views are every crop position x flip that `ClipTransform.train` can draw (`train_views`);
validation has one view, the centred square. A cached train sample makes the same random draws
as one from pixels (`ClipTransform.draw`), so a run reads the same frames and views either way.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from slotsweep.cache import ClipViews, FeatureStore
from slotsweep.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from slotsweep.data.video_transforms import ClipTransform, short_side_size
from slotsweep.errors import SlotsweepError

__all__ = [
    "cached_train_sample",
    "cached_val_sample",
    "check_finite_views",
    "clip_views",
    "files_identity",
    "views_identity",
]

# Bump when the resize, crop or flip code changes the pixels it makes: caches then get a new digest.
_TRANSFORM_VERSION = 1


def files_identity(paths: list[Path], root: Path) -> list[list[Any]]:
    """[name (relative to root where it lies inside), bytes, mtime in ns] of each file, in order.

    A cheap stand-in for the content: hashing a dataset's shards on every start would cost more
    than the cache saves. A rewritten file changes its size or mtime, so its cache is rebuilt.
    """
    identity = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError as error:
            raise SlotsweepError(f"cannot read {path} for the feature cache ({error})") from error
        name = path.relative_to(root) if path.is_relative_to(root) else path
        identity.append([str(name), stat.st_size, stat.st_mtime_ns])
    return identity


def views_identity(transform: ClipTransform, train: bool) -> dict[str, Any]:
    """What decides a split's view pixels besides the stored frames."""
    views = {"train_crops": transform.crops, "hflip": transform.hflip} if train else "centre square"
    return {
        "transform_version": _TRANSFORM_VERSION,
        "input_size": transform.input_size,
        "normalisation": {"mean": IMAGENET_MEAN, "std": IMAGENET_STD},
        "views": views,
    }


def check_finite_views(transform: ClipTransform, height: int, width: int) -> None:
    """Raise (naming dataset.train_crops) unless a clip of stored frames (height, width) has a
    finite set of train views: checked on a split's first clip, before the encoder loads."""
    transform.crop_positions(*short_side_size(height, width, transform.input_size))


def clip_views(frames: np.ndarray, transform: ClipTransform, train: bool, meta: dict[str, Any]) -> ClipViews:
    """A clip's views for the cache: frames (T, H, W, 3) uint8 -> (V, T, 3, S, S); its frame size
    joins `meta`, for drawing crops without the pixels."""
    H, W = frames.shape[1:3]
    views = transform.train_views(frames) if train else transform.val(frames)["video"][None]
    return ClipViews(views, {**meta, "height": H, "width": W})


def cached_train_sample(
    store: FeatureStore, transform: ClipTransform, index: int, frames: slice, rng: random.Random
) -> dict[str, Tensor]:
    """{"features", "keys"} (t, P, D) of `frames` of clip `index` in the view `transform.train`
    would draw from `rng` for this clip."""
    clip = store.clips[index]
    H, W = short_side_size(clip["height"], clip["width"], transform.input_size)
    view = transform.draw(H, W, rng)
    return store.read(index, frames, transform.view_index(view, H, W))


def cached_val_sample(
    sample: dict[str, Tensor], store: FeatureStore, index: int, frames: slice
) -> dict[str, Tensor]:
    """A validation sample ({"video", "rgb", "masks"}) with "video" replaced by its cached features."""
    del sample["video"]
    return {**sample, **store.read(index, frames)}

"""How each reference dataset stores a sample in its shards (videosaur.md §5), as frames and masks.

| layout | frames key, array            | masks (`segmentations.npy`, val only)                       |
|--------|------------------------------|-------------------------------------------------------------|
| movi   | `video` (T, H, W, 3) uint8   | (T, H, W, 1) uint8 instance ids, 0 = background              |
| ytvis  | `video` (T, H, W, 3) uint8   | (T, H, W, N) uint8, channel i = instance i x category (!= 0) |
| coco   | `image` (H, W, 3) uint8      | (N, H, W) uint8, instance i x category, crowds removed       |

Every layout turns them into frames (T, H, W, 3) uint8 and masks (T, K, H, W) bool with K fixed
per dataset (`dataset.n_mask_channels`), padded with empty channels: MOVi is one-hot with channel
0 = background (the reference's num_classes 11 / 24), YT-VIS and COCO have one channel per instance
and no background (YTVISToBinary(25), COCOToBinary(63)); COCO instances may overlap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from slotsweep.errors import SlotsweepError

__all__ = ["LAYOUTS", "SampleLayout"]

MASKS_KEY = "segmentations"


def _too_many(n: int, n_channels: int, where: str) -> SlotsweepError:
    return SlotsweepError(
        f"{where}: {n} mask channels do not fit dataset.n_mask_channels={n_channels}; raise it to >= {n}"
    )


def _movi_masks(ids: np.ndarray, n_channels: int | None, where: str) -> np.ndarray:
    """(T, H, W, 1) instance ids -> (T, K, H, W) one-hot; K = max id + 1 when n_channels is None."""
    ids = ids[..., 0]
    n_ids = int(ids.max()) + 1
    K = n_ids if n_channels is None else n_channels
    if n_ids > K:
        raise _too_many(n_ids, K, where)
    return ids[:, None] == np.arange(K, dtype=ids.dtype)[None, :, None, None]


def _pad_channels(masks: np.ndarray, n_channels: int | None, where: str) -> np.ndarray:
    """(T, N, H, W) bool -> (T, K, H, W), zero channels appended."""
    T, N, H, W = masks.shape
    K = N if n_channels is None else n_channels
    if N > K:
        raise _too_many(N, K, where)
    return np.concatenate([masks, np.zeros((T, K - N, H, W), bool)], axis=1)


def _ytvis_masks(segmentations: np.ndarray, n_channels: int | None, where: str) -> np.ndarray:
    """(T, H, W, N) instance x category -> (T, K, H, W) bool."""
    return _pad_channels(np.moveaxis(segmentations != 0, -1, 1), n_channels, where)


def _coco_masks(segmentations: np.ndarray, n_channels: int | None, where: str) -> np.ndarray:
    """(N, H, W) instance x category -> (1, K, H, W) bool."""
    return _pad_channels(segmentations[None] != 0, n_channels, where)


def _video(frames: np.ndarray) -> np.ndarray:
    return frames


def _video_length(shape: tuple[int, ...]) -> int:
    return shape[0]


def _image(image: np.ndarray) -> np.ndarray:
    return image[None]  # (1, H, W, 3): an image is a one-frame video


def _image_length(shape: tuple[int, ...]) -> int:
    return 1


@dataclass(frozen=True)
class SampleLayout:
    """One dataset's sample format.

    Attributes:
        frames_key: sample key of the frames (`<key>.npy` in the tar).
        ignore_background: mask channel 0 is the background (metrics drop it).
        ignore_overlaps: instances may overlap (metrics ignore pixels of several instances).
        to_frames: stored frames -> (T, H, W, 3) uint8.
        to_masks: (stored masks, K or None = as many as stored, where for messages) -> (T, K, H, W) bool.
        n_frames: shape of the stored frames -> T, without reading them (to count validation clips).
    """

    frames_key: str
    ignore_background: bool
    ignore_overlaps: bool
    to_frames: Callable[[np.ndarray], np.ndarray]
    to_masks: Callable[[np.ndarray, int | None, str], np.ndarray]
    n_frames: Callable[[tuple[int, ...]], int]
    masks_key: str = MASKS_KEY


LAYOUTS: dict[str, SampleLayout] = {
    "movi": SampleLayout("video", True, False, _video, _movi_masks, _video_length),
    "ytvis": SampleLayout("video", False, False, _video, _ytvis_masks, _video_length),
    "coco": SampleLayout("image", False, True, _image, _coco_masks, _image_length),
}

"""The reference's train and validation transforms of a clip and its masks (videosaur.md §5).

Train: short side resized to the input size (bicubic, clamped to [0, 1]), one random square crop
shared by all frames, ImageNet normalisation, one horizontal flip per clip with probability 0.5.
Validation: the centred full square crop, resized to the input size (bicubic, clamped); masks get
the same crop and a nearest-exact resize to the metric resolution. On square frames (MOVi) both
reduce to the reference's plain `Resize(input_size)`.

Resizing is torch's `interpolate` without antialiasing, as torchvision 0.14 (the reference's) did
on tensors; sizes follow torchvision's `Resize(int)`: the long side is int(size * long / short).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from slotsweep.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from slotsweep.errors import SlotsweepError

__all__ = ["ClipTransform", "TrainView", "center_square", "resize_short_side", "short_side_size"]


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(H', W') with short side `size` and long side int(size * long / short), as torchvision's Resize."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def resize_short_side(frames: Tensor, size: int) -> Tensor:
    """Resize so that the short side is `size` (bicubic, clamped to [0, 1]).

    Args:
        frames: (T, 3, H, W) float in [0, 1].
    Returns:
        (T, 3, H', W') with min(H', W') = size and the long side int(size * long / short).
    """
    H, W = frames.shape[-2:]
    new_size = short_side_size(H, W, size)
    if new_size == (H, W):
        return frames
    resized = F.interpolate(frames, size=new_size, mode="bicubic", align_corners=False, antialias=False)
    return resized.clamp_(0.0, 1.0)  # bicubic overshoots at edges


def center_square(x: Tensor) -> Tensor:
    """The centred square crop of side min(H, W) of (..., H, W), offsets as torchvision's CenterCrop."""
    H, W = x.shape[-2:]
    side = min(H, W)
    top, left = int(round((H - side) / 2.0)), int(round((W - side) / 2.0))
    return x[..., top : top + side, left : left + side]


def _to_float(frames: np.ndarray) -> Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, H, W) float32 in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames))
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {x.dtype} {tuple(x.shape)}")
    return x.permute(0, 3, 1, 2).float().div_(255.0)


def _normalise(x: Tensor) -> Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((x - mean) / std).contiguous()


class TrainView(NamedTuple):
    """One draw of the train augmentation: the crop's top-left corner and whether to flip."""

    top: int
    left: int
    flipped: bool


@dataclass(frozen=True)
class ClipTransform:
    """Frames (and masks) as stored -> the tensors of a batch entry.

    Args:
        input_size: side of the square model input in pixels (the encoder's img_size).
        mask_size: side of the square validation masks in pixels (the metric resolution).
        hflip: train augmentation: flip the whole clip horizontally with probability 0.5.
        crops: train crop positions: None = any offset (the reference's RandomCrop); n = one of n
            evenly spaced offsets along the long side, both ends included (n = 1: the centre). A
            finite set is what the feature cache needs: it encodes every crop (`train_views`).
    """

    input_size: int
    mask_size: int
    hflip: bool
    crops: int | None = None

    def crop_positions(self, height: int, width: int) -> list[tuple[int, int]]:
        """The (top, left) corners a train crop of frames resized to (height, width) can take.

        Raises SlotsweepError when there are too many to encode (crops=None on non-square frames).
        """
        S = self.input_size
        spans = height - S, width - S  # one of them is 0: the short side is S
        if self.crops is None:
            if spans != (0, 0):
                raise SlotsweepError(
                    f"dataset.train_crops=null crops {S}x{S} at any of {max(spans) + 1} offsets of "
                    f"{height}x{width} frames, which the feature cache cannot encode one by one: set "
                    "dataset.train_crops=<n> (n evenly spaced crops, e.g. 3) or cache=false"
                )
            return [(0, 0)]
        if self.crops == 1:
            return [(spans[0] // 2, spans[1] // 2)]
        return [
            (round(c * spans[0] / (self.crops - 1)), round(c * spans[1] / (self.crops - 1)))
            for c in range(self.crops)
        ]

    @property
    def n_flips(self) -> int:
        return 2 if self.hflip else 1

    @property
    def n_train_views(self) -> int:
        """V of `train_views`: crop positions x flips."""
        return (self.crops or 1) * self.n_flips

    def draw(self, height: int, width: int, rng: random.Random) -> TrainView:
        """The random part of `train` for frames resized to (height, width); the same draws
        whether the pixels or their cached features are read next."""
        if self.crops is None:  # torchvision RandomCrop: offsets uniform over all positions
            top, left = rng.randint(0, height - self.input_size), rng.randint(0, width - self.input_size)
        else:
            top, left = self.crop_positions(height, width)[rng.randrange(self.crops)]
        return TrainView(top, left, self.hflip and rng.random() < 0.5)

    def view_index(self, view: TrainView, height: int, width: int) -> int:
        """Index of `view` among `train_views` of frames resized to (height, width)."""
        position = self.crop_positions(height, width).index((view.top, view.left))
        return position * self.n_flips + int(view.flipped)

    def _crop(self, x: Tensor, view: TrainView) -> Tensor:
        S = self.input_size
        x = x[..., view.top : view.top + S, view.left : view.left + S]
        return x.flip(-1) if view.flipped else x

    def train(self, frames: np.ndarray, rng: random.Random) -> dict[str, Tensor]:
        """frames (T, H, W, 3) uint8 -> {"video": (T, 3, S, S) float32, normalised}, S = input_size."""
        x = resize_short_side(_to_float(frames), self.input_size)
        view = self.draw(*x.shape[-2:], rng)  # one crop and flip for every frame
        return {"video": _normalise(self._crop(x, view))}

    def train_views(self, frames: np.ndarray) -> Tensor:
        """Every view `train` can make of a clip: (V, T, 3, S, S), view `view_index(...)`."""
        x = resize_short_side(_to_float(frames), self.input_size)
        views = [
            self._crop(x, TrainView(top, left, flipped))
            for top, left in self.crop_positions(*x.shape[-2:])
            for flipped in (False, True)[: self.n_flips]
        ]
        return _normalise(torch.stack(views))

    def val(self, frames: np.ndarray, masks: np.ndarray | None = None) -> dict[str, Tensor]:
        """Centred square crop at input size, and the masks at mask size.

        Args:
            frames: (T, H, W, 3) uint8.
            masks: (T, K, H, W) bool or None.
        Returns:
            {"video": (T, 3, S, S) float32 normalised, "rgb": (T, S, S, 3) uint8 (the model's view of
            the frames, for pictures), "masks": (T, K, M, M) bool} with S = input_size, M = mask_size;
            no "masks" when masks is None.
        """
        x = center_square(_to_float(frames))
        if x.shape[-1] != self.input_size:
            x = F.interpolate(
                x, size=(self.input_size,) * 2, mode="bicubic", align_corners=False, antialias=False
            ).clamp_(0.0, 1.0)
        sample = {
            "video": _normalise(x),
            "rgb": x.mul(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous(),
        }
        if masks is not None:
            if masks.shape[0] != frames.shape[0] or masks.shape[2:] != frames.shape[1:3]:
                raise ValueError(
                    f"masks {masks.shape} do not match frames {frames.shape}: expected (T, K, H, W)"
                )
            m = center_square(torch.from_numpy(np.ascontiguousarray(masks)).to(torch.uint8))
            if m.shape[-1] != self.mask_size:
                m = F.interpolate(m, size=(self.mask_size,) * 2, mode="nearest-exact")
            sample["masks"] = m.bool()
        return sample

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

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from slotsweep.data.transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["ClipTransform", "center_square", "resize_short_side", "short_side_size"]


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


@dataclass(frozen=True)
class ClipTransform:
    """Frames (and masks) as stored -> the tensors of a batch entry.

    Args:
        input_size: side of the square model input in pixels (the encoder's img_size).
        mask_size: side of the square validation masks in pixels (the metric resolution).
        hflip: train augmentation: flip the whole clip horizontally with probability 0.5.
    """

    input_size: int
    mask_size: int
    hflip: bool

    def train(self, frames: np.ndarray, rng: random.Random) -> dict[str, Tensor]:
        """frames (T, H, W, 3) uint8 -> {"video": (T, 3, S, S) float32, normalised}, S = input_size."""
        x = resize_short_side(_to_float(frames), self.input_size)
        H, W = x.shape[-2:]
        # torchvision RandomCrop: offsets uniform over all positions, one crop for every frame.
        top, left = rng.randint(0, H - self.input_size), rng.randint(0, W - self.input_size)
        x = x[..., top : top + self.input_size, left : left + self.input_size]
        if self.hflip and rng.random() < 0.5:
            x = x.flip(-1)
        return {"video": _normalise(x)}

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

"""The reference's train and validation transforms of a clip and its masks (videosaur.md §5).

Train: short side resized to the input size (bicubic, clamped to [0, 1]), one random square crop
shared by all frames, ImageNet normalisation, one horizontal flip per clip with probability 0.5.
Validation: the centred full square crop, resized to the input size (bicubic, clamped); masks get
the same crop and a nearest-exact resize to the metric resolution. On square frames (MOVi) both
reduce to the reference's plain `Resize(input_size)`.

Resizing is torch's `interpolate` without antialiasing, as torchvision 0.14 (the reference's) did
on tensors; sizes follow torchvision's `Resize(int)`: the long side is int(size * long / short).

Train clips leave the loader as stored uint8 frames with their random view chosen (`ClipView`:
crop offset and flip as plain ints); `render` resizes, crops and flips a whole batch where it lies,
which for training is the GPU (`frames_to_video`, from the Lightning module's
`on_after_batch_transfer`). A loader worker then only decodes and copies 1 byte per stored pixel
instead of resizing to 4 bytes per input pixel. Validation clips, the feature cache and
evaluation call the same `render` on the CPU, so every path makes the same pixels.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import default_collate

from slotsweep.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from slotsweep.errors import SlotsweepError

__all__ = [
    "ClipTransform",
    "ClipView",
    "TrainView",
    "center_square",
    "collate_clips",
    "frames_to_video",
    "normalise",
    "render",
    "short_side_size",
]


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(H', W') with short side `size` and long side int(size * long / short), as torchvision's Resize."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def _square_corner(height: int, width: int) -> tuple[int, int]:
    """Top-left corner of the centred square of side min(height, width), as torchvision's CenterCrop."""
    side = min(height, width)
    return int(round((height - side) / 2.0)), int(round((width - side) / 2.0))


def center_square(x: Tensor) -> Tensor:
    """The centred square crop of side min(H, W) of (..., H, W)."""
    H, W = x.shape[-2:]
    (top, left), side = _square_corner(H, W), min(H, W)
    return x[..., top : top + side, left : left + side]


def _to_float(frames: np.ndarray | Tensor) -> Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float32 in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if x.dtype != torch.uint8 or x.ndim < 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (..., T, H, W, 3), got {x.dtype} {tuple(x.shape)}")
    return x.movedim(-1, -3).float().div_(255.0)


def normalise(x: Tensor) -> Tensor:
    """ImageNet normalisation of (..., 3, H, W) float in [0, 1], on x's device."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1)
    return ((x - mean) / std).contiguous()


class TrainView(NamedTuple):
    """One draw of the train augmentation: the crop's top-left corner and whether to flip."""

    top: int
    left: int
    flipped: bool


class ClipView(NamedTuple):
    """Everything that turns a clip's stored frames into model input, as plain ints: the loaders
    choose it on the CPU and `render` applies it where the frames are (a GPU, or the CPU).

    Stored frames (height, width) are resized to (resized_height, resized_width) (bicubic,
    clamped; a no-op at the same size), cropped to size x size at (top, left), then flipped.
    """

    height: int
    width: int
    resized_height: int
    resized_width: int
    top: int
    left: int
    size: int
    flipped: bool


def _crop_flip(x: Tensor, top: int, left: int, size: int, flipped: bool) -> Tensor:
    x = x[..., top : top + size, left : left + size]
    return x.flip(-1) if flipped else x


def _on_device(values: list, device: torch.device) -> Tensor:
    """A small tensor of `values` on `device`, copied without waiting for the device's queue (a
    blocking copy would stall the host until the previous training step has finished)."""
    tensor = torch.tensor(values)
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def render(frames: Tensor, views: list[ClipView]) -> Tensor:
    """Resize, crop and flip a batch of clips on frames' device, one `interpolate` per group of
    clips that share stored size, resize and crop (MOVi: one for the whole batch).

    Args:
        frames: (B, T, H, W, 3) uint8; clip b's frames are the top-left views[b].height x
            views[b].width of it (the rest is padding to the batch's largest clip).
        views: B ClipViews, one size for all.
    Returns:
        (B, T, 3, S, S) float32 in [0, 1], S = views[0].size; not normalised (`normalise`).
    """
    B, T = frames.shape[:2]
    sizes = {view.size for view in views}
    if len(views) != B or len(sizes) != 1:
        raise ValueError(f"{len(views)} views of sizes {sorted(sizes)} for {B} clips: need one size each")
    S = sizes.pop()
    out = torch.empty((B, T, 3, S, S), dtype=torch.float32, device=frames.device)
    groups: dict[ClipView, list[int]] = {}
    for b, view in enumerate(views):
        groups.setdefault(view._replace(flipped=False), []).append(b)
    for view, members in groups.items():
        contiguous = members == list(range(members[0], members[-1] + 1))
        index = slice(members[0], members[-1] + 1) if contiguous else _on_device(members, frames.device)
        x = _to_float(frames[index, :, : view.height, : view.width])  # (N, T, 3, H, W)
        N = x.shape[0]
        x = _resize(x.flatten(0, 1), (view.resized_height, view.resized_width)).unflatten(0, (N, T))
        out[index] = _crop_flip(x, view.top, view.left, S, flipped=False)
    if any(view.flipped for view in views):
        flipped = _on_device([view.flipped for view in views], frames.device).view(B, 1, 1, 1, 1)
        out = torch.where(flipped, out.flip(-1), out)
    return out


def frames_to_video(batch: dict[str, Any]) -> dict[str, Any]:
    """A batch of stored frames -> the model's input, on the batch's device: {"frames", "views"}
    are replaced by "video" (B, T, 3, S, S) float32, ImageNet-normalised (`collate_clips`)."""
    if "frames" not in batch:
        return batch
    batch = dict(batch)
    batch["video"] = normalise(render(batch.pop("frames"), list(batch.pop("views"))))
    return batch


def collate_clips(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Train samples {"frames" (T, H, W, 3) uint8, "view": ClipView} -> one batch {"frames"
    (B, T, H_max, W_max, 3) uint8 zero-padded, "views": [ClipView] * B}, in order; samples of the
    feature cache are collated as they are."""
    if "frames" not in samples[0]:
        return default_collate(samples)
    views = [sample["view"] for sample in samples]
    T = samples[0]["frames"].shape[0]
    H, W = max(view.height for view in views), max(view.width for view in views)
    if all((view.height, view.width) == (H, W) for view in views):
        frames = torch.stack([sample["frames"] for sample in samples])
    else:
        frames = torch.zeros((len(samples), T, H, W, 3), dtype=torch.uint8)
        for b, sample in enumerate(samples):
            frames[b, :, : views[b].height, : views[b].width] = sample["frames"]
    return {"frames": frames, "views": views}


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, 3, H, W) float in [0, 1] -> (N, 3, *size), bicubic without antialiasing, clamped."""
    if tuple(x.shape[-2:]) == size:
        return x
    resized = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=False)
    return resized.clamp_(0.0, 1.0)  # bicubic overshoots at edges


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

    def clip_view(self, height: int, width: int, view: TrainView) -> ClipView:
        """The ClipView of train view `view` of stored frames (height, width)."""
        resized = short_side_size(height, width, self.input_size)
        return ClipView(height, width, *resized, view.top, view.left, self.input_size, view.flipped)

    def train(self, frames: np.ndarray, rng: random.Random) -> dict[str, Tensor | ClipView]:
        """frames (T, H, W, 3) uint8 -> {"frames": the same as a tensor, "view": the ClipView
        drawn}: one crop and flip for every frame, applied later (`render`, on the training device)."""
        H, W = frames.shape[1:3]
        view = self.draw(*short_side_size(H, W, self.input_size), rng)
        return {"frames": torch.from_numpy(np.ascontiguousarray(frames)), "view": self.clip_view(H, W, view)}

    def train_views(self, frames: np.ndarray) -> Tensor:
        """Every view `train` can make of a clip: (V, T, 3, S, S) normalised, view `view_index(...)`;
        the clip is resized once (`render`'s math)."""
        H, W = frames.shape[1:3]
        x = _resize(_to_float(frames), short_side_size(H, W, self.input_size))
        views = [
            _crop_flip(x, top, left, self.input_size, flipped)
            for top, left in self.crop_positions(*x.shape[-2:])
            for flipped in (False, True)[: self.n_flips]
        ]
        return normalise(torch.stack(views))

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
        H, W = frames.shape[1:3]
        (top, left), side = _square_corner(H, W), min(H, W)
        square = torch.from_numpy(np.ascontiguousarray(frames[:, top : top + side, left : left + side]))
        view = ClipView(side, side, self.input_size, self.input_size, 0, 0, self.input_size, False)
        x = render(square[None], [view])[0]  # (T, 3, S, S) in [0, 1]
        sample = {
            "video": normalise(x),
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

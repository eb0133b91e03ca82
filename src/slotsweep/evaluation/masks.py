"""Turn the decoder's patch masks into per-pixel hard masks for metrics and pictures.

videosaur.md §6 and §10.5: evaluation masks are the decoder's masks (SlotMixer mixing weights or the
MLP decoder's alpha), reshaped to the patch grid, upsampled bilinearly to the segmentation size and
argmaxed over slots. The slot-attention masks are never used for metrics.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["patch_grid", "resize_patch_masks", "hard_masks"]


def patch_grid(n_patches: int, size: tuple[int, int]) -> tuple[int, int]:
    """Patch-grid shape (h, w) with h·w = n_patches and the aspect ratio of ``size`` = (H, W).

    Raises:
        ValueError: when no such grid exists (e.g. 10 patches for a square target).
    """
    H, W = size
    h = round(math.sqrt(n_patches * H / W))
    w = n_patches // h if h > 0 else 0
    if h * w != n_patches:
        raise ValueError(
            f"cannot lay out {n_patches} patches as a grid with the aspect ratio of the target "
            f"size {H}x{W}; the encoder's patch grid must have the target's aspect ratio"
        )
    return h, w


def resize_patch_masks(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """Upsample per-patch slot masks to pixels, as the reference's bilinear ``Resizer``.

    Args:
        masks: (B, T, S, P) soft masks over the P patches of each frame (images: T = 1).
        size: (H, W) target resolution, usually the ground-truth mask resolution.
    Returns:
        (B, T, S, H, W) bilinearly interpolated masks (``align_corners=False``), same dtype.
    """
    B, T, S, P = masks.shape
    h, w = patch_grid(P, size)
    grid = masks.reshape(B * T, S, h, w)  # (B·T, S, h, w), patches are row-major
    pixels = F.interpolate(grid, size=tuple(size), mode="bilinear", align_corners=False)
    return pixels.reshape(B, T, S, *size)  # (B, T, S, H, W)


def hard_masks(soft: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """One-hot masks of the most likely slot per pixel (the reference's ``SoftToHardMask``).

    Args:
        soft: (B, T, S, H, W) soft masks.
        dtype: float32 as the reference; bool is 4x less memory for the metrics to read.
    Returns:
        (B, T, S, H, W), exactly one 1 per pixel over S. Ties go to the lowest slot
        index (``torch.argmax``), as in the reference.
    """
    labels = soft.argmax(dim=2, keepdim=True)  # (B, T, 1, H, W)
    # scatter into zeros: F.one_hot would first build an int64 copy 2x the output's size
    hard = torch.zeros(soft.shape, dtype=dtype, device=soft.device)
    return hard.scatter_(2, labels, True if dtype == torch.bool else 1.0)  # (B, T, S, H, W)

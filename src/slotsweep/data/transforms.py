"""Pieces shared by every dataset: the input normalisation and the frames-to-tensor conversion."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "frames_to_tensor"]

# The reference normalises every dataset (MOVi included) with ImageNet statistics, videosaur.md §5.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def frames_to_tensor(
    frames: np.ndarray | Tensor,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> Tensor:
    """Turn uint8 channels-last frames into a normalised float channels-first tensor.

    Args:
        frames: (..., H, W, 3) uint8, e.g. one video (T, H, W, 3), a batch (B, T, H, W, 3) or an image
            (H, W, 3). A read-only array (a memory map) is fine: it is copied, never written.
        mean: per-channel mean in [0, 1] units, subtracted after scaling to [0, 1].
        std: per-channel standard deviation in [0, 1] units.
    Returns:
        (..., 3, H, W) float32, (x / 255 - mean) / std.
    """
    # Copying a numpy array also detaches it from a read-only memory map, which torch refuses to wrap.
    x = torch.from_numpy(np.array(frames)) if isinstance(frames, np.ndarray) else frames
    if x.dtype != torch.uint8 or x.ndim < 3 or x.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (..., H, W, 3), got {x.dtype} {tuple(x.shape)}")
    x = x.movedim(-1, -3).float()  # (..., 3, H, W)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1) * 255.0
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1) * 255.0
    return ((x - mean_t) / std_t).contiguous()

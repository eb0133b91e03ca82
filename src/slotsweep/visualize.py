"""Pictures of masks: coloured overlays, per-clip PNG grids and an animated GIF."""

from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image

__all__ = ["PALETTE", "clip_grid", "colour_masks", "overlay", "save_gif", "save_png"]

# Distinct colours for up to 24 segments (cycled beyond).
PALETTE = np.array(
    [
        [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
        [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255],
        [170, 110, 40], [255, 250, 200], [128, 0, 0], [170, 255, 195], [128, 128, 0], [255, 215, 180],
        [0, 0, 128], [128, 128, 128], [255, 255, 255], [0, 0, 0], [100, 100, 255], [255, 100, 100],
    ],
    dtype=np.uint8,
)  # fmt: skip


def colour_masks(masks: np.ndarray) -> np.ndarray:
    """(..., S, H, W) soft or one-hot masks -> (..., H, W, 3) uint8, each pixel its argmax colour."""
    labels = masks.argmax(axis=-3)
    return PALETTE[labels % len(PALETTE)]


def overlay(rgb: np.ndarray, masks: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Blend frames (..., H, W, 3) uint8 with coloured masks (..., S, H, W)."""
    blended = (1 - alpha) * rgb.astype(np.float32) + alpha * colour_masks(masks).astype(np.float32)
    return blended.round().astype(np.uint8)


def _upscale(image: np.ndarray, scale: int) -> np.ndarray:
    return image.repeat(scale, axis=-3).repeat(scale, axis=-2)


def clip_grid(
    rgb: np.ndarray, true: np.ndarray, pred: np.ndarray, soft: np.ndarray, scale: int = 2, pad: int = 2
) -> np.ndarray:
    """One clip as a picture: rows = frames, GT overlay, predicted overlay, one row per slot's soft mask.

    Args:
        rgb: (T, H, W, 3) uint8 frames.
        true: (T, K, H, W) GT masks; pred: (T, S, H, W) hard masks; soft: (T, S, H, W) in [0, 1].
    Returns:
        (rows * (H * scale + pad), T * (W * scale + pad), 3) uint8.
    """
    slot_rows = [(rgb * soft[:, s, ..., None]).astype(np.uint8) for s in range(soft.shape[1])]
    rows = [rgb, overlay(rgb, true), overlay(rgb, pred), *slot_rows]
    tiles = np.stack(rows)  # (R, T, H, W, 3)
    tiles = np.pad(_upscale(tiles, scale), ((0, 0), (0, 0), (0, pad), (0, pad), (0, 0)), constant_values=255)
    R, T, h, w, _ = tiles.shape
    return tiles.transpose(0, 2, 1, 3, 4).reshape(R * h, T * w, 3)


def save_png(image: np.ndarray, path: Path) -> Path:
    Image.fromarray(image).save(path)
    return path


def save_gif(frames: np.ndarray, path: Path, fps: float = 4.0) -> Path:
    """frames: (T, H, W, 3) uint8 -> an endlessly looping GIF."""
    iio.imwrite(path, frames, extension=".gif", duration=1000 / fps, loop=0)
    return path

"""Pictures of masks: coloured overlays, per-clip PNG grids with labelled rows and an animated GIF."""

from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "MASK_NAMES",
    "PALETTE",
    "clip_grid",
    "colour_masks",
    "grid_labels",
    "label_margin",
    "label_rows",
    "overlay",
    "save_gif",
    "save_png",
    "stack_pictures",
]

# What a grid names the masks it shows, per protocol.MASK_SOURCES entry.
MASK_NAMES = {"decoder": "decoder masks", "grouping": "slot-attention masks"}
_LABEL_PAD = 4  # pixels left and right of a row label

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


def grid_labels(masks: str, n_slots: int) -> list[str]:
    """Row labels of clip_grid: frames, ground truth, the prediction naming its masks, slot k.

    Args:
        masks: a protocol.MASK_SOURCES entry ("decoder" or "grouping").
    """
    return [
        "frames",
        "ground truth",
        f"prediction ({MASK_NAMES[masks]})",
        *(f"slot {k}" for k in range(n_slots)),
    ]


def label_margin(labels: list[str]) -> int:
    """Width in pixels of label_rows's margin: the widest label in PIL's default font, padded."""
    font = ImageFont.load_default()
    return 2 * _LABEL_PAD + max(round(font.getlength(label)) for label in labels)


def label_rows(grid: np.ndarray, labels: list[str]) -> np.ndarray:
    """A white left margin with one label per row, vertically centred on its row.

    Args:
        grid: (len(labels) * h, W, 3) uint8, rows of equal height h.
    Returns:
        (len(labels) * h, margin + W, 3) uint8; margin = label_margin(labels).
    """
    font, margin = ImageFont.load_default(), label_margin(labels)
    h = grid.shape[0] // len(labels)
    canvas = Image.new("RGB", (margin + grid.shape[1], grid.shape[0]), "white")
    canvas.paste(Image.fromarray(grid), (margin, 0))
    draw = ImageDraw.Draw(canvas)
    for r, label in enumerate(labels):
        draw.text((_LABEL_PAD, r * h + h // 2), label, fill="black", font=font, anchor="lm")
    return np.array(canvas)


def clip_grid(
    rgb: np.ndarray,
    true: np.ndarray,
    pred: np.ndarray,
    soft: np.ndarray,
    masks: str = "decoder",
    scale: int = 2,
    pad: int = 2,
) -> np.ndarray:
    """One clip as a labelled picture: rows = frames, GT overlay, predicted overlay, one row per
    slot's soft mask (the frame weighted by it), each named in a left margin (grid_labels).

    Args:
        rgb: (T, H, W, 3) uint8 frames.
        true: (T, K, H, W) GT masks; pred: (T, S, H, W) hard masks; soft: (T, S, H, W) in [0, 1],
            pred and soft from the same masks.
        masks: which masks pred and soft are, a protocol.MASK_SOURCES entry (named in the labels).
    Returns:
        (R * (H * scale + pad), margin + T * (W * scale + pad), 3) uint8 with R = 3 + S rows;
        margin: label_rows's.
    """
    slot_rows = [(rgb * soft[:, s, ..., None]).astype(np.uint8) for s in range(soft.shape[1])]
    rows = [rgb, overlay(rgb, true), overlay(rgb, pred), *slot_rows]
    tiles = np.stack(rows)  # (R, T, H, W, 3)
    tiles = np.pad(_upscale(tiles, scale), ((0, 0), (0, 0), (0, pad), (0, pad), (0, 0)), constant_values=255)
    R, T, h, w, _ = tiles.shape
    grid = tiles.transpose(0, 2, 1, 3, 4).reshape(R * h, T * w, 3)
    return label_rows(grid, grid_labels(masks, soft.shape[1]))


def stack_pictures(pictures: list[np.ndarray], gap: int = 8) -> np.ndarray:
    """Pictures (H_i, W_i, 3) uint8 one above the other, `gap` white rows apart, on a white canvas
    as wide as the widest: (sum H_i + gap * (n - 1), max W_i, 3) uint8."""
    width = max(p.shape[1] for p in pictures)
    rows = []
    for i, picture in enumerate(pictures):
        rows.append(
            np.pad(
                picture,
                ((0, gap if i < len(pictures) - 1 else 0), (0, width - picture.shape[1]), (0, 0)),
                constant_values=255,
            )
        )
    return np.concatenate(rows)


def save_png(image: np.ndarray, path: Path) -> Path:
    """image: (H, W, 3) uint8 -> a lossless PNG at path (its folder is made if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def save_gif(frames: np.ndarray, path: Path, fps: float = 4.0) -> Path:
    """frames: (T, H, W, 3) uint8 -> an endlessly looping GIF."""
    iio.imwrite(path, frames, extension=".gif", duration=1000 / fps, loop=0)
    return path

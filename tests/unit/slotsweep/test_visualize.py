"""Mask pictures: palette colouring, overlays, the per-clip grid layout, PNG and GIF files."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from slotsweep.visualize import PALETTE, clip_grid, colour_masks, overlay, save_gif, save_png

T, H, W, K, S = 3, 8, 10, 4, 5


def _clip(seed: int = 0) -> tuple[np.ndarray, ...]:
    """rgb (T, H, W, 3) uint8, true (T, K, H, W) one-hot, pred (T, S, H, W) one-hot, soft (T, S, H, W)."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)
    true = np.eye(K, dtype=bool)[rng.integers(0, K, (T, H, W))].transpose(0, 3, 1, 2)
    pred = np.eye(S, dtype=bool)[rng.integers(0, S, (T, H, W))].transpose(0, 3, 1, 2)
    logits = rng.normal(size=(T, S, H, W))
    soft = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return rgb, true, pred, soft.astype(np.float32)


def test_colour_masks_uses_the_argmax_slot_colour():
    masks = np.zeros((2, 30, 1, 3))  # (T, S, H, W): 30 slots, more than the palette's 24 colours
    masks[0, 3, 0, 0] = masks[0, 25, 0, 1] = masks[0, 0, 0, 2] = 1
    masks[1, 7, 0, :] = 0.9
    colours = colour_masks(masks)
    assert colours.shape == (2, 1, 3, 3) and colours.dtype == np.uint8
    assert (colours[0, 0, 0] == PALETTE[3]).all()
    assert (colours[0, 0, 1] == PALETTE[25 % len(PALETTE)]).all()  # cycled
    assert (colours[0, 0, 2] == PALETTE[0]).all()
    assert (colours[1] == PALETTE[7]).all()


def test_palette_colours_are_distinct():
    assert len({tuple(c) for c in PALETTE}) == len(PALETTE)


def test_overlay_blends():
    rgb, _, pred, _ = _clip()
    assert np.array_equal(overlay(rgb, pred, alpha=0.0), rgb)
    assert np.array_equal(overlay(rgb, pred, alpha=1.0), colour_masks(pred))
    half = overlay(rgb, pred, alpha=0.5).astype(int)
    expected = (rgb.astype(int) + colour_masks(pred).astype(int)) / 2
    assert np.abs(half - expected).max() <= 0.5
    assert overlay(rgb, pred).shape == rgb.shape


@pytest.mark.parametrize(("scale", "pad"), [(2, 2), (1, 0), (3, 1)])
def test_clip_grid_layout(scale: int, pad: int):
    rgb, true, pred, soft = _clip()
    grid = clip_grid(rgb, true, pred, soft, scale=scale, pad=pad)
    h, w = H * scale + pad, W * scale + pad  # one tile with its padding
    rows = 3 + S  # frames, GT overlay, predicted overlay, one row per slot
    assert grid.shape == (rows * h, T * w, 3) and grid.dtype == np.uint8
    for t in range(T):
        tile = grid[0:h, t * w : (t + 1) * w]
        assert np.array_equal(tile[: H * scale, : W * scale], rgb[t].repeat(scale, 0).repeat(scale, 1))
        assert (tile[H * scale :] == 255).all() and (tile[:, W * scale :] == 255).all()  # white padding
        gt = grid[h : h + H * scale, t * w : t * w + W * scale]
        assert np.array_equal(gt[::scale, ::scale], overlay(rgb[t], true[t]))
        pr = grid[2 * h : 2 * h + H * scale, t * w : t * w + W * scale]
        assert np.array_equal(pr[::scale, ::scale], overlay(rgb[t], pred[t]))
        for s in range(S):  # slot s: the frame weighted by its soft mask
            slot = grid[(3 + s) * h : (3 + s) * h + H * scale, t * w : t * w + W * scale]
            assert np.array_equal(slot[::scale, ::scale], (rgb[t] * soft[t, s, ..., None]).astype(np.uint8))


def test_save_png_roundtrip(tmp_path: Path):
    rgb, true, pred, soft = _clip()
    grid = clip_grid(rgb, true, pred, soft)
    path = save_png(grid, tmp_path / "clip.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (grid.shape[1], grid.shape[0])
        assert np.array_equal(np.asarray(image.convert("RGB")), grid)  # lossless


def test_save_gif_frames(tmp_path: Path):
    rgb, *_ = _clip()
    path = save_gif(rgb, tmp_path / "clip.gif", fps=5.0)
    with Image.open(path) as image:
        assert image.format == "GIF"
        assert image.size == (W, H)
        assert image.n_frames == T
        assert image.info.get("loop") == 0  # loops forever
        assert image.info.get("duration") == pytest.approx(200, abs=10)

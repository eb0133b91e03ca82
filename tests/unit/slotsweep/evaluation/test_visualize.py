"""Mask pictures: palette colouring, overlays, the per-clip grid layout, PNG and GIF files."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from slotsweep.evaluation.visualize import (
    PALETTE,
    clip_grid,
    colour_masks,
    grid_labels,
    label_margin,
    label_rows,
    overlay,
    save_gif,
    save_png,
    stack_pictures,
)

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
    margin = label_margin(grid_labels("decoder", S))
    assert grid.shape == (rows * h, margin + T * w, 3) and grid.dtype == np.uint8  # wider by the margin
    tiles = grid[:, margin:]
    for t in range(T):
        tile = tiles[0:h, t * w : (t + 1) * w]
        assert np.array_equal(tile[: H * scale, : W * scale], rgb[t].repeat(scale, 0).repeat(scale, 1))
        assert (tile[H * scale :] == 255).all() and (tile[:, W * scale :] == 255).all()  # white padding
        gt = tiles[h : h + H * scale, t * w : t * w + W * scale]
        assert np.array_equal(gt[::scale, ::scale], overlay(rgb[t], true[t]))
        pr = tiles[2 * h : 2 * h + H * scale, t * w : t * w + W * scale]
        assert np.array_equal(pr[::scale, ::scale], overlay(rgb[t], pred[t]))
        for s in range(S):  # slot s: the frame weighted by its soft mask
            slot = tiles[(3 + s) * h : (3 + s) * h + H * scale, t * w : t * w + W * scale]
            assert np.array_equal(slot[::scale, ::scale], (rgb[t] * soft[t, s, ..., None]).astype(np.uint8))


def test_grid_labels_name_the_masks():
    assert grid_labels("decoder", 2) == [
        "frames",
        "ground truth",
        "prediction (decoder masks)",
        "slot 0",
        "slot 1",
    ]
    assert grid_labels("grouping", 1)[2] == "prediction (slot-attention masks)"


def test_label_rows_draws_each_label_in_the_margin():
    labels = grid_labels("decoder", 3)
    h = 14  # the default font's text is about 11 pixels high
    grid = np.full((len(labels) * h, 20, 3), 200, np.uint8)
    labelled = label_rows(grid, labels)
    margin = label_margin(labels)
    assert margin > 2 * 4 + 40  # "prediction (decoder masks)" is well over 40 pixels
    assert labelled.shape == (len(labels) * h, margin + 20, 3)
    assert np.array_equal(labelled[:, margin:], grid)  # the picture itself is untouched
    for r, label in enumerate(labels):
        row = labelled[r * h : (r + 1) * h, :margin]
        ink = np.flatnonzero((row < 128).all(axis=-1).any(axis=0))  # columns with dark text pixels
        assert ink.size, f"no text drawn for row {r} ({label!r})"
        assert 1 <= ink[0] <= 6 and ink[-1] < margin  # starts at the left padding, fits the margin
    # the text is the label: rows 3-5 ("slot k") differ from each other, the longest row is widest
    assert not np.array_equal(labelled[3 * h : 4 * h, :margin], labelled[4 * h : 5 * h, :margin])
    widths = [
        np.flatnonzero((labelled[r * h : (r + 1) * h, :margin] < 128).all(-1).any(0))[-1] for r in range(6)
    ]
    assert int(np.argmax(widths)) == 2


def test_clip_grid_says_which_masks_it_shows():
    clip = _clip()
    decoder, grouping = clip_grid(*clip, masks="decoder"), clip_grid(*clip, masks="grouping")
    wider = label_margin(grid_labels("grouping", S)) - label_margin(grid_labels("decoder", S))
    assert wider > 0 and grouping.shape[1] == decoder.shape[1] + wider  # "slot-attention" is longer
    tiles = T * (W * 2 + 2)  # the pictures right of the margins are the same
    assert np.array_equal(grouping[:, -tiles:], decoder[:, -tiles:])
    with pytest.raises(KeyError):
        clip_grid(*clip, masks="decoders")


def test_stack_pictures_pads_to_the_widest():
    a, b = np.zeros((3, 5, 3), np.uint8), np.zeros((2, 7, 3), np.uint8)
    stacked = stack_pictures([a, b], gap=4)
    assert stacked.shape == (3 + 4 + 2, 7, 3)
    assert (stacked[:3, :5] == 0).all() and (stacked[:3, 5:] == 255).all()  # a, padded white
    assert (stacked[3:7] == 255).all() and (stacked[7:] == 0).all()  # the gap, then b


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

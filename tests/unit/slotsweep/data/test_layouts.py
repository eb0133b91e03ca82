"""Tests of the reference datasets' sample formats -> frames (T, H, W, 3) and masks (T, K, H, W)."""

import numpy as np
import pytest

from slotsweep.data.layouts import LAYOUTS
from slotsweep.errors import SlotsweepError


def test_movi_ids_become_one_hot_with_background_channel_0():
    ids = np.array([[[0, 1], [3, 3]]], np.uint8)[..., None]  # (T=1, 2, 2, 1)
    masks = LAYOUTS["movi"].to_masks(ids, 5, "here")
    assert masks.shape == (1, 5, 2, 2) and masks.dtype == bool
    assert (masks.sum(axis=1) == 1).all()  # every pixel in exactly one channel
    assert masks[0, 0].tolist() == [[True, False], [False, False]]
    assert masks[0, 3].tolist() == [[False, False], [True, True]]
    assert not masks[0, 4].any()  # padding
    assert LAYOUTS["movi"].to_masks(ids, None, "here").shape == (1, 4, 2, 2)  # as many as used
    assert LAYOUTS["movi"].ignore_background and not LAYOUTS["movi"].ignore_overlaps


def test_ytvis_channels_become_binary_without_background():
    seg = np.zeros((2, 3, 3, 2), np.uint8)
    seg[0, 0, 0, 0] = 7  # instance 0 x category 7
    seg[1, 2, 2, 1] = 40
    masks = LAYOUTS["ytvis"].to_masks(seg, 25, "here")
    assert masks.shape == (2, 25, 3, 3)
    assert masks[0, 0, 0, 0] and masks[1, 1, 2, 2] and masks.sum() == 2
    layout = LAYOUTS["ytvis"]
    assert layout.frames_key == "video" and not layout.ignore_background and not layout.ignore_overlaps


def test_coco_image_is_a_one_frame_video_with_overlapping_instances():
    layout = LAYOUTS["coco"]
    image = np.zeros((4, 5, 3), np.uint8)
    assert layout.to_frames(image).shape == (1, 4, 5, 3)
    seg = np.zeros((2, 4, 5), np.uint8)
    seg[:, 1, 1] = [3, 9]  # both instances cover pixel (1, 1)
    masks = layout.to_masks(seg, 63, "here")
    assert masks.shape == (1, 63, 4, 5) and masks[0, :2, 1, 1].all()
    assert layout.frames_key == "image" and layout.ignore_overlaps


@pytest.mark.parametrize(
    ("layout", "masks"),
    [
        ("movi", np.full((1, 2, 2, 1), 11, np.uint8)),
        ("ytvis", np.ones((1, 2, 2, 26), np.uint8)),
        ("coco", np.ones((64, 2, 2), np.uint8)),
    ],
)
def test_too_many_instances_name_the_key(layout, masks):
    K = {"movi": 11, "ytvis": 25, "coco": 63}[layout]
    with pytest.raises(SlotsweepError, match=rf"sample x: .* dataset.n_mask_channels={K}; raise it"):
        LAYOUTS[layout].to_masks(masks, K, "sample x")

"""Tests of the clip transforms against torchvision's (the reference's) resize and crop semantics."""

import random

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from slotsweep.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from slotsweep.data.video_transforms import ClipTransform, center_square, resize_short_side, short_side_size
from slotsweep.errors import SlotsweepError


def _frames(T=3, H=20, W=30, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (T, H, W, 3), dtype=np.uint8)


def _unnormalise(video: torch.Tensor) -> torch.Tensor:
    """(T, 3, H, W) normalised -> [0, 1]."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return video * std + mean


@pytest.mark.parametrize(("H", "W", "size"), [(20, 30, 12), (30, 20, 12), (16, 16, 28), (13, 29, 16)])
def test_short_side_resize_matches_torchvision(H, W, size):
    x = torch.from_numpy(_frames(2, H, W)).permute(0, 3, 1, 2).float() / 255
    ours = resize_short_side(x, size)
    theirs = TF.resize(x, size, interpolation=InterpolationMode.BICUBIC, antialias=False).clamp(0, 1)
    assert ours.shape == theirs.shape and min(ours.shape[-2:]) == size
    torch.testing.assert_close(ours, theirs)


def test_center_square_matches_torchvision():
    x = torch.arange(2 * 7 * 12).view(2, 7, 12)
    torch.testing.assert_close(center_square(x), TF.center_crop(x, [7, 7]))
    torch.testing.assert_close(center_square(x.mT), TF.center_crop(x.mT, [7, 7]))


def test_train_clip_crops_one_square_for_all_frames():
    frames = _frames(4, 20, 30)
    out = ClipTransform(input_size=20, mask_size=8, hflip=False).train(frames, random.Random(0))
    assert set(out) == {"video"} and out["video"].shape == (4, 3, 20, 20)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255  # short side already 20: no resize
    pixels = _unnormalise(out["video"])
    offsets = [left for left in range(11) if torch.allclose(pixels, x[..., :, left : left + 20], atol=1e-5)]
    assert len(offsets) == 1  # one shared crop of the frames, no flip


def test_train_flip_is_per_clip_and_about_half_the_time():
    frames = _frames(2, 12, 12)
    transform = ClipTransform(input_size=12, mask_size=8, hflip=True)
    plain = ClipTransform(input_size=12, mask_size=8, hflip=False).train(frames, random.Random(0))["video"]
    rng = random.Random(1)
    flips = 0
    for _ in range(200):
        video = transform.train(frames, rng)["video"]
        flipped = torch.equal(video, plain.flip(-1))
        assert flipped or torch.equal(video, plain)  # both frames flipped together, or none
        flips += flipped
    assert 70 < flips < 130


def test_val_clip_crops_the_centre_and_resizes_video_rgb_and_masks():
    frames = _frames(3, 20, 30)
    masks = np.zeros((3, 2, 20, 30), bool)
    masks[:, 0, :, :15] = True  # left half of the frame
    masks[:, 1, 5:10, 10:20] = True
    out = ClipTransform(input_size=10, mask_size=4, hflip=True).val(frames, masks)
    assert out["video"].shape == (3, 3, 10, 10) and out["video"].dtype == torch.float32
    assert out["rgb"].shape == (3, 10, 10, 3) and out["rgb"].dtype == torch.uint8
    assert out["masks"].shape == (3, 2, 4, 4) and out["masks"].dtype == torch.bool
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    expected = TF.resize(TF.center_crop(x, [20, 20]), [10, 10], InterpolationMode.BICUBIC, antialias=False)
    torch.testing.assert_close(_unnormalise(out["video"]), expected.clamp(0, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(out["rgb"].permute(0, 3, 1, 2), (expected.clamp(0, 1) * 255).round().byte())
    crop = torch.from_numpy(masks[:, :, :, 5:25]).byte()  # the centred 20x20 square
    nearest = torch.nn.functional.interpolate(crop, size=(4, 4), mode="nearest-exact").bool()
    assert torch.equal(out["masks"], nearest)
    assert out["masks"][:, 0, :, :2].all() and not out["masks"][:, 0, :, 2:].any()  # x < 15 -> cols 0-1


def test_val_without_masks_and_bad_inputs():
    out = ClipTransform(input_size=8, mask_size=8, hflip=False).val(_frames(1, 8, 8))
    assert set(out) == {"video", "rgb"}
    assert torch.equal(out["rgb"][0], torch.from_numpy(_frames(1, 8, 8)[0]))  # no resize: exact
    with pytest.raises(ValueError, match="do not match frames"):
        ClipTransform(8, 8, False).val(_frames(2, 8, 8), np.zeros((2, 1, 8, 9), bool))
    with pytest.raises(ValueError, match=r"uint8 \(T, H, W, 3\)"):
        ClipTransform(8, 8, False).val(_frames(1, 8, 8).astype(np.float32))


@pytest.mark.parametrize("crops", [1, 3])
def test_every_train_draw_is_one_of_the_cached_views(crops):
    """train(frames, rng) == train_views(frames)[view_index(draw)] for the same random state."""
    frames = np.random.default_rng(0).integers(0, 256, (2, 20, 31, 3), dtype=np.uint8)
    transform = ClipTransform(input_size=16, mask_size=8, hflip=True, crops=crops)
    views = transform.train_views(frames)  # (V, T, 3, S, S)
    assert views.shape == (transform.n_train_views, 2, 3, 16, 16) == (2 * crops, 2, 3, 16, 16)
    H, W = short_side_size(20, 31, 16)
    seen = set()
    for seed in range(40):
        view = transform.draw(H, W, random.Random(seed))
        index = transform.view_index(view, H, W)
        torch.testing.assert_close(transform.train(frames, random.Random(seed))["video"], views[index])
        seen.add(index)
    assert seen == set(range(2 * crops))  # every view is drawn
    positions = transform.crop_positions(H, W)
    ends = [(0, (W - 16) // 2)] if crops == 1 else [(0, 0), (0, W - 16)]  # the centre, or both ends
    assert [positions[0], positions[-1]][: len(ends)] == ends


def test_crops_at_any_offset_cannot_be_cached():
    transform = ClipTransform(input_size=16, mask_size=8, hflip=True)
    assert transform.crop_positions(16, 16) == [(0, 0)]  # square frames: one position
    with pytest.raises(
        SlotsweepError, match=r"dataset.train_crops=null.*9 offsets of 16x24.*train_crops=<n>"
    ):
        transform.crop_positions(16, 24)

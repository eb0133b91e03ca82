"""Tests of the clip transforms against torchvision's (the reference's) resize and crop semantics."""

import itertools
import random

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from real_formats import write_coco_shards, write_movi_shards, write_ytvis_shards
from slotsweep.data.shards import ShardDataModule, read_samples
from slotsweep.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from slotsweep.data.video_files import VideoFolderDataModule, write_video
from slotsweep.data.video_transforms import (
    ClipTransform,
    ClipView,
    center_square,
    collate_clips,
    frames_to_video,
    render,
    short_side_size,
)
from slotsweep.errors import SlotsweepError


def _frames(T=3, H=20, W=30, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (T, H, W, 3), dtype=np.uint8)


def _train_video(transform: ClipTransform, frames: np.ndarray, rng: random.Random) -> torch.Tensor:
    """What training feeds the model for one clip: the loader's sample, collated, rendered."""
    return frames_to_video(collate_clips([transform.train(frames, rng)]))["video"][0]


def _unnormalise(video: torch.Tensor) -> torch.Tensor:
    """(T, 3, H, W) normalised -> [0, 1]."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return video * std + mean


@pytest.mark.parametrize(("H", "W", "size"), [(20, 30, 12), (30, 20, 12), (16, 16, 28), (13, 29, 16)])
def test_short_side_resize_matches_torchvision(H, W, size):
    frames = _frames(2, H, W)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    theirs = TF.resize(x, size, interpolation=InterpolationMode.BICUBIC, antialias=False).clamp(0, 1)
    resized = short_side_size(H, W, size)
    assert tuple(theirs.shape[-2:]) == resized and min(resized) == size
    ends = [(0, 0), (resized[0] - size, resized[1] - size)]  # the crops at both ends of the long side
    views = [ClipView(H, W, *resized, top, left, size, False) for top, left in ends]
    ours = render(torch.from_numpy(frames)[None].expand(2, -1, -1, -1, -1), views)
    for view, clip in zip(views, ours, strict=True):
        torch.testing.assert_close(
            clip, theirs[..., view.top : view.top + size, view.left : view.left + size]
        )


def test_center_square_matches_torchvision():
    x = torch.arange(2 * 7 * 12).view(2, 7, 12)
    torch.testing.assert_close(center_square(x), TF.center_crop(x, [7, 7]))
    torch.testing.assert_close(center_square(x.mT), TF.center_crop(x.mT, [7, 7]))


def test_train_clip_crops_one_square_for_all_frames():
    frames = _frames(4, 20, 30)
    transform = ClipTransform(input_size=20, mask_size=8, hflip=False)
    sample = transform.train(frames, random.Random(0))
    assert set(sample) == {"frames", "view"} and torch.equal(sample["frames"], torch.from_numpy(frames))
    video = _train_video(transform, frames, random.Random(0))
    assert video.shape == (4, 3, 20, 20)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255  # short side already 20: no resize
    pixels = _unnormalise(video)
    offsets = [left for left in range(11) if torch.allclose(pixels, x[..., :, left : left + 20], atol=1e-5)]
    assert len(offsets) == 1  # one shared crop of the frames, no flip


def test_train_flip_is_per_clip_and_about_half_the_time():
    frames = _frames(2, 12, 12)
    transform = ClipTransform(input_size=12, mask_size=8, hflip=True)
    plain = _train_video(ClipTransform(input_size=12, mask_size=8, hflip=False), frames, random.Random(0))
    rng = random.Random(1)
    flips = 0
    for _ in range(200):
        video = _train_video(transform, frames, rng)
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
    with pytest.raises(ValueError, match=r"uint8 \(\.\.\., T, H, W, 3\)"):
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
        torch.testing.assert_close(_train_video(transform, frames, random.Random(seed)), views[index])
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


# --- The training device's path vs the reference's per-clip CPU transform ---------------------

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def _reference_input(frames: torch.Tensor, view: ClipView) -> torch.Tensor:
    """The reference's train transform of one clip on the CPU, written with torchvision: (T, H, W, 3)
    uint8 -> float in [0, 1], short side resized to S (bicubic, antialias=False, clamped), the S x S
    crop at the view's corner, its flip, ImageNet normalisation -> (T, 3, S, S)."""
    x = frames.permute(0, 3, 1, 2).float() / 255
    x = TF.resize(x, view.size, InterpolationMode.BICUBIC, antialias=False).clamp(0, 1)
    assert tuple(x.shape[-2:]) == (view.resized_height, view.resized_width)
    x = TF.crop(x, view.top, view.left, view.size, view.size)
    return TF.normalize(TF.hflip(x) if view.flipped else x, IMAGENET_MEAN, IMAGENET_STD)


def _shard_datamodule(root, layout: str, folder: str, T: int):
    return ShardDataModule(
        data_dir=str(root),
        layout=layout,
        train_shards=f"{folder}-train-{{000000..000001}}.tar",
        val_shards=f"{folder}-validation-000000.tar",
        convert_command="-",
        n_mask_channels=25 if layout != "coco" else 63,
        input_size=24,  # an upsampling, as MOVi's 128 -> 224
        mask_size=8,
        train_clip_frames=T,
        val_protocol="videos",
        val_chunk_frames=1,
        shuffle_size=4,
        hflip=True,
        train_crops=None,  # any offset along the long side: the reference's RandomCrop
        batch_size=4,
        val_batch_size=2,
        num_workers=0,
    )


@pytest.fixture(scope="module")
def train_loaders(tmp_path_factory):
    """{name: (train loader, stored videos {key: (T, H, W, 3)})} of every reader in its real format."""
    root = tmp_path_factory.mktemp("formats")
    movi = write_movi_shards(root, n_frames=8, size=16)["train"]
    ytvis = write_ytvis_shards(root, n_train=5)["train"]  # landscape and portrait: padded batches
    coco = write_coco_shards(root, n_train=5)["train"]  # images of various sizes
    videos = {f"v{i}": _frames(6 + i, 14, 19 + i, seed=i) for i in range(4)}
    (root / "videos").mkdir()
    for name, frames in videos.items():
        write_video(root / "videos" / f"{name}.mp4", frames)
    folder = VideoFolderDataModule(
        root=str(root / "videos"),
        extensions=[".mp4"],
        n_mask_channels=2,
        ignore_background=False,
        ignore_overlaps=False,
        input_size=24,
        mask_size=8,
        train_clip_frames=3,
        val_protocol="videos",
        val_chunk_frames=3,
        hflip=True,
        train_crops=None,
        batch_size=4,
        val_batch_size=1,
        num_workers=0,
        skip_corrupt=False,
    )
    modules = {
        "movi": (_shard_datamodule(root, "movi", "movi_c/movi_c", 4), movi, "video"),
        "ytvis": (_shard_datamodule(root, "ytvis", "ytvis2021_resized/ytvis", 4), ytvis, "video"),
        "coco": (_shard_datamodule(root, "coco", "coco/coco", 1), coco, "image"),
    }
    loaders = {}
    for name, (dm, paths, key) in modules.items():
        dm.setup("fit")
        stored = {}
        for sample in read_samples(paths, (key,)):
            stored[sample["__key__"]] = dm.layout.to_frames(sample[key])
        loaders[name] = (dm.train_dataloader(), stored)
    folder.setup("fit")
    loaders["video_folder"] = (folder.train_dataloader(), None)
    return loaders


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reader", ["movi", "ytvis", "coco", "video_folder"])
def test_device_transform_gives_the_reference_model_inputs(train_loaders, reader, device):
    """The loaders ship stored uint8 frames of the chosen window (nothing else decoded) and the
    view they drew; `frames_to_video` on the device gives the reference's per-clip CPU transform."""
    loader, stored = train_loaders[reader]
    sizes, flips = set(), set()
    epochs = itertools.chain.from_iterable(itertools.repeat(loader))  # the folder has one batch an epoch
    for batch in itertools.islice(epochs, 8):  # 32 draws: both flips, several frame sizes
        assert batch["frames"].dtype == torch.uint8 and batch["frames"].shape[-1] == 3
        video = frames_to_video({k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()})
        video = video["video"].cpu()
        assert video.shape == (*batch["frames"].shape[:2], 3, 24, 24) and video.dtype == torch.float32
        for b, view in enumerate(batch["views"]):
            frames = batch["frames"][b, :, : view.height, : view.width]
            if stored is not None:  # the window of a stored video, at its stored size
                T = len(frames)
                windows = [v[s : s + T] for v in stored.values() for s in range(0, len(v) - T + 1, T)]
                assert any(np.array_equal(w, frames.numpy()) for w in windows)
            torch.testing.assert_close(video[b], _reference_input(frames, view), atol=2e-5, rtol=0)
            sizes.add((view.height, view.width))
            flips.add(view.flipped)
    assert flips == {False, True}
    if reader in ("ytvis", "coco"):
        assert len(sizes) > 1  # batches of several frame sizes, padded and rendered by size

"""Tests of the `shapes` generator, its cache and its datamodule (small clips, CPU only)."""

import dataclasses
import inspect
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.colors import rgb_to_hsv
from omegaconf import OmegaConf

from slotsweep.build import build_datamodule
from slotsweep.data.shapes import (
    ShapesDataModule,
    ShapesParams,
    cached_split,
    generate_clip,
    generate_split,
)
from slotsweep.data.transforms import IMAGENET_MEAN, IMAGENET_STD, frames_to_tensor
from slotsweep.errors import SlotsweepError
from slotsweep.runs.experiment import NON_RESULT_DECLARATION

CONFIG = Path(__file__).parents[4] / "conf" / "dataset" / "shapes.yaml"
GENERATOR_KEYS = [f.name for f in dataclasses.fields(ShapesParams)]


def yaml_defaults(data_dir: Path) -> dict:
    """The constructor arguments of conf/dataset/shapes.yaml, with the data root filled in."""
    cfg = OmegaConf.load(CONFIG)
    cfg.data_dir, cfg.input_size = str(data_dir), None  # input_size follows encoder.img_size
    args = OmegaConf.to_container(cfg, resolve=True)
    del args["_target_"], args[NON_RESULT_DECLARATION]  # the latter is for runs.identity
    return args


def small_args(data_dir: Path, **overrides) -> dict:
    """The YAML defaults shrunk to a few small clips, so each test runs in well under a second."""
    args = yaml_defaults(data_dir)
    args.update(resolution=32, n_frames=6, n_train_clips=8, n_val_clips=5, batch_size=4, val_batch_size=2)
    args.update(overrides)
    return args


def generator_params(args: dict) -> ShapesParams:
    return ShapesParams(**{key: args[key] for key in GENERATOR_KEYS})


def flat_params(tmp_path: Path, **overrides) -> ShapesParams:
    """No background texture and no pixel noise: the background is one exact colour."""
    args = small_args(tmp_path, background_noise=0.0, pixel_noise=0.0, **overrides)
    return generator_params(args)


def test_yaml_keys_are_the_constructor_args(tmp_path):
    cfg = OmegaConf.load(CONFIG)
    assert cfg._target_ == "slotsweep.data.shapes.ShapesDataModule"
    params = set(inspect.signature(ShapesDataModule.__init__).parameters) - {"self"}
    assert set(cfg.keys()) - {"_target_", NON_RESULT_DECLARATION} == params
    # the dataset must not change with the training seed
    assert not OmegaConf.is_interpolation(cfg, "seed")
    assert OmegaConf.is_interpolation(cfg, "input_size")  # follows encoder.img_size
    cfg.data_dir, cfg.input_size = str(tmp_path), 64
    assert isinstance(build_datamodule(cfg), ShapesDataModule)


def test_frames_are_resized_to_the_encoder_input_masks_are_not(tmp_path):
    module = ShapesDataModule(**{**small_args(tmp_path), "input_size": 48})
    module.setup("fit")
    train = next(iter(module.train_dataloader()))
    val = next(iter(module.val_dataloader()))
    H = module.resolution
    assert train["video"].shape[-2:] == val["video"].shape[-2:] == (48, 48)
    assert val["masks"].shape[-2:] == val["rgb"].shape[-3:-1] == (H, H)


def test_generation_is_deterministic_per_seed_and_clip(tmp_path):
    params = generator_params(small_args(tmp_path))
    frames, masks = generate_split(params, "train", 5)
    frames2, masks2 = generate_split(params, "train", 5)
    assert frames.tobytes() == frames2.tobytes() and masks.tobytes() == masks2.tobytes()
    # clip i does not depend on how many clips are generated
    frames3, masks3 = generate_split(params, "train", 3)
    np.testing.assert_array_equal(frames3, frames[:3])
    np.testing.assert_array_equal(masks3, masks[:3])
    other_seed, _ = generate_split(dataclasses.replace(params, seed=params.seed + 1), "train", 5)
    assert not np.array_equal(other_seed, frames)
    val, _ = generate_split(params, "val", 5)
    assert not np.array_equal(val, frames)


def test_masks_match_the_pixels_exactly(tmp_path):
    frames, masks = generate_split(flat_params(tmp_path), "val", 20)
    assert frames.dtype == np.uint8 and masks.dtype == np.uint8
    assert frames.shape == (20, 6, 32, 32, 3) and masks.shape == (20, 6, 32, 32)
    for clip, ids in zip(frames, masks, strict=True):
        background = clip[ids == 0][0]
        # a pixel has the background colour exactly when the mask says background
        np.testing.assert_array_equal((clip == background).all(-1), ids == 0)
        # each id keeps one hue (its sprite) in every frame, and ids have different hues
        hue = rgb_to_hsv(clip / 255.0)[..., 0]
        medians = []
        for k in range(1, ids.max() + 1):
            hues = hue[ids == k]
            median = np.median(hues)
            distance = np.abs((hues - median + 0.5) % 1.0 - 0.5)  # circular
            assert distance.max() < 0.01, f"object {k} changes hue"
            medians.append(median)
        gaps = np.abs((np.subtract.outer(medians, medians) + 0.5) % 1.0 - 0.5)
        assert (gaps + np.eye(len(medians)) > 0.04).all(), "two objects share a hue"


def test_every_object_is_visible_in_every_frame_and_counts_are_in_range(tmp_path):
    params = flat_params(tmp_path, n_objects_min=2, n_objects_max=4)
    _, masks = generate_split(params, "train", 30)
    counts = []
    for ids in masks:
        n = int(ids.max())
        counts.append(n)
        for frame in ids:
            assert set(np.unique(frame)) - {0} == set(range(1, n + 1))
    assert min(counts) >= 2 and max(counts) <= 4
    assert set(counts) == {2, 3, 4}


def test_objects_occlude_each_other(tmp_path):
    params = generator_params(small_args(tmp_path))
    fractions = [generate_clip(np.random.default_rng([0, i]), params).visible_fraction for i in range(30)]
    occluded = [(f < 1).any() for f in fractions]
    assert sum(occluded) >= 3, "occlusion should happen in some clips"
    assert not all(occluded), "some clips should have no occlusion"
    assert min(f.min() for f in fractions) >= 0.2


def test_objects_move(tmp_path):
    _, masks = generate_split(generator_params(small_args(tmp_path)), "train", 20)
    moved = []
    for ids in masks:
        for k in range(1, ids.max() + 1):
            ys0, xs0 = np.nonzero(ids[0] == k)
            ys1, xs1 = np.nonzero(ids[-1] == k)
            moved.append(np.hypot(ys1.mean() - ys0.mean(), xs1.mean() - xs0.mean()) > 1.0)
    assert np.mean(moved) > 0.8


def test_background_is_noisy(tmp_path):
    frames, masks = generate_split(generator_params(small_args(tmp_path)), "train", 3)
    for clip, ids in zip(frames, masks, strict=True):
        background = clip[0][ids[0] == 0].astype(float)
        assert background.std(0).min() > 3  # in uint8 levels; a flat background would be 0
        # per-frame noise: the same background pixel differs between frames
        both = (ids[0] == 0) & (ids[1] == 0)
        assert (clip[0][both] != clip[1][both]).any()


def test_default_config_averages_at_least_three_objects(tmp_path):
    args = yaml_defaults(tmp_path)
    assert (args["n_objects_min"] + args["n_objects_max"]) / 2 >= 3
    _, masks = generate_split(generator_params(args), "val", 60)
    assert masks.reshape(60, -1).max(1).mean() >= 3


def test_cache_is_reused_and_never_stale(tmp_path):
    dm = ShapesDataModule(**small_args(tmp_path))
    dm.prepare_data()
    files = sorted((tmp_path / "shapes").rglob("*.npy"))
    assert len(files) == 4  # frames and masks of train and val
    assert not list((tmp_path / "shapes").rglob("*.tmp"))
    stamps = [f.stat().st_mtime_ns for f in files]

    again = ShapesDataModule(**small_args(tmp_path, batch_size=2, num_workers=1, hflip=False))
    again.prepare_data()
    again.setup("fit")
    assert sorted((tmp_path / "shapes").rglob("*.npy")) == files
    assert [f.stat().st_mtime_ns for f in files] == stamps, "cache was regenerated"
    frames, masks = generate_split(dm.params, "val", 5)
    np.testing.assert_array_equal(np.load(cached_split(dm.params, "val", 5, tmp_path)[0]), frames)

    # a generator change gets its own directory; the old one is left alone
    faster = ShapesDataModule(**small_args(tmp_path, max_speed=0.1))
    faster.prepare_data()
    assert faster.params.digest() != dm.params.digest()
    dirs = sorted(p.name for p in (tmp_path / "shapes").iterdir())
    assert dirs == sorted([dm.params.digest(), faster.params.digest()])
    new_frames = np.load(cached_split(faster.params, "val", 5, tmp_path)[0])
    assert not np.array_equal(new_frames, frames)
    assert [f.stat().st_mtime_ns for f in files] == stamps


def test_train_batches_follow_the_contract(tmp_path):
    dm = ShapesDataModule(**small_args(tmp_path, train_clip_frames=3))
    dm.setup("fit")
    assert dm.n_frames == 6 and dm.resolution == 32
    assert dm.ignore_background is True and dm.ignore_overlaps is False
    clips = np.load(cached_split(dm.params, "train", 8, tmp_path)[0])
    torch.manual_seed(0)
    batches = list(dm.train_dataloader())
    assert len(batches) == 2  # 8 clips / batch 4
    flips = []
    for batch in batches:
        assert set(batch) == {"video"}
        video = batch["video"]
        assert video.dtype == torch.float32 and video.shape == (4, 3, 3, 32, 32)
        # every sample is a contiguous window of a stored clip, flipped or not
        for sample in video:
            mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
            std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
            rgb = ((sample * std + mean) * 255).round().byte().permute(0, 2, 3, 1).numpy()
            matches = [
                flip
                for clip in clips
                for start in range(4)
                for flip in (False, True)
                if np.array_equal(clip[start : start + 3, :, ::-1] if flip else clip[start : start + 3], rgb)
            ]
            assert len(matches) >= 1
            flips.append(matches[0])
    assert any(flips) and not all(flips)


def test_train_sampling_is_reproducible_per_seed(tmp_path):
    dm = ShapesDataModule(**small_args(tmp_path, num_workers=1))
    dm.setup("fit")

    def first_epoch(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return torch.cat([b["video"] for b in dm.train_dataloader()])

    assert torch.equal(first_epoch(0), first_epoch(0))
    assert not torch.equal(first_epoch(0), first_epoch(1))


def test_val_batches_cover_each_clip_once(tmp_path):
    dm = ShapesDataModule(**small_args(tmp_path, n_objects_max=4))
    dm.setup("validate")
    frames, ids = (np.load(p) for p in cached_split(dm.params, "val", 5, tmp_path))
    batches = list(dm.val_dataloader())
    assert [len(b["video"]) for b in batches] == [2, 2, 1]
    for batch in batches:
        B = len(batch["video"])
        assert batch["video"].shape == (B, 6, 3, 32, 32) and batch["video"].dtype == torch.float32
        assert batch["masks"].shape == (B, 6, 5, 32, 32) and batch["masks"].dtype == torch.bool
        assert batch["rgb"].shape == (B, 6, 32, 32, 3) and batch["rgb"].dtype == torch.uint8
        assert torch.equal(batch["video"], frames_to_tensor(batch["rgb"]))
        assert (batch["masks"].sum(2) == 1).all()  # one channel per pixel, no overlaps
    assert torch.cat([b["index"] for b in batches]).tolist() == [0, 1, 2, 3, 4]  # seeds its slots
    rgb = torch.cat([b["rgb"] for b in batches]).numpy()
    masks = torch.cat([b["masks"] for b in batches]).numpy()
    np.testing.assert_array_equal(rgb, frames)
    np.testing.assert_array_equal(masks.argmax(2), ids)
    np.testing.assert_array_equal(masks[:, :, 0], ids == 0)  # channel 0 = background


def test_dataset_pickles_without_its_arrays(tmp_path):
    dm = ShapesDataModule(**small_args(tmp_path))
    dm.setup("validate")
    blob = pickle.dumps(dm.val_set)
    assert len(blob) < 10_000  # paths only, not the memory-mapped clips
    copy = pickle.loads(blob)
    assert len(copy) == 5
    assert torch.equal(copy[3]["rgb"], dm.val_set[3]["rgb"])


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("n_objects_min", 0),
        ("n_objects_max", 1),  # below n_objects_min=2
        ("n_objects_max", 13),
        ("train_clip_frames", 7),  # longer than n_frames=6
        ("train_clip_frames", 0),
        ("resolution", 0),
        ("resolution", 8),  # sprites of 0.8 px
        ("n_frames", 0),
        ("n_train_clips", 0),
        ("n_val_clips", -1),
        ("batch_size", 9),  # more than n_train_clips=8
        ("val_batch_size", 0),
        ("num_workers", -1),
        ("object_size_max", 0.5),
        ("object_size_min", 0.3),  # above object_size_max
        ("max_speed", -0.1),
        ("pixel_noise", -1.0),
        ("seed", -1),
        ("seed", 1.5),
        ("hflip", "yes"),
    ],
)
def test_bad_arguments_name_the_key(tmp_path, key, value):
    with pytest.raises(SlotsweepError, match=re.escape(f"dataset.{key}={value!r}")):
        ShapesDataModule(**small_args(tmp_path, **{key: value}))


def test_impossible_layouts_are_an_error(tmp_path):
    params = flat_params(
        tmp_path, n_objects_min=12, n_objects_max=12, object_size_min=0.4, object_size_max=0.45
    )
    with pytest.raises(SlotsweepError, match="dataset.n_objects_max=12"):
        generate_clip(np.random.default_rng(0), params)

"""The feature cache on every file reader (reference shards: MOVi-C, YT-VIS, COCO; a video folder),
on data in the real formats (tests/real_formats.py): training from the cache gives the losses of
training from images, with random windows, crops and flips; a second trial reuses the cache; where
the cache lives is no part of the experiment id."""

import csv
import itertools
import json
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import DictConfig

from real_formats import write_coco_shards, write_movi_shards, write_ytvis_shards
from slotsweep.data.video_files import write_masks, write_video
from slotsweep.data.video_transforms import frames_to_video
from slotsweep.runs import experiment
from slotsweep.training import task

STORAGE_TOL = 2e-3  # relative: features are stored as float16 (11 significant bits)

# The tiny encoder at 32 px (4x4 patches of 8): cheap, and crops of 32 from frames resized to a
# short side of 32 still have several positions on the non-square fixtures.
COMMON = [
    "trainer=debug",
    "encoder=tiny",
    "encoder.img_size=32",
    "dataset.mask_size=16",
    "dataset.hflip=true",
]
READERS = {
    "movi_c": [  # square frames: one crop position, flips and 4-frame windows of 8-frame videos
        "dataset=movi_c",
        "dataset.train_shards='movi_c/movi_c-train-{000000..000001}.tar'",
        "dataset.val_shards='movi_c/movi_c-validation-{000000..000000}.tar'",
        "dataset.shuffle_size=4",
    ],
    "ytvis": [  # landscape and portrait videos of 5..13 frames, 3 crop positions, 6-frame val chunks
        "dataset=ytvis",
        "dataset.train_shards='ytvis2021_resized/ytvis-train-{000000..000002}.tar'",
        "dataset.val_shards='ytvis2021_resized/ytvis-validation-{000000..000002}.tar'",
        "dataset.shuffle_size=4",
        "dataset.train_crops=3",
    ],
    "coco": [  # images of various sizes as one-frame videos
        "dataset=coco",
        "loss=dinosaur",
        "dataset.train_shards='coco/coco-train-{000000..000002}.tar'",
        "dataset.val_shards='coco/coco-validation-{000000..000002}.tar'",
        "dataset.shuffle_size=4",
        "dataset.train_crops=2",
    ],
    "video_folder": [  # mp4 files decoded by decord, masks beside the validation videos
        "dataset=video_folder",
        "dataset.train_crops=2",
    ],
}


def _write_video_folder(root: Path) -> None:
    """3 train and 2 validation mp4 clips of 20x30 frames (rectangles drifting), with masks."""
    rng = np.random.default_rng(0)
    for name, n_frames in [
        ("train0", 6),
        ("train1", 8),
        ("train2", 5),
        ("validation/val0", 7),
        ("validation/val1", 4),
    ]:
        ids = np.zeros((n_frames, 20, 30), np.uint8)
        for k, (y, x) in enumerate(rng.integers(0, 12, (2, 2)), start=1):
            for t in range(n_frames):
                ids[t, y : y + 8, x + t : x + t + 10] = k
        palette = rng.integers(30, 220, (3, 3))
        path = root / f"{name}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, palette[ids].astype(np.uint8))
        if name.startswith("validation"):
            masks = ids[:, None] == np.arange(1, 3)[None, :, None, None]  # (T, 2, H, W)
            write_masks(path.with_name(f"{path.stem}.masks.npz"), masks, background=False)


@pytest.fixture(scope="module")
def reader_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reader_data")
    write_movi_shards(root, "movi_c", n_train=4, n_val=2, per_shard=2, n_frames=8, size=24)
    write_ytvis_shards(root, "ytvis2021_resized")
    write_coco_shards(root)
    _write_video_folder(root / "videos")
    return root


def logged(run_dir: Path, key: str) -> dict[int, float]:
    """{step: value} of one metric in the run's CSVLogger metrics.csv."""
    with (run_dir / "logs" / "version_0" / "metrics.csv").open() as f:
        return {int(row["step"]): float(row[key]) for row in csv.DictReader(f) if row.get(key)}


def manifests(features_dir: Path) -> dict[Path, str]:
    return {p: p.read_text() for p in sorted(features_dir.glob("*/manifest.json"))}


@pytest.mark.parametrize("reader", list(READERS))
def test_the_cache_on_every_reader(
    compose_train: Callable[..., DictConfig], reader_data: Path, tmp_path: Path, reader: str
):
    def compose(*overrides: str) -> DictConfig:
        cfg = compose_train(*COMMON, *READERS[reader], *overrides, debug=False)
        cfg.paths.data_dir = str(reader_data)  # compose_train points it at the session's shapes dir
        return cfg

    def run(cfg: DictConfig) -> Path:
        task.run(cfg)
        return experiment.run_dir(cfg, experiment.experiment_id(cfg))

    features_dir = tmp_path / "features"
    images = run(compose())
    cached_cfg = compose("cache=true", f"paths.features_dir={features_dir}")
    cached = run(cached_cfg)
    assert images != cached  # the cache is part of the experiment: float16 features
    for key in ("train/loss", "val/loss"):
        expected, got = logged(images, key), logged(cached, key)
        assert list(got) == list(expected) and len(got) >= 2, key
        assert got == pytest.approx(expected, rel=STORAGE_TOL), key

    built = manifests(features_dir)
    assert sorted(p.parent.name.split("-")[0] for p in built) == ["train", "val"]
    train = json.loads(next(text for p, text in built.items() if p.parent.name.startswith("train")))
    n_crops = cached_cfg.dataset.train_crops or 1
    assert train["shape"][1] == n_crops * 2  # every crop position, plain and flipped

    # a second trial (another seed and loss weight) reads the same cache: nothing rebuilt
    run(compose("cache=true", f"paths.features_dir={features_dir}", "seed=1", "loss.featrec.weight=0.5"))
    assert manifests(features_dir) == built

    # where the cache lives is not part of the experiment's identity
    elsewhere = compose("cache=true", f"paths.features_dir={tmp_path / 'scratch'}")
    assert experiment.experiment_id(elsewhere) == experiment.experiment_id(cached_cfg)

    # batch by batch, the cache holds the encoding of the very crop, flip and window drawn (an
    # untrained model's losses would barely move for a wrong view)
    (plain, module), (from_cache, _) = (task.build_task(cfg) for cfg in (compose(), cached_cfg))
    batches = []
    for datamodule in (plain, from_cache):
        L.seed_everything(3)
        batches.append(list(itertools.islice(datamodule.train_dataloader(), 3)))
    for images, features in zip(*batches, strict=True):
        expected = module.model.encode(frames_to_video(images)["video"])  # (B, T, P, D)
        torch.testing.assert_close(features["features"].float(), expected.features, rtol=2e-3, atol=2e-3)
        if "keys" in features:  # stored only when a loss reads them (not loss=dinosaur: COCO)
            torch.testing.assert_close(features["keys"].float(), expected.keys, rtol=2e-3, atol=2e-3)
        else:
            assert "timesim" not in cached_cfg.loss

"""Training from the frozen-feature cache: the losses of training from images, the cache reused."""

import csv
import itertools
import json
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import DictConfig

from slotsweep.runs import experiment
from slotsweep.training import task

STORAGE_TOL = 2e-3  # relative: features are stored as float16 (11 significant bits)


def logged(run_dir: Path, key: str) -> dict[int, float]:
    """{step: value} of one metric in the run's CSVLogger metrics.csv."""
    with (run_dir / "logs" / "version_0" / "metrics.csv").open() as f:
        return {int(row["step"]): float(row[key]) for row in csv.DictReader(f) if row.get(key)}


def run(cfg: DictConfig) -> Path:
    task.run(cfg)
    return Path(cfg.paths.runs_dir) / experiment.experiment_id(cfg) / f"seed{cfg.seed}"


def test_training_from_the_cache_gives_the_losses_of_training_from_images(
    compose_train: Callable[..., DictConfig], data_dir: Path
):
    """Same seed, same batches (window and flip draws included): the losses agree to storage precision."""
    images = run(compose_train())
    cached_cfg = compose_train("cache=true")
    cached = run(cached_cfg)
    assert images != cached
    for key in ("train/loss", "train/featrec", "train/timesim", "val/loss"):
        expected, got = logged(images, key), logged(cached, key)
        assert list(got) == list(expected) and len(got) >= 2, key
        assert got == pytest.approx(expected, rel=STORAGE_TOL), key
    # the debug trainer validates: the cached run scored the same clips
    results = json.loads((cached / "results.json").read_text())
    assert results["status"] == "completed"
    assert results["metrics"]["val/loss"] == pytest.approx(
        json.loads((images / "results.json").read_text())["metrics"]["val/loss"], rel=STORAGE_TOL
    )

    stores = sorted((data_dir / "features").glob("*/manifest.json"))
    assert sorted(p.parent.name.split("-")[0] for p in stores) == ["train", "val"]
    manifests = {p: p.read_text() for p in stores}
    train_shape = json.loads(manifests[stores[0]])["shape"]
    assert train_shape[:2] == [cached_cfg.dataset.n_train_clips * cached_cfg.dataset.n_frames, 2]  # + flips

    # another trial of a sweep (another seed and loss weight) reads the same cache, untouched
    run(compose_train("cache=true", "seed=1", "loss.timesim.weight=0.5"))
    assert {p: p.read_text() for p in sorted((data_dir / "features").glob("*/manifest.json"))} == manifests


def test_cached_batches_are_the_encoded_image_batches(compose_train: Callable[..., DictConfig]):
    """Window and flip draws hit the same frames: batch features == encoder(batch video), several
    batches deep (a wrong flip or window would barely move an untrained model's losses)."""
    _, module = task.build_task(compose_train())
    datamodules = [task.build_task(compose_train(f"cache={c}"))[0] for c in ("false", "true")]
    batches = []
    for datamodule in datamodules:
        L.seed_everything(3)
        batches.append(list(itertools.islice(datamodule.train_dataloader(), 3)))
    for images, cached in zip(*batches, strict=True):
        expected = module.model.encode(images["video"])  # (B, T, P, D)
        assert set(cached) == {"features", "keys"}
        torch.testing.assert_close(cached["features"].float(), expected.features, rtol=2e-3, atol=2e-3)
        torch.testing.assert_close(cached["keys"].float(), expected.keys, rtol=2e-3, atol=2e-3)

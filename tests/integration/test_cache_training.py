"""Training from the frozen-feature cache: the losses of training from images, the cache reused."""

import csv
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import DictConfig

from conftest import REPO
from slotsweep.data.video_transforms import frames_to_video
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
        expected = module.model.encode(frames_to_video(images)["video"])  # (B, T, P, D)
        assert set(cached) == {"features", "keys"}
        torch.testing.assert_close(cached["features"].float(), expected.features, rtol=2e-3, atol=2e-3)
        torch.testing.assert_close(cached["keys"].float(), expected.keys, rtol=2e-3, atol=2e-3)


# Relative deviation of the final val/loss of a 4-step shapes training from the int8 cache against
# the float16 one (docs/sweeps.md, "Feature cache", states it).
INT8_RUN_DEVIATION = 1e-2


def test_int8_cache_without_keys_trains_like_float16(
    compose_train: Callable[..., DictConfig], tmp_path: Path
):
    """loss=dinosaur reads no keys: neither format stores them; int8's losses track float16's."""
    features_dir = tmp_path / "features"  # its own: data_dir is shared by the session's tests
    half = run(compose_train("loss=dinosaur", "cache=true", f"paths.features_dir={features_dir}"))
    compact = run(compose_train("loss=dinosaur", "cache=int8", f"paths.features_dir={features_dir}"))
    manifests = [json.loads(p.read_text()) for p in features_dir.glob("*/manifest.json")]
    assert sorted((m["spec"]["dtype"], m["spec"]["arrays"]) for m in manifests) == [
        ("float16", ["features"]),
        ("float16", ["features"]),
        ("int8", ["features"]),
        ("int8", ["features"]),
    ]
    assert not list(features_dir.glob("*/keys.*"))
    expected, got = logged(half, "train/featrec"), logged(compact, "train/featrec")
    assert list(got) == list(expected)
    assert got == pytest.approx(expected, rel=INT8_RUN_DEVIATION)
    metrics = [json.loads((d / "results.json").read_text())["metrics"] for d in (half, compact)]
    assert metrics[1]["val/loss"] == pytest.approx(metrics[0]["val/loss"], rel=INT8_RUN_DEVIATION)


def test_cache_entry_builds_once_before_a_sweep(debug_overrides: list[str], data_dir: Path, tmp_path: Path):
    """src/cache.py builds train and val (and prints them); a run then finds them; cache=false is
    one error line."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    paths = [f"paths.data_dir={data_dir}", f"paths.runs_dir={tmp_path / 'runs'}"]
    command = [sys.executable, str(REPO / "src" / "cache.py"), *debug_overrides, *paths]
    built = subprocess.run([*command, "cache=int8"], capture_output=True, text=True, env=env, check=False)
    assert built.returncode == 0, built.stderr
    printed = [
        line.split(":")[0] for line in built.stdout.splitlines() if line.startswith(("train:", "val:"))
    ]
    assert printed == ["train", "val"]
    assert "frames x 2 views x" in built.stderr + built.stdout  # the size, before the build
    assert not (tmp_path / "runs").exists()  # no run dir
    refused = subprocess.run([*command, "cache=false"], capture_output=True, text=True, env=env, check=False)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].startswith(
        "error: cache=false"
    )

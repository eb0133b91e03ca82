"""Faults a run survives: a NaN in the first steps, a damaged last.ckpt, SIGKILL while a checkpoint
is written, a twin job on a running run dir; and the same config twice gives the same metrics."""

import json
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from slotsweep.data.video_transforms import frames_to_video
from slotsweep.models.weights import load_model_weights
from slotsweep.runs import experiment
from slotsweep.runs.checkpoint_files import LAST_CHECKPOINT, is_readable
from slotsweep.training import task
from slotsweep.training.module import NonFiniteLossError

# Adam's first step moves every weight by ~lr: with lr 1e30 and no warmup the loss at step 1 is NaN.
EXPLODE = ["optim.base_lr=1e30", "optim.warmup_steps=0", "trainer.gradient_clip_val=null"]


def _run_dir(cfg: DictConfig) -> Path:
    return experiment.run_dir(cfg, experiment.experiment_id(cfg))


@pytest.mark.parametrize("every", [1, 2])
def test_nan_at_step_1_keeps_the_initial_weights(compose_train: Callable[..., DictConfig], every: int):
    """Before any step checkpoint could prove good, the initial weights (step 0) are what is kept."""
    cfg = compose_train(*EXPLODE, f"checkpoint_every_n_steps={every}")
    with pytest.raises(NonFiniteLossError, match="nan at step 1"):
        task.run(cfg)
    run_dir = _run_dir(cfg)
    checkpoints = run_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("*.ckpt")) == ["last.ckpt", "step0000000.ckpt"]
    assert torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 0
    datamodule, module = task.build_task(cfg)
    load_model_weights(module.model, checkpoints / "last.ckpt")
    batch = frames_to_video(next(iter(datamodule.train_dataloader())))
    with torch.no_grad():
        assert torch.isfinite(module.compute_losses(module.model(video=batch["video"]))["loss"])
    assert json.loads((run_dir / "results.json").read_text())["status"] == "failed"


def test_same_config_twice_gives_identical_metrics(compose_train: Callable[..., DictConfig], tmp_path: Path):
    """Exactly equal, not close: seeded init, data and slots, and a fixed thread count."""
    metrics = []
    for name in ("a", "b"):
        cfg = compose_train()
        cfg.paths.runs_dir = str(tmp_path / name)
        task.run(cfg)
        metrics.append(json.loads((_run_dir(cfg) / "results.json").read_text())["metrics"])
    assert metrics[0] == metrics[1]
    assert metrics[0]["val/video_fg_ari"] == metrics[0]["val/video_fg_ari"]  # not NaN


def test_damaged_last_checkpoint_resumes_from_the_newest_readable(
    compose_train: Callable[..., DictConfig], caplog: pytest.LogCaptureFixture
):
    """last.ckpt cut short (a copy cut off that followed its link, a full disk): the run resumes
    from its newest readable step checkpoint with a warning, and ends with the metrics of the
    undamaged run, last.ckpt linking to its newest step checkpoint again."""
    caplog.set_level(logging.INFO)
    cfg = compose_train()
    task.run(cfg)
    run_dir = _run_dir(cfg)
    first = json.loads((run_dir / "results.json").read_text())
    (run_dir / "results.json").unlink()  # as after a kill: not completed
    last = run_dir / LAST_CHECKPOINT
    whole = last.read_bytes()
    last.unlink()  # the link; its step checkpoint stays whole
    last.write_bytes(whole[: len(whole) // 2])
    task.run(compose_train())
    assert f"{last} is unreadable" in caplog.text
    assert f"Resuming from {run_dir / 'checkpoints' / 'step0000004.ckpt'}" in caplog.text
    second = json.loads((run_dir / "results.json").read_text())
    assert second["status"] == "completed" and second["step"] == first["step"]
    assert second["metrics"] == first["metrics"]
    assert is_readable(last) and last.is_symlink()


def _wait_for(condition: Callable[[], bool], process, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert process.poll() is None, f"the run exited ({process.returncode}) before the awaited moment"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


# make test-all only (CI time); a SIGKILL mid-training and resume stays in make test (test_train.py)
@pytest.mark.heavy
def test_sigkill_while_saving_a_checkpoint_then_resume(cli, tmp_path: Path):
    """Killed while a checkpoint is being written (its temporary file exists): every checkpoint
    left is whole, and the resumed run completes with the metrics of an uninterrupted one."""
    args = ["trainer.max_steps=12", "checkpoint_every_n_steps=1", "trainer.val_check_interval=12"]
    first = cli.start("train.py", *args, log=tmp_path / "first.log")
    try:
        _wait_for(lambda: any(cli.runs_dir.glob("*/seed0/checkpoints/.*.tmp*")), first)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    (run_dir,) = [p.parent for p in cli.runs_dir.glob("*/seed0/checkpoints")]
    left = sorted((run_dir / "checkpoints").glob("*.ckpt"))  # none if the first save was cut
    assert all(is_readable(p) for p in left), left
    resumed = cli.run("train.py", *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not list((run_dir / "checkpoints").glob(".*.tmp*"))
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed" and results["step"] == 12
    uninterrupted = cli.run("train.py", *args, f"paths.runs_dir={tmp_path / 'whole'}")
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    (whole,) = (tmp_path / "whole").glob("*/seed0/results.json")
    expected = json.loads(whole.read_text())["metrics"]
    assert results["metrics"] == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_twin_job_on_a_running_run_dir_refuses(cli, tmp_path: Path):
    """A second process on a run dir being trained (a requeue overlapping its predecessor): exit 2
    naming the holder; the first one is not disturbed."""
    args = ["trainer.max_steps=100000", "checkpoint_every_n_steps=1"]
    first = cli.start("train.py", *args, log=tmp_path / "first.log")
    try:
        _wait_for(lambda: any(cli.runs_dir.glob("*/seed0/checkpoints/step*.ckpt")), first)
        twin = cli.run("train.py", *args)
        errors = [line for line in twin.stderr.splitlines() if line.startswith("error:")]
        assert twin.returncode == 2 and len(errors) == 1, twin.stderr[-3000:]
        assert f"is being trained by pid {first.pid}" in errors[0]
        assert first.poll() is None  # still training
    finally:
        first.kill()
        first.wait()
    (run_dir,) = [p.parent for p in cli.runs_dir.glob("*/seed0")]
    assert not (run_dir / "results.json").exists()  # the twin wrote nothing

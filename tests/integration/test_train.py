"""Training runs on tiny shapes data: results.json, resume after a kill, skip/force, seeds, NaN loss.

In-process runs call slotsweep.training.task.run on the composed config (compose_train); the resume test
starts and SIGKILLs a real `python src/train.py` process.
"""

import csv
import json
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from slotsweep.data.video_transforms import frames_to_video
from slotsweep.models.weights import load_model_weights
from slotsweep.runs import experiment, trial_files
from slotsweep.runs.checkpoint_files import LAST_CHECKPOINT
from slotsweep.training import task
from slotsweep.training.module import NonFiniteLossError

CONTRACT_METRICS = ("val/video_fg_ari", "val/video_mbo", "val/image_fg_ari", "val/image_mbo")


def read_metrics(path: Path) -> list[dict[str, float]]:
    """Rows of a CSVLogger metrics.csv, empty cells left out, values as floats."""
    with path.open() as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def train_losses(run_dir: Path, version: int = 0) -> list[tuple[int, float]]:
    """(step, train/loss) of one logger session (logs/version_<n>), in order."""
    rows = read_metrics(run_dir / "logs" / f"version_{version}" / "metrics.csv")
    return [(int(row["step"]), row["train/loss"]) for row in rows if "train/loss" in row]


def only_run_dir(runs_dir: Path) -> Path:
    (directory,) = runs_dir.glob("*/seed*")  # exactly one run
    return directory


def test_few_steps_give_finite_losses_and_results(compose_train: Callable[..., DictConfig]):
    cfg = compose_train()
    objective = task.run(cfg)
    exp_id = experiment.experiment_id(cfg)
    run_dir = Path(cfg.paths.runs_dir) / exp_id / "seed0"
    assert only_run_dir(Path(cfg.paths.runs_dir)) == run_dir

    losses = train_losses(run_dir)
    # the N-th optimizer step's loss is logged at step N (slotsweep.training.steps), log_every_n_steps=1
    assert [step for step, _ in losses] == list(range(1, cfg.trainer.max_steps + 1))
    assert all(math.isfinite(loss) for _, loss in losses), losses
    rows = read_metrics(run_dir / "logs" / "version_0" / "metrics.csv")
    # validations at steps 2 and 4 as in validation.jsonl; the last step validated: no repeat after fit
    assert [int(row["step"]) for row in rows if "val/video_fg_ari" in row] == [2, 4]
    assert list(trial_files.read_reports(run_dir)) == [2, 4]
    assert [int(row["step"]) for row in rows if "lr-Adam" in row] == [1, 2, 3, 4]
    assert all(math.isfinite(v) for row in rows for k, v in row.items() if k.startswith("train/"))

    results = json.loads((run_dir / "results.json").read_text())
    assert results["exp_id"] == exp_id and results["exp_name"] == "shapes"
    assert results["seed"] == 0 and results["status"] == "completed" and results["error"] is None
    assert results["step"] == results["max_steps"] == cfg.trainer.max_steps
    assert results["wall_time_s"] > 0
    assert results["run_dir"] == str(run_dir)
    assert results["precision"] == results["protocol"]["precision"] == "32-true"  # auto on a CPU
    for key in CONTRACT_METRICS:
        low = -1 if "ari" in key else 0  # an adjusted Rand index dips below 0 for worse than chance
        assert low <= results["metrics"][key] <= 1, (key, results["metrics"])
        assert low <= results["best_metrics"][key] <= 1
        assert results["best_metrics"][key] >= results["metrics"][key] - 1e-9  # best over validations
    resolved = json.loads(json.dumps(OmegaConf.to_container(cfg, resolve=True)))
    assert results["config"] == resolved
    assert OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml")) == resolved
    assert objective == pytest.approx(results["metrics"]["val/video_fg_ari"])

    last = torch.load(run_dir / LAST_CHECKPOINT, map_location="cpu", weights_only=False)
    assert last["global_step"] == cfg.trainer.max_steps
    # checkpoint_every_n_steps=2 wrote steps 2 and 4; the older was dropped once step 4 was saved
    steps = sorted(p.name for p in (run_dir / "checkpoints").glob("step*.ckpt"))
    assert steps == [f"step{cfg.trainer.max_steps:07d}.ckpt"]


def test_one_step_number_in_every_output(compose_train: Callable[..., DictConfig]):
    """Three steps, validation every two: validations at steps 2 (during fit) and 3 (after it), the
    same numbers in TensorBoard, validation.jsonl, results.json and the checkpoint; W&B, metrics.csv
    and the console: tests/integration/test_wandb_offline.py, test_few_steps_..., test_progress.py."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = compose_train("logger=tensorboard", "trainer.max_steps=3")
    task.run(cfg)
    run_dir = experiment.run_dir(cfg, experiment.experiment_id(cfg))
    (events,) = (run_dir / "logs").glob("version_0")
    scalars = EventAccumulator(str(events)).Reload()
    assert [e.step for e in scalars.Scalars("train/loss")] == [1, 2, 3]
    assert [e.step for e in scalars.Scalars("val/video_fg_ari")] == [2, 3]
    assert list(trial_files.read_reports(run_dir)) == [2]  # validations of fit only
    results = json.loads((run_dir / "results.json").read_text())
    assert results["step"] == 3 and "step" not in results["metrics"]
    final = scalars.Scalars("val/video_fg_ari")[-1].value
    assert results["metrics"]["val/video_fg_ari"] == pytest.approx(final)
    assert torch.load(run_dir / LAST_CHECKPOINT, map_location="cpu", weights_only=False)["global_step"] == 3


def test_bf16_mixed_trains_and_is_its_own_experiment(compose_train: Callable[..., DictConfig]):
    """trainer.precision=bf16-mixed on the CPU (autocast): the run trains to finite losses and
    metrics, records its precision, and gets another exp_id than the fp32 run."""
    cfg = compose_train("trainer.precision=bf16-mixed")
    task.run(cfg)
    run_dir = only_run_dir(Path(cfg.paths.runs_dir))
    assert run_dir.parent.name == experiment.experiment_id(cfg) != experiment.experiment_id(compose_train())
    assert all(math.isfinite(loss) for _, loss in train_losses(run_dir))
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed"
    assert results["precision"] == results["protocol"]["precision"] == "bf16-mixed"
    assert all(math.isfinite(results["metrics"][key]) for key in CONTRACT_METRICS)


@pytest.mark.heavy  # ~2 min of inductor compilation on 2 CPU cores: make test-all
def test_compiled_and_eager_runs_give_the_same_losses(
    compose_train: Callable[..., DictConfig], tmp_path: Path
):
    """compile=true (torch.compile of the encoder and the trainable parts, inductor on this CPU)
    against eager, trainer=debug: every step's loss agrees to float tolerance."""
    losses = {}
    for compiled in (False, True):
        cfg = compose_train(f"compile={str(compiled).lower()}")
        cfg.paths.runs_dir = str(tmp_path / str(compiled))
        task.run(cfg)
        losses[compiled] = train_losses(only_run_dir(Path(cfg.paths.runs_dir)))
    assert [step for step, _ in losses[True]] == [step for step, _ in losses[False]]
    for (_, compiled), (_, eager) in zip(losses[True], losses[False], strict=True):
        assert compiled == pytest.approx(eager, rel=1e-4), (losses[True], losses[False])


def _wait_for_checkpoint(process, checkpoints: Callable[[], list[Path]]) -> None:
    """Poll until the running process's last.ckpt links to a step checkpoint after training steps
    (not step0000000.ckpt, the initial weights).

    Bounded by the process itself: if it exits first, the test fails (it finished too fast to kill).
    """
    while process.poll() is None:
        last = [p for p in checkpoints() if p.name == "last.ckpt"]
        if last and os.readlink(last[0]) != "step0000000.ckpt":
            return
        time.sleep(0.05)
    pytest.fail(f"src/train.py exited with {process.returncode} before writing a step checkpoint")


def test_killed_run_resumes_at_its_step(cli, tmp_path: Path):
    args = ["trainer.max_steps=30", "checkpoint_every_n_steps=5", "trainer.val_check_interval=10"]
    first = cli.start("train.py", *args, log=tmp_path / "first.log")
    try:
        _wait_for_checkpoint(first, lambda: list(cli.runs_dir.glob("*/seed0/checkpoints/*.ckpt")))
    finally:
        first.kill()  # SIGKILL: no cleanup, as a preemption or an OOM kill
        first.wait()
    assert first.returncode == -9, (
        f"not killed (exit {first.returncode}): {(tmp_path / 'first.log').read_text()}"
    )
    run_dir = only_run_dir(cli.runs_dir)
    assert not (run_dir / "results.json").exists()  # a killed run writes nothing more
    stopped = torch.load(run_dir / LAST_CHECKPOINT, map_location="cpu", weights_only=False)
    step = stopped["global_step"]
    assert 5 <= step < 30 and step % 5 == 0, step

    second = cli.run("train.py", *args)
    output = second.stdout + second.stderr
    assert second.returncode == 0, output[-3000:]
    assert f"Resuming from {run_dir / LAST_CHECKPOINT}" in output
    assert only_run_dir(cli.runs_dir) == run_dir  # the same run dir, found from the config

    resumed = train_losses(run_dir, version=1)  # the second session logs as version_1
    assert [s for s, _ in resumed] == list(range(step + 1, 31))
    assert all(s <= step + 5 for s, _ in train_losses(run_dir, version=0))  # the first got past `step`
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed" and results["step"] == 30
    assert results["wall_time_s"] > stopped["slotsweep"]["wall_time_s"]  # both sessions counted

    final = torch.load(run_dir / LAST_CHECKPOINT, map_location="cpu", weights_only=False)
    adam_steps = {int(state["step"]) for state in final["optimizer_states"][0]["state"].values()}
    assert adam_steps == {30}  # Adam's moments and step count carried over, not restarted at `step`
    assert final["lr_schedulers"][0]["last_epoch"] == 30  # the lr schedule too
    # older step checkpoints, including one the kill may have left unverified, are gone
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt")) == [
        "last.ckpt",
        "step0000030.ckpt",
    ]


def test_completed_run_is_skipped_and_force_reruns(
    compose_train: Callable[..., DictConfig], caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="slotsweep.training.task")
    cfg = compose_train()
    first = task.run(cfg)
    run_dir = only_run_dir(Path(cfg.paths.runs_dir))
    results = run_dir / "results.json"
    before, mtime = results.read_text(), results.stat().st_mtime_ns

    caplog.clear()
    assert task.run(compose_train()) == first  # the stored objective, without training
    assert results.stat().st_mtime_ns == mtime and results.read_text() == before
    assert "already completed" in caplog.text
    assert "Resuming" not in caplog.text

    task.run(compose_train("force=true"))
    kept = run_dir.with_name(f"{run_dir.name}.replaced1")
    assert (kept / "results.json").read_text() == before  # the finished run is set aside, not lost
    assert (kept / LAST_CHECKPOINT).is_file()
    rerun = json.loads(results.read_text())
    assert rerun["status"] == "completed" and results.stat().st_mtime_ns != mtime
    assert train_losses(run_dir) == train_losses(kept)  # trained again from scratch (version_0), same seed

    task.run(compose_train("force=true"))
    assert run_dir.with_name(f"{run_dir.name}.replaced2").is_dir() and kept.is_dir()


def test_seeds(compose_train: Callable[..., DictConfig], tmp_path: Path):
    """seed=0 and seed=1: two run dirs of one experiment, different results; seed=0 again: same losses."""
    dirs = {}
    for name, seed in [("a", 0), ("a", 1), ("b", 0)]:
        cfg = compose_train(f"seed={seed}")
        cfg.paths.runs_dir = str(tmp_path / name)
        task.run(cfg)
        dirs[name, seed] = experiment.run_dir(cfg, experiment.experiment_id(cfg))
    assert dirs["a", 0].parent == dirs["a", 1].parent  # the same exp_id...
    assert dirs["a", 0] != dirs["a", 1]  # ...a dir per seed

    def results(key):
        return json.loads((dirs[key] / "results.json").read_text())

    assert results(("a", 1))["seed"] == 1
    assert train_losses(dirs["a", 0]) != train_losses(dirs["a", 1])
    assert results(("a", 0))["metrics"] != results(("a", 1))["metrics"]

    same = [loss for _, loss in train_losses(dirs["b", 0])]
    assert same == pytest.approx([loss for _, loss in train_losses(dirs["a", 0])], rel=1e-5, abs=1e-6)
    for key in ("val/video_fg_ari", "val/video_mbo", "val/loss"):
        assert results(("b", 0))["metrics"][key] == pytest.approx(results(("a", 0))["metrics"][key], abs=1e-5)


def test_nan_loss_stops_and_keeps_the_last_checkpoint(compose_train: Callable[..., DictConfig]):
    """A learning rate far too high (Adam moves every weight by ~lr per step, clipping or not) makes
    the loss NaN within a few steps: the run stops, says so, and keeps its last good checkpoint."""
    cfg = compose_train(
        "optim.base_lr=1e30",
        "trainer.gradient_clip_val=null",
        "trainer.max_steps=8",
        "checkpoint_every_n_steps=1",
    )
    with pytest.raises(NonFiniteLossError, match="nan"):
        task.run(cfg)
    run_dir = only_run_dir(Path(cfg.paths.runs_dir))
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "failed"
    assert results["error"].startswith("NonFiniteLossError: training loss is nan at step")
    assert 0 < results["step"] < cfg.trainer.max_steps
    assert results["metrics"] == {}

    last = run_dir / LAST_CHECKPOINT
    checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] < results["step"]  # the weights of the NaN step were dropped
    steps = sorted(p.name for p in (run_dir / "checkpoints").glob("step*.ckpt"))
    assert steps == [f"step{checkpoint['global_step']:07d}.ckpt"]
    datamodule, module = task.build_task(cfg)
    load_model_weights(module.model, last)  # loads into the run's architecture
    assert all(torch.isfinite(p).all() for p in module.model.state_dict().values() if p.is_floating_point())

    # The kept checkpoint is *good*: its weights give a finite loss.
    datamodule.setup("fit")
    batch = frames_to_video(next(iter(datamodule.train_dataloader())))
    with torch.no_grad():
        loss = module.compute_losses(module.model(video=batch["video"]))["loss"]
    assert torch.isfinite(loss)


def test_load_weights_starts_from_the_checkpoint(compose_train: Callable[..., DictConfig]):
    source_cfg = compose_train()
    task.run(source_cfg)
    source = experiment.run_dir(source_cfg, experiment.experiment_id(source_cfg)) / LAST_CHECKPOINT

    cfg = compose_train(f"load_weights={source}", "seed=1", "trainer.max_steps=1")
    task.run(cfg)
    run_dir = experiment.run_dir(cfg, experiment.experiment_id(cfg))
    assert run_dir.parent != source.parents[2]  # another experiment: it starts from other weights

    def model_weights(path: Path) -> dict[str, torch.Tensor]:
        state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
        return {k: v for k, v in state.items() if k.startswith("model.")}

    loaded, trained = model_weights(run_dir / LAST_CHECKPOINT), model_weights(source)
    assert loaded.keys() == trained.keys()
    # The one step ran at lr 0 (the warmup starts at 0), so the weights are exactly those loaded,
    # not seed 1's initialisation.
    assert all(torch.equal(loaded[k], trained[k]) for k in trained)
    assert json.loads((run_dir / "results.json").read_text())["config"]["load_weights"] == str(source)

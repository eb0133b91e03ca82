"""Real offline W&B runs, read back from the transaction log (`run-<id>.wandb`) that `wandb sync` uploads.

An offline run keeps its config, summary and history only in that file (files/config.yaml and
wandb-summary.json are written online). It is a LevelDB-style log of `wandb.proto` Record
messages: a 7-byte header (":W&B", magic, version), then 32 KiB blocks of chunks, each with a
7-byte header (CRC32, length, type FULL/FIRST/MIDDLE/LAST).
"""

import json
import os
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import wandb
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from wandb.proto import wandb_internal_pb2

from slotsweep.runs import experiment
from slotsweep.training import tracking

REPO = Path(__file__).resolve().parents[2]
API_KEY = "slotsweep-test-key-" + "7" * 21  # 40 characters, like a real key; never to be written

_BLOCK = 32 * 1024
_FULL, _FIRST, _LAST = 1, 2, 4  # chunk types; 3 is MIDDLE


def _records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # the rest of the block is padding
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (_FULL, _FIRST) else pending + chunk
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def read_offline_run(run_dir: Path) -> dict:
    """The run record, config, summary and history rows of the one offline run in run_dir/logs/wandb.

    Tears W&B's service down first, as process exit does: `finish()` returns before the service
    has written the offline log (seen with wandb 0.31 and mode="offline").
    """
    wandb.teardown()
    (path,) = run_dir.glob("logs/wandb/offline-run-*/run-*.wandb")
    run, config, summary, history, exited = None, {}, {}, [], False
    for record in _records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            config.update({_key(i): json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            config.update({_key(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == "summary":
            summary.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "history":
            history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "exit":
            exited = True
    return {"run": run, "config": config, "summary": summary, "history": history, "exited": exited}


def _files_containing(root: Path, text: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


@pytest.fixture
def offline_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An API key is set but the W&B host does not answer: the offline rule must pick offline."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        closed_port = server.getsockname()[1]
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", API_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port}")
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    yield tmp_path
    if wandb.run is not None:
        wandb.run.finish()


def test_logger_session_writes_config_group_history_and_best_summary(
    compose_train: Callable[..., DictConfig], offline_env: Path
):
    cfg = compose_train("logger=wandb", "seed=4")
    exp_id = experiment.experiment_id(cfg)
    run_dir = offline_env / "run"
    logger = instantiate(cfg.logger)(**tracking.logger_kwargs(cfg, exp_id, run_dir))
    tracking.define_best_summaries(logger)
    for step, ari in enumerate([0.1, 0.5, 0.3]):
        logger.log_metrics({"train/loss": 1.0 / (step + 1), "val/video_fg_ari": ari}, step=step)
    tracking.finish_wandb(logger)

    logged = read_offline_run(run_dir)
    run = logged["run"]
    assert (run.run_id, run.run_group, run.job_type) == (f"{exp_id}-s4", exp_id, "train")
    assert (run.project, run.display_name, list(run.tags)) == ("slotsweep", f"{exp_id}-s4", ["shapes"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert {k: v for k, v in logged["config"].items() if k != "_wandb"} == resolved
    assert [row["train/loss"] for row in logged["history"]] == [1.0, 0.5, pytest.approx(1 / 3)]
    assert [row["trainer/global_step"] for row in logged["history"]] == [0, 1, 2]
    assert logged["summary"]["val/video_fg_ari"] == {"max": 0.5, "last": 0.3}
    assert logged["exited"]
    assert _files_containing(offline_env, API_KEY) == []


def test_training_run_logs_an_offline_run(compose_train: Callable[..., DictConfig], offline_env: Path):
    from slotsweep.training import task

    cfg = compose_train("logger=wandb")
    task.run(cfg)
    assert wandb.run is None, "task.run must end its W&B run: tracking.finish_wandb(trainer.logger)"
    exp_id = experiment.experiment_id(cfg)
    run_dir = experiment.run_dir(cfg, exp_id)
    results = experiment.read_results(run_dir)
    logged = read_offline_run(run_dir)

    assert (logged["run"].run_id, logged["run"].run_group) == (f"{exp_id}-s0", exp_id)
    assert logged["config"]["grouper"] == results["config"]["grouper"]
    assert logged["config"]["seed"] == 0
    history = logged["history"]
    # the N-th step's loss at step N, validations where the console and validation.jsonl put them
    assert [row["trainer/global_step"] for row in history if "train/loss" in row] == [1, 2, 3, 4]
    assert [row["trainer/global_step"] for row in history if "val/video_fg_ari" in row] == [2, 4]
    validated = [row["val/video_fg_ari"] for row in history if "val/video_fg_ari" in row]
    assert len(validated) >= 2 and validated[-1] == pytest.approx(results["metrics"]["val/video_fg_ari"])
    summary = logged["summary"]["val/video_fg_ari"]
    assert isinstance(summary, dict), (
        "task.run must keep best values in the W&B summary: tracking.define_best_summaries(logger)"
    )
    assert summary["max"] == pytest.approx(max(validated))
    assert summary["last"] == pytest.approx(results["metrics"]["val/video_fg_ari"])
    # each validation's mask picture (slotsweep.training.pictures): at trainer steps 2 and 4, as image files
    pictures = [row for row in history if "val/masks/path" in row]  # an image logs as nested keys
    assert [row["trainer/global_step"] for row in pictures] == [2, 4]
    (files,) = (run_dir / "logs" / "wandb").glob("offline-run-*/files")
    assert all((files / row["val/masks/path"]).is_file() for row in pictures)
    assert not (run_dir / "logs" / "val_pictures").exists()  # W&B took them: no PNG files
    assert _files_containing(run_dir, API_KEY) == []


@pytest.mark.slow
def test_seed_grid_is_aggregated_and_ready_to_sync(data_dir: Path, tmp_path: Path):
    """Done-when of the W&B issue: a seeds grid through the CLI -> aggregate table; 3 offline runs."""
    runs = tmp_path / "runs"
    env = os.environ | {
        "SLOTSWEEP_RUNS_DIR": str(runs),
        "SLOTSWEEP_DATA_DIR": str(data_dir),
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp_path / "wandb-home"),
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb-home"),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb-home"),
    }
    tiny = [
        "dataset.n_train_clips=8",
        "dataset.n_val_clips=4",
        "dataset.n_frames=4",
        "dataset.train_clip_frames=3",
    ]
    train = [sys.executable, "src/train.py", "-m", "seed=0,1,2", "trainer=debug", "logger=wandb", *tiny]
    train.append("trainer.enable_progress_bar=false")
    done = subprocess.run(train, cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]

    (sweep,) = (runs / "multirun").iterdir()
    out = tmp_path / "aggregate"
    done = subprocess.run(
        [sys.executable, "src/aggregate.py", str(sweep), "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = [line for line in done.stdout.splitlines() if line.startswith("| shapes-")]
    exp_id = row.split(" | ")[0].removeprefix("| ")
    assert " | 3 | - | " in row and " ± " in row
    assert {p.name for p in out.iterdir()} == {"table.md", "table.csv", "table.tex", "plots"}

    offline = sorted(runs.glob(f"{exp_id}/seed*/logs/wandb/offline-run-*"))
    assert [p.name.rsplit("-", 1)[1] for p in offline] == ["s0", "s1", "s2"]  # one W&B run per seed
    for seed, path in enumerate(offline):
        logged = read_offline_run(path.parents[2])
        assert (logged["run"].run_group, logged["config"]["seed"]) == (exp_id, seed)
    sync = subprocess.run(
        [str(Path(sys.executable).parent / "wandb"), "sync", "--dry-run", *map(str, offline)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert sync.returncode == 0 and "Would sync 3 run(s)" in sync.stdout + sync.stderr

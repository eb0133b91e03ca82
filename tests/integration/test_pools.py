"""Trial pools: K heads over one encoder forward train as their solo runs, and end one by one."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig, open_dict

from conftest import REPO
from slotsweep.errors import SlotsweepError
from slotsweep.runs import experiment
from slotsweep.runs.pool_queue import PoolQueue
from slotsweep.runs.trial_files import read_reports, request_stop
from slotsweep.training import task
from slotsweep.training.pool import run_pool

# Three trials of one seed: another lr, loss weight and slot count (a differently shaped head).
HEADS = (["optim.base_lr=0.001"], ["loss.timesim.weight=0.5"], ["grouper.n_slots=3"])
POOL_TOL = 1e-5  # relative: the same math in another order of kernel launches


def composed(compose_train: Callable[..., DictConfig], runs_dir: Path, *overrides: str) -> DictConfig:
    cfg = compose_train(*overrides)
    with open_dict(cfg):
        cfg.paths.runs_dir = str(runs_dir)
    return cfg


def results_of(cfg: DictConfig) -> dict:
    return json.loads((experiment.locate(cfg)[1] / "results.json").read_text())


def test_three_heads_train_as_three_solo_runs(compose_train: Callable[..., DictConfig], tmp_path: Path):
    solo = [composed(compose_train, tmp_path / "solo", *o) for o in HEADS]
    pooled = [composed(compose_train, tmp_path / "pooled", *o) for o in HEADS]
    for cfg in solo:
        task.run(cfg)
    objectives = run_pool(pooled)
    for k, (alone, head) in enumerate(zip(solo, pooled, strict=True)):
        expected, got = results_of(alone), results_of(head)
        assert got["status"] == "completed" and got["step"] == expected["step"] == 4
        assert got["exp_id"] == expected["exp_id"]
        assert got["metrics"] == pytest.approx(expected["metrics"], rel=POOL_TOL), k
        assert got["best_metrics"] == pytest.approx(expected["best_metrics"], rel=POOL_TOL), k
        assert got["pool"]["size"] == 3 and got["pool"]["head"] == k and got["pool"]["start_step"] == 0
        assert objectives[k] == pytest.approx(got["metrics"][head.objective[0]])
        directory = experiment.locate(head)[1]
        for name in ("identity.json", "config.yaml", "validation.jsonl", "checkpoints/last.ckpt"):
            assert (directory / name).is_file(), name
        reports = (directory / "validation.jsonl").read_text().splitlines()
        assert [json.loads(line)["step"] for line in reports] == [2, 4]
    assert len({results_of(cfg)["pool"]["id"] for cfg in pooled}) == 1


def test_a_head_whose_loss_turns_nan_stops_alone(compose_train: Callable[..., DictConfig], tmp_path: Path):
    heads = [composed(compose_train, tmp_path, *o) for o in (["optim.base_lr=1e30"], ["optim.base_lr=0.001"])]
    run_pool(heads)
    diverged, healthy = (results_of(cfg) for cfg in heads)
    assert diverged["status"] == "failed" and "NonFiniteLossError" in diverged["error"]
    assert diverged["step"] < 4
    assert healthy["status"] == "completed" and healthy["step"] == 4 and healthy["metrics"]


@pytest.mark.parametrize(
    ("other", "key"),
    [
        ("seed=1", "seed"),
        # a checkpoint may hold encoder weights: the head must not get head 0's encoder
        ("load_weights=/elsewhere/weights.ckpt", "load_weights"),
    ],
)
def test_heads_of_another_stream_are_refused(
    compose_train: Callable[..., DictConfig], tmp_path: Path, other: str, key: str
):
    heads = [composed(compose_train, tmp_path, "seed=0"), composed(compose_train, tmp_path, "seed=0", other)]
    with pytest.raises(SlotsweepError, match=rf"pool head 1 differs from head 0 in \['{key}'\].*pool_size=1"):
        run_pool(heads)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_a_killed_pool_resumes_every_head(debug_overrides: list[str], data_dir: Path, tmp_path: Path):
    """SIGKILL once the pool has a step checkpoint; the same command again resumes every head from
    it (losing at most checkpoint_every_n_steps) and ends both."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    common = [
        *debug_overrides,
        f"paths.data_dir={data_dir}",
        f"paths.runs_dir={tmp_path / 'runs'}",
        "trainer.max_steps=30",
        "trainer.val_check_interval=10",
        "checkpoint_every_n_steps=2",
    ]
    pool_dir = tmp_path / "pool"
    heads = ["--head", "optim.base_lr=0.001", "--head", "grouper.n_slots=3"]
    command = [sys.executable, str(REPO / "src" / "pool.py"), *heads, "--pool-dir", str(pool_dir), *common]
    job = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while job.poll() is None and not list((pool_dir / "checkpoints").glob("step*[1-9]*.ckpt")):
        time.sleep(0.05)
    assert job.poll() is None, job.stderr.read().decode()[-2000:]
    job.send_signal(signal.SIGKILL)
    job.wait()
    killed_at = max(int(p.stem.removeprefix("step")) for p in (pool_dir / "checkpoints").glob("step*.ckpt"))
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr
    for directory in sorted((tmp_path / "runs").glob("*/seed0")):
        results = json.loads((directory / "results.json").read_text())
        assert results["status"] == "completed" and results["step"] == 30
        # the session resumed from the newest checkpoint at the kill and trained to the end
        assert killed_at >= 2 and results["steps"] >= 30
        assert results["segments"] == [
            {"from_step": killed_at, "to_step": 30, "started": "requeued", "ended": "completed"}
        ]
        assert sorted(read_reports(directory)) == [10, 20, 30]


def test_a_pruned_head_is_replaced_by_one_that_joins_the_running_stream(
    compose_train: Callable[..., DictConfig], tmp_path: Path
):
    """Head 0 is pruned at its first validation (step 2); a third trial handed to the running pool
    then joins at a later validation step S and trains its 4 steps on the stream's batches from S.
    Its results equal a solo run of its config with stream_start_step=S, and its id says S."""
    long, pruned, joining = (
        composed(compose_train, tmp_path / "pooled", *o)
        for o in (["trainer.max_steps=8"], ["optim.base_lr=0.001"], ["grouper.n_slots=3"])
    )
    pool_dir = tmp_path / "pool"
    queue = PoolQueue(pool_dir)

    def prune_then_hand_over() -> None:
        while (record := queue.accepted("head001")) is None:
            time.sleep(0.01)
        request_stop(Path(record["run_dir"]), "pruned by the test")
        while queue.accepted("head001").get("status") is None:
            time.sleep(0.01)
        assert queue.submit("head002", joining)

    helper = threading.Thread(target=prune_then_hand_over)
    helper.start()
    run_pool([long, pruned], pool_dir)
    helper.join()

    record = queue.accepted("head002")
    assert record["status"] == "completed"
    start = record["start_step"]
    assert start in (2, 4, 6, 8), "a head joins at a validation step"
    head = json.loads((Path(record["run_dir"]) / "results.json").read_text())
    assert head["pool"]["start_step"] == start and head["step"] == 4
    pruned_results = Path(queue.accepted("head001")["run_dir"]) / "results.json"
    assert json.loads(pruned_results.read_text())["step"] == 2
    before = pruned_results.read_text()
    with pytest.raises(SlotsweepError, match=r"head of trial pool .* pruned at step 2.*force=true"):
        task.run(pruned)  # its checkpoint has no Trainer state to go on from: refused, not restarted
    assert pruned_results.read_text() == before
    assert results_of(long)["step"] == 8 and results_of(long)["status"] == "completed"
    solo = composed(compose_train, tmp_path / "solo", "grouper.n_slots=3", f"stream_start_step={start}")
    task.run(solo)
    assert results_of(solo)["exp_id"] == head["exp_id"] != experiment.experiment_id(joining)
    assert head["metrics"] == pytest.approx(results_of(solo)["metrics"], rel=POOL_TOL)
    reports = read_reports(Path(record["run_dir"]))
    assert sorted(reports) == [2, 4], "its own steps, as the solo run's"

"""Sweeps with hydra.sweeper.pool_size > 1: trials of one seed share a pool job (training/pool.py).

Real training jobs on tiny data through the local launcher: the pooled trials' values are those of
solo runs of their configs, a head that fails frees its place for the next trial, and bad settings
stop the sweep before any job starts.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf, open_dict

from slotsweep.training import task

REPO = Path(__file__).resolve().parents[2]
HANG_GUARD_S = 1800  # only stops a hung sweep from blocking CI; no test asserts a duration
POOL_TOL = 1e-5  # relative: the same math in another order of kernel launches
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src")}


SPACE = "optim.base_lr=choice(0.0004, 1e30, 0.001)"  # the second one's loss turns NaN at once


def _command(
    tmp_path: Path, data_dir: Path, debug_overrides: list[str], *extra: str, space: str = SPACE
) -> list[str]:
    """A pooled-able sweep of real training jobs on tiny data (local launcher), `extra` last."""
    return [
        sys.executable,
        str(REPO / "src" / "train.py"),
        "-m",
        "hydra/sweeper=optuna",
        "hydra/sweeper/sampler=grid",
        "hydra/launcher=local",
        space,
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.seeds=[0]",
        "hydra.sweeper.poll_s=0.3",
        "hydra.sweeper.max_failure_rate=0.5",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"paths.runs_dir={tmp_path / 'runs'}",
        f"paths.data_dir={data_dir}",
        *debug_overrides,
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1",
        *extra,
    ]


def _sweep(
    tmp_path: Path, data_dir: Path, debug_overrides: list[str], *extra: str
) -> subprocess.CompletedProcess:
    command = _command(tmp_path, data_dir, debug_overrides, *extra)
    return subprocess.run(
        command, capture_output=True, text=True, cwd=tmp_path, env=ENV, timeout=HANG_GUARD_S
    )


@pytest.mark.slow
def test_pooled_trials_equal_solo_runs_and_a_failed_head_frees_its_place(
    data_dir: Path, tmp_path: Path, debug_overrides: list[str]
):
    run = _sweep(tmp_path, data_dir, debug_overrides, "hydra.sweeper.pool_size=2")

    assert run.returncode == 0, run.stderr[-3000:]
    storage = f"sqlite:///{tmp_path / 'sweep' / 'optuna.db'}"
    study = optuna.load_study(study_name="sweep", storage=storage)
    states = {t.params["optim.base_lr"]: t for t in study.trials}
    assert (
        states[1e30].state.name == "FAIL" and "NonFiniteLossError" in states[1e30].user_attrs["fail_reason"]
    )
    pools = set()
    for lr in (0.0004, 0.001):
        trial = states[lr]
        assert trial.state.name == "COMPLETE"
        (job,) = trial.user_attrs["jobs"]
        results = json.loads((Path(job["run_dir"]) / "results.json").read_text())
        pool = results["pool"]
        pools.add(pool["id"])
        assert pool["size"] == 2 and pool["ticket"] == job["ticket"] and results["steps"] == 4
        assert results["device_seconds"] > 0
        assert trial.user_attrs["device_seconds"] == pytest.approx(results["device_seconds"])
        # a solo run of the head's own config (its stream position included) gives its numbers
        cfg = OmegaConf.load(Path(job["run_dir"]) / "config.yaml")
        with open_dict(cfg):
            cfg.paths.runs_dir = str(tmp_path / "solo")
        assert cfg.stream_start_step == pool["start_step"]
        task.run(cfg)
        solo_dir = task.experiment.locate(cfg).directory
        solo = json.loads((solo_dir / "results.json").read_text())
        assert solo["exp_id"] == results["exp_id"]
        assert trial.value == pytest.approx(solo["metrics"][cfg.objective[0]], rel=POOL_TOL)
    # trials 0 and 1 started one pool; the NaN head's place went to trial 2, in that pool unless
    # the pool had ended before the sweeper handed it over: never a pool per trial
    pool_dirs = {path.name for path in (tmp_path / "sweep" / "pools").iterdir()}
    assert pools <= pool_dirs and len(pool_dirs) <= 2
    printed = run.stdout + run.stderr
    assert "trial00001-seed0 joins pool" in printed and "| pool@step |" in printed
    assert "pool of 2 heads on NVIDIA H100" in printed  # the start-of-sweep forecast's pool plan
    # the summary's column: every completed trial's pool and stream step
    for lr in (0.0004, 0.001):
        results = json.loads((Path(states[lr].user_attrs["jobs"][0]["run_dir"]) / "results.json").read_text())
        assert f"| {results['pool']['id']}@{results['pool']['start_step']} |" in printed


def test_pool_size_with_fp16_stops_before_any_trial(
    data_dir: Path, tmp_path: Path, debug_overrides: list[str]
):
    run = _sweep(
        tmp_path, data_dir, debug_overrides, "hydra.sweeper.pool_size=2", "trainer.precision=16-mixed"
    )

    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "trainer.precision=16-mixed" in errors[0] and "pool" in errors[0], run.stderr[
        -2000:
    ]
    assert not (tmp_path / "sweep" / "optuna.db").exists()
    assert not (tmp_path / "runs").exists()


def test_pool_size_below_one_is_refused(data_dir: Path, tmp_path: Path, debug_overrides: list[str]):
    run = _sweep(tmp_path, data_dir, debug_overrides, "hydra.sweeper.pool_size=0")

    assert run.returncode == 2
    assert "error: hydra.sweeper.pool_size=0 must be >= 1" in run.stderr


@pytest.mark.heavy  # a minute; the solo jobs' adoption is in make test (test_sweeps.py)
def test_a_killed_sweeper_relaunched_follows_its_running_pool_and_starts_no_other(
    data_dir: Path, tmp_path: Path, debug_overrides: list[str]
):
    """SIGKILL the sweeper once its pool job trains two heads; the pool job trains on, and the
    relaunched sweeper adopts it (no second pool job) and tells both trials their values."""
    command = _command(
        tmp_path,
        data_dir,
        debug_overrides,
        "hydra.sweeper.pool_size=2",
        "hydra.sweeper.n_trials=2",
        "trainer.max_steps=12",
        space="optim.base_lr=choice(0.0004, 0.001)",
    )
    sweeper = subprocess.Popen(
        command, cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    heads = tmp_path / "sweep" / "pools"
    while sweeper.poll() is None and len(list(heads.glob("*/heads/*.json"))) < 2:
        time.sleep(0.1)
    assert sweeper.poll() is None, sweeper.stderr.read().decode()[-2000:]
    sweeper.send_signal(signal.SIGKILL)
    sweeper.wait()
    (pool_dir,) = heads.iterdir()

    relaunched = subprocess.run(
        command, capture_output=True, text=True, cwd=tmp_path, env=ENV, timeout=HANG_GUARD_S
    )

    assert relaunched.returncode == 0, relaunched.stderr[-3000:]
    assert "adopting job(s)" in relaunched.stdout + relaunched.stderr
    assert list(heads.iterdir()) == [pool_dir], "no second pool job"
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{tmp_path / 'sweep' / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for trial in study.trials:
        (job,) = trial.user_attrs["jobs"]
        results = json.loads((Path(job["run_dir"]) / "results.json").read_text())
        assert results["status"] == "completed" and results["step"] == 12
        assert results["pool"]["id"] == pool_dir.name
        assert trial.value == pytest.approx(results["metrics"]["val/video_fg_ari"])

"""Sweeps of the real training task on the local SLURM cluster through hydra/launcher=slurm_gpu.

Each job trains a few steps on tiny shapes data, on CPU (no GPU is requested). The cluster has no
accounting (sacct), so jobs are counted by submitit's result files, one per job that ran. Waits are
polls with generous bounds that only stop a broken cluster from hanging the run; no test asserts
how long anything took.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
import pytest
from omegaconf import OmegaConf

if TYPE_CHECKING:
    from conftest import SlurmCluster

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
WAIT_BOUND_S = 1800
OBJECTIVE = "val/video_fg_ari"


class SlurmSweep:
    """`python src/train.py -m` on the local cluster, with jobs named so this test can find them."""

    def __init__(
        self, cluster: SlurmCluster, data_dir: Path, tmp_path: Path, name: str, training: list[str]
    ) -> None:
        self.name = name
        self.runs = tmp_path / "runs"
        self.log = tmp_path / "sweep.log"
        self.command = [
            sys.executable,
            str(REPO / "src" / "train.py"),
            "-m",
            "hydra/launcher=slurm_gpu",
            f"hydra.launcher.partition={cluster.partition}",
            "hydra.launcher.gpus_per_node=null",  # CPU jobs: no GPU, one task
            "hydra.launcher.tasks_per_node=1",
            "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=2",
            "hydra.launcher.timeout_min=60",
            f"hydra.launcher.name={name}",
            f"paths.runs_dir={self.runs}",
            f"paths.data_dir={data_dir}",
            *training,
        ]
        self.env = {**os.environ, "WANDB_MODE": "offline"}
        self.cwd = tmp_path

    def start(self, *overrides: str) -> subprocess.Popen:
        """Launch in the background; stdout and stderr go to self.log (appended)."""
        with self.log.open("a") as log:
            return subprocess.Popen(
                [*self.command, *overrides], stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd, env=self.env
            )

    def run(self, *overrides: str) -> None:
        """Launch and wait; fail with the log's tail if the sweep exits non-zero."""
        process = self.start(*overrides)
        code = process.wait(timeout=WAIT_BOUND_S)
        assert code == 0, f"sweep exited {code}:\n{self.log.read_text()[-4000:]}"

    def jobs(self) -> list[str]:
        """Ids of this test's jobs still known to squeue (pending, running or completing)."""
        out = subprocess.run(["squeue", "-h", "-n", self.name, "-o", "%i"], capture_output=True, text=True)
        return out.stdout.split()

    def results(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted(self.runs.glob("*/seed*/results.json"))]


def wait_until(what: str, done: Callable[[], bool], log: Path) -> None:
    deadline = time.monotonic() + WAIT_BOUND_S
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen; sweep log:\n{log.read_text()[-4000:]}")
        time.sleep(1)


@pytest.fixture
def slurm_sweep(
    slurm_cluster: SlurmCluster, data_dir: Path, tmp_path: Path, two_step_overrides: list[str]
) -> Iterator[SlurmSweep]:
    name = f"sstest-{os.getpid()}-{tmp_path.name}"
    sweep = SlurmSweep(slurm_cluster, data_dir, tmp_path, name, two_step_overrides)
    yield sweep
    subprocess.run(["scancel", "-n", sweep.name], check=False)  # no failed test leaves a job behind


def load_study(sweep_dir: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


def jobs_that_ran(sweep_dir: Path) -> list[Path]:
    """submitit's result files: one per SLURM job that ran to its end (successful or not)."""
    return sorted((sweep_dir / ".submitit").glob("*/*_result.pkl"))


def runs_of(trial: optuna.trial.FrozenTrial, results: list[dict]) -> list[dict]:
    """The results.json of the trial's jobs: those whose config has the trial's parameters."""
    return [
        r
        for r in results
        if all(OmegaConf.select(OmegaConf.create(r["config"]), k) == v for k, v in trial.params.items())
    ]


def test_two_trials_of_two_seeds_are_four_slurm_jobs_and_trials_report_seed_means(slurm_sweep: SlurmSweep):
    slurm_sweep.run(
        "+sweep=loss_weights",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.seeds=[0,1]",
    )

    sweep_dir = slurm_sweep.runs / "sweeps" / "loss_weights" / "shapes"
    assert len(jobs_that_ran(sweep_dir)) == 4
    trials = load_study(sweep_dir, "loss_weights").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    results = slurm_sweep.results()
    assert len(results) == 4 and all(r["status"] == "completed" for r in results)
    for trial in trials:
        runs = runs_of(trial, results)
        assert sorted(r["seed"] for r in runs) == [0, 1]
        assert trial.value == pytest.approx(statistics.fmean(r["metrics"][OBJECTIVE] for r in runs))
    assert (sweep_dir / "optimization_results.yaml").is_file()


def test_killed_sweep_relaunched_ends_with_the_planned_trials_none_lost_or_run_twice(slurm_sweep: SlurmSweep):
    args = (
        "+sweep=slot_counts",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=1",
        "hydra.sweeper.seeds=[0]",
    )
    sweeper = slurm_sweep.start(*args)
    wait_until(
        "the first trial finishing",
        lambda: "Trial 0 finished" in slurm_sweep.log.read_text(),
        slurm_sweep.log,
    )
    sweeper.kill()  # like a login-node session that dies: no clean-up of any kind
    sweeper.wait()
    before = {p: p.stat().st_mtime_ns for p in slurm_sweep.runs.glob("*/seed*/results.json")}

    # Relaunched at once: the second trial's job, if already submitted, still runs without its
    # sweeper; the relaunch waits for it rather than start a twin on the same run dir.
    slurm_sweep.run(*args)

    trials = load_study(slurm_sweep.runs / "sweeps" / "slot_counts" / "shapes", "slot_counts").trials
    completed = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(completed) == 2
    assert len({t.params["grouper.n_slots"] for t in completed}) == 2
    retried = {t.user_attrs["retry_of"]: t for t in trials if "retry_of" in t.user_attrs}
    for trial in trials:
        if trial.state.name == "FAIL":  # only a trial cut off by the kill, re-run with its params
            assert trial.number in retried and retried[trial.number].params == trial.params
    results = slurm_sweep.results()
    assert sorted(r["config"]["grouper"]["n_slots"] for r in results) == sorted(
        t.params["grouper.n_slots"] for t in completed
    )
    for trial in completed:
        (run,) = runs_of(trial, results)
        assert trial.value == pytest.approx(run["metrics"][OBJECTIVE])
    # No run trained twice: each run dir's training is announced by exactly one job's log, and what
    # the first launch had finished was only read by the relaunch.
    sweep_dir = slurm_sweep.runs / "sweeps" / "slot_counts" / "shapes"
    job_logs = [p.read_text() for p in (sweep_dir / ".submitit").glob("*/*_log.out")]
    for run in results:
        trained_by = [text for text in job_logs if f"results: {run['run_dir']}/results.json" in text]
        assert len(trained_by) == 1, f"{run['run_dir']} trained by {len(trained_by)} jobs"
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_requeued_job_resumes_from_its_checkpoint_and_ends_at_the_planned_step(
    slurm_sweep: SlurmSweep, slurm_cluster: SlurmCluster
):
    steps = 24
    process = slurm_sweep.start(
        "seed=3",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
        "checkpoint_every_n_steps=4",
        f"hydra.sweep.dir={slurm_sweep.cwd / 'sweep'}",
    )
    wait_until(
        "a running job with a checkpoint",
        lambda: bool(slurm_sweep.jobs()) and any(slurm_sweep.runs.glob("*/seed3/checkpoints/step*.ckpt")),
        slurm_sweep.log,
    )
    (job_id,) = slurm_sweep.jobs()

    subprocess.run(["scontrol", "requeue", job_id], check=True)

    assert process.wait(timeout=WAIT_BOUND_S) == 0, slurm_sweep.log.read_text()[-4000:]
    (result,) = slurm_sweep.results()
    assert result["status"] == "completed" and result["step"] == result["max_steps"] == steps
    job_log = (slurm_sweep.cwd / "sweep" / ".submitit" / job_id / f"{job_id}_0_log.out").read_text()
    assert job_log.count("Starting with JobEnvironment") == 2  # the first run, then the requeued one
    assert "Resuming from" in job_log.split("Starting with JobEnvironment")[2]
    info = slurm_cluster.job_info(job_id)
    assert info is None or info["Restarts"] == "1"


def test_a_trial_that_raises_is_failed_and_the_sweep_completes_the_others(slurm_sweep: SlurmSweep):
    slurm_sweep.run(
        "+sweep=slot_counts",
        "grouper.n_slots=choice(0,3)",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.seeds=[0]",
        "hydra.sweeper.max_failure_rate=0.5",
    )

    sweep_dir = slurm_sweep.runs / "sweeps" / "slot_counts" / "shapes"
    assert len(jobs_that_ran(sweep_dir)) == 2
    trials = {t.params["grouper.n_slots"]: t for t in load_study(sweep_dir, "slot_counts").trials}
    assert trials[0].state.name == "FAIL"
    assert "SlotsweepError: grouper.n_slots=0 must be >= 1" in trials[0].user_attrs["fail_reason"]
    assert trials[3].state.name == "COMPLETE"
    (result,) = slurm_sweep.results()
    assert result["config"]["grouper"]["n_slots"] == 3 and trials[3].value == pytest.approx(
        result["metrics"][OBJECTIVE]
    )

"""Sweeps of the real training task on the local SLURM cluster through hydra/launcher=slurm_gpu.

Each job trains a few steps on tiny shapes data, on CPU (no GPU is requested). The cluster has no
accounting (sacct), so jobs are counted by submitit's result files, one per job that ran. Waits are
polls with generous bounds that only stop a broken cluster from hanging the run; no test asserts
how long anything took.
"""

from __future__ import annotations

import json
import os
import re
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
from tests.integration.conftest import ASHA_TWO_RUNGS

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
    assert {job["kind"] for t in trials for job in t.user_attrs["jobs"]} == {"slurm"}  # not local processes
    results = slurm_sweep.results()
    assert len(results) == 4 and all(r["status"] == "completed" for r in results)
    for trial in trials:
        runs = runs_of(trial, results)
        assert sorted(r["seed"] for r in runs) == [0, 1]
        assert trial.value == pytest.approx(statistics.fmean(r["metrics"][OBJECTIVE] for r in runs))
    assert (sweep_dir / "optimization_results.yaml").is_file()


def test_killed_sweeper_relaunched_adopts_the_running_jobs_and_starts_no_twin(slurm_sweep: SlurmSweep):
    args = (
        "+sweep=slot_counts",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.seeds=[0]",
        "hydra.sweeper.poll_s=1",
        "trainer.max_steps=8",  # long enough to be running when the sweeper is killed
        "trainer.val_check_interval=4",
    )
    sweep_dir = slurm_sweep.runs / "sweeps" / "slot_counts" / "shapes"
    sweeper = slurm_sweep.start(*args)

    def two_trials_running() -> bool:
        if not (sweep_dir / "optuna.db").is_file() or len(slurm_sweep.jobs()) < 2:
            return False
        trials = load_study(sweep_dir, "slot_counts").trials
        return sum("jobs" in t.user_attrs for t in trials) == 2

    wait_until("two trials' jobs in SLURM", two_trials_running, slurm_sweep.log)
    sweeper.kill()  # like a login-node session that dies: no clean-up of any kind
    sweeper.wait()
    left_running = {
        t.number: t.user_attrs["jobs"][0]["job_id"] for t in load_study(sweep_dir, "slot_counts").trials
    }
    still_queued = set(slurm_sweep.jobs())
    first_log_end = len(slurm_sweep.log.read_text())

    slurm_sweep.run(*args)  # relaunched at once: the jobs of the killed sweeper still run

    relaunch_log = slurm_sweep.log.read_text()[first_log_end:]
    for number, job_id in left_running.items():
        if job_id in still_queued:
            assert f"Trial {number} was left running by a previous sweeper: adopting job(s) ['{job_id}']" in (
                relaunch_log
            )
    trials = load_study(sweep_dir, "slot_counts").trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3  # exactly n_trials, none lost
    assert len({t.params["grouper.n_slots"] for t in trials}) == 3
    assert len(jobs_that_ran(sweep_dir)) == 3  # one SLURM job per trial: no twin
    results = slurm_sweep.results()
    for trial in trials:
        (run,) = runs_of(trial, results)
        assert trial.value == pytest.approx(run["metrics"][OBJECTIVE])
    # No run trained twice: each run dir's training is announced by exactly one job's log.
    job_logs = [p.read_text() for p in (sweep_dir / ".submitit").glob("*/*_log.out")]
    for run in results:
        trained_by = [text for text in job_logs if f"results: {run['run_dir']}/results.json" in text]
        assert len(trained_by) == 1, f"{run['run_dir']} trained by {len(trained_by)} jobs"


def test_a_pruner_that_prunes_everything_stops_each_job_early_and_reports_seed_means(
    slurm_sweep: SlurmSweep,
):
    max_steps = 40
    slurm_sweep.run(
        "+sweep=loss_weights",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.seeds=[0,1]",
        "hydra.sweeper.poll_s=1",
        "hydra/sweeper/pruner=threshold",
        "hydra.sweeper.pruner.lower=2",  # an ARI is at most 1: every trial is pruned at its first report
        f"trainer.max_steps={max_steps}",
        "trainer.val_check_interval=2",
    )

    sweep_dir = slurm_sweep.runs / "sweeps" / "loss_weights" / "shapes"
    trials = load_study(sweep_dir, "loss_weights").trials
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"]  # n_trials finished, none failed
    results = slurm_sweep.results()
    assert len(results) == 4
    for run in results:  # each job stopped at a validation soon after the stop request
        assert run["status"] == "pruned" and run["step"] < max_steps and run["steps"] == run["step"]
        assert run["step"] % 2 == 0 and OBJECTIVE in run["metrics"]
    for trial in trials:
        first = min(trial.intermediate_values)
        assert first == 2
        seeds = runs_of(trial, results)
        assert sorted(r["seed"] for r in seeds) == [0, 1]
        reported = [
            json.loads(line)["values"][0]
            for r in seeds
            for line in (Path(r["run_dir"]) / "validation.jsonl").read_text().splitlines()
            if json.loads(line)["step"] == first
        ]
        assert trial.intermediate_values[first] == pytest.approx(statistics.fmean(reported))
        assert trial.user_attrs["steps"] == sum(r["steps"] for r in seeds)
    summary = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert summary.n_pruned == 2 and summary.n_failed == 0
    assert [row.state for row in summary.trials] == ["PRUNED", "PRUNED"]


def test_a_pruned_job_that_does_not_stop_within_the_grace_period_is_scancelled(
    slurm_sweep: SlurmSweep, slurm_cluster: SlurmCluster
):
    # A job reads the stop request (a file in its run dir, trial_files.py) at its validations only.
    # This one validates every 20 steps, so after the report that prunes it, it trains on for 20
    # steps without looking: far beyond a 1 s grace, like a job stuck between validations.
    interval = 20
    slurm_sweep.run(
        "+sweep=loss_weights",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.n_jobs=1",
        "hydra.sweeper.seeds=[0]",
        "hydra.sweeper.poll_s=1",
        "hydra/sweeper/pruner=threshold",
        "hydra.sweeper.pruner.lower=2",  # an ARI is at most 1: pruned at its first report
        "hydra.sweeper.prune_grace_s=1",
        "trainer.max_steps=1000",  # would train for minutes if it were not cancelled
        f"trainer.val_check_interval={interval}",
    )

    sweep_dir = slurm_sweep.runs / "sweeps" / "loss_weights" / "shapes"
    (trial,) = load_study(sweep_dir, "loss_weights").trials
    assert trial.state.name == "PRUNED" and list(trial.intermediate_values) == [interval]  # not FAIL
    (job,) = trial.user_attrs["jobs"]
    assert slurm_sweep.log.read_text().count(f"Trial 0: cancelling job {job['job_id']} (running)") == 1
    assert slurm_cluster.job_info(job["job_id"])["JobState"] == "CANCELLED"  # scancel'ed (no sacct here)
    reports = (Path(job["run_dir"]) / "validation.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in reports] == [interval]  # stopped before its next validation
    summary = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert summary.n_pruned == 1 and summary.n_failed == 0


def _sessions(log: str) -> list[str]:
    """A submitit task log cut into the runs of the job (the first, then each requeued one)."""
    return log.split("Starting with JobEnvironment")[1:]


def _steps(session: str) -> list[int]:
    """The steps of a session's plain progress lines (`step 8/32 | ...`)."""
    return [int(m) for m in re.findall(r"step (\d+)/\d+ \|", session)]


def test_requeued_two_task_ddp_job_resumes_from_its_checkpoint_and_ends_at_the_planned_step(
    slurm_sweep: SlurmSweep, slurm_cluster: SlurmCluster, data_dir: Path, debug_overrides: list[str]
):
    # One job of two tasks under srun (DDP on CPU, gloo): ranks from SLURM, one task per CPU of the node.
    steps, every = 16, 4
    tiny_data = [arg for arg in debug_overrides if arg.startswith("dataset.")]
    two_tasks = [
        *tiny_data,
        "trainer=ddp_cpu",
        "hydra.launcher.tasks_per_node=2",  # after SlurmSweep's =1
        "dataset.batch_size=2",
        "dataset.val_batch_size=2",
        "dataset.num_workers=0",
        "trainer.limit_val_batches=1",
        "trainer.log_every_n_steps=1",  # a plain progress line per step: the steps each run trained
    ]
    ddp = SlurmSweep(slurm_cluster, data_dir, slurm_sweep.cwd, slurm_sweep.name, two_tasks)
    process = ddp.start(
        "seed=3",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
        f"checkpoint_every_n_steps={every}",
        f"hydra.sweep.dir={ddp.cwd / 'sweep'}",
    )

    def trained_checkpoint() -> bool:  # not step0000000.ckpt, the initial weights of every fresh run
        written = ddp.runs.glob("*/seed3/checkpoints/step*.ckpt")
        return bool(ddp.jobs()) and any(int(p.stem.removeprefix("step")) >= every for p in written)

    wait_until("a running job with a checkpoint after training", trained_checkpoint, ddp.log)
    (job_id,) = ddp.jobs()

    subprocess.run(["scontrol", "requeue", job_id], check=True)

    assert process.wait(timeout=WAIT_BOUND_S) == 0, ddp.log.read_text()[-4000:]
    (result,) = ddp.results()  # one results.json, written by rank 0
    assert result["status"] == "completed" and result["step"] == result["max_steps"] == steps
    assert result["config"]["trainer"]["devices"] == 2
    logs = [
        (ddp.cwd / "sweep" / ".submitit" / job_id / f"{job_id}_{task}_log.out").read_text() for task in (0, 1)
    ]
    for task, log in enumerate(logs):
        assert len(_sessions(log)) == 2, f"task {task}: {len(_sessions(log))} runs"  # first, requeued
        assert "Resuming from" in _sessions(log)[1]  # every rank resumes, from the same checkpoint
    first, second = (_steps(session) for session in _sessions(logs[0]))
    resumed = second[0] - 1  # the requeued run's first step follows the checkpoint's
    assert resumed % every == 0 and every <= resumed <= max(first)  # a checkpoint the first run wrote
    assert second == list(range(resumed + 1, steps + 1))  # on to the planned step, no step twice
    assert logs[0].count("results: ") == 1 and "results: " not in logs[1]  # only rank 0 writes
    info = slurm_cluster.job_info(job_id)
    assert info is None or info["Restarts"] == "1"  # requeued once


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


def test_a_grid_prints_a_line_per_job_as_it_ends_and_no_sacct_noise(slurm_sweep: SlurmSweep):
    """A Hydra seeds grid (no sweeper) on the cluster, which has no accounting: each job's state and
    objective as it ends, a summary, the aggregate.py line, and none of submitit's sacct retries."""
    slurm_sweep.run("seed=0,1")
    log = slurm_sweep.log.read_text()
    ended = re.findall(r"job #(\d) \(\S+\) completed: (\S+) \[seed=(\d)\]", log)
    assert sorted((number, seed) for number, _, seed in ended) == [("0", "0"), ("1", "1")], log[-4000:]
    by_seed = {r["seed"]: r["metrics"][OBJECTIVE] for r in slurm_sweep.results()}
    assert {int(seed): float(value) for _, value, seed in ended} == pytest.approx(by_seed, rel=1e-3)
    assert "grid: 2 SLURM jobs ended: 2 completed" in log
    assert "sacct" not in log, log[-4000:]
    assert re.search(r"mean ± std over seeds: python src/aggregate.py \S+/multirun/", log)


def test_a_pool_is_one_slurm_job_and_a_requeue_resumes_every_head(
    slurm_sweep: SlurmSweep, slurm_cluster: SlurmCluster
):
    """pool_size=2: two trials of one seed train as heads of one job; `scontrol requeue` once the pool
    has a step checkpoint, and the requeued job resumes both heads from it to the planned step."""
    steps, every = 16, 4
    process = slurm_sweep.start(
        "+sweep=loss_weights",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.seeds=[0]",
        "hydra.sweeper.pool_size=2",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={every}",
        f"checkpoint_every_n_steps={every}",
    )
    sweep_dir = slurm_sweep.runs / "sweeps" / "loss_weights" / "shapes"

    def pool_checkpoint() -> bool:  # not step0000000.ckpt, the initial weights
        written = (sweep_dir / "pools").glob("*/checkpoints/step*.ckpt")
        return bool(slurm_sweep.jobs()) and any(int(p.stem.removeprefix("step")) >= every for p in written)

    wait_until("a pool job with a checkpoint after training", pool_checkpoint, slurm_sweep.log)
    (job_id,) = slurm_sweep.jobs()  # one job for both trials
    subprocess.run(["scontrol", "requeue", job_id], check=True)

    assert process.wait(timeout=WAIT_BOUND_S) == 0, slurm_sweep.log.read_text()[-4000:]
    trials = load_study(sweep_dir, "loss_weights").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert {job["job_id"] for t in trials for job in t.user_attrs["jobs"]} == {job_id}
    results = slurm_sweep.results()
    assert len(results) == 2 and {r["pool"]["ticket"] for r in results} == {
        "trial00000-seed0",
        "trial00001-seed0",
    }
    for trial in trials:
        (run,) = runs_of(trial, results)
        assert run["status"] == "completed" and run["step"] == steps
        assert run["segments"][0]["started"] == "requeued" and run["segments"][0]["from_step"] >= every
        assert trial.value == pytest.approx(run["metrics"][OBJECTIVE])
    log = (sweep_dir / ".submitit" / job_id / f"{job_id}_0_log.out").read_text()
    assert "resuming from" in log


def test_asha_pauses_a_trial_in_its_slurm_job_and_a_later_job_resumes_it_by_promotion(
    slurm_sweep: SlurmSweep,
):
    slurm_sweep.run(*ASHA_TWO_RUNGS, "hydra.sweeper.poll_s=1", "trainer.max_steps=4")

    sweep_dir = slurm_sweep.runs / "sweeps" / "slot_counts" / "shapes"
    trials = load_study(sweep_dir, "slot_counts").trials
    assert "COMPLETE" in {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    assert {job["kind"] for t in trials for job in t.user_attrs["jobs"]} == {"slurm"}
    results = slurm_sweep.results()
    segments = [segment for r in results for segment in r["segments"]]
    assert len(jobs_that_ran(sweep_dir)) == len(segments)  # one SLURM job per segment, no other
    for trial in trials:
        runs = sorted(runs_of(trial, results), key=lambda r: r["seed"])
        if trial.state.name == "PRUNED":  # left paused at rung 0: its checkpoint waits in its run dir
            (paused,) = runs
            assert (paused["status"], paused["step"], paused["seed"]) == ("paused", 2, 0)
            continue
        first, gained = runs
        assert [(s["from_step"], s["to_step"], s["started"], s["ended"]) for s in first["segments"]] == [
            (0, 2, "new", "paused"),
            (2, 4, "promoted", "completed"),
        ]
        assert [(s["from_step"], s["started"]) for s in gained["segments"]] == [(0, "new")]
        assert first["steps"] == 4 and first["status"] == gained["status"] == "completed"
        assert trial.value == pytest.approx(statistics.fmean(r["metrics"][OBJECTIVE] for r in runs))

"""A sweep's cost as its summary shows it, against what the operating system measured of its jobs.

The summary's device-hours come from the jobs' results.json: the job's own count (slotsweep.training.cost:
CPU-seconds of the process from its start on a CPU run), raised by the sweeper to what the OS counted
for the job's process tree when it reaped it. Here the same seconds are read from outside again: the local
launcher's jobs are child processes of the sweeper, so once they are reaped their CPU time is in the
sweeper's cutime + cstime (/proc/<pid>/stat), which the test reads while the ended sweeper is a
zombie (its children's times final, nothing of the test's own in them).
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[2]
TRAIN_MULTIRUN = [sys.executable, str(REPO / "src" / "train.py"), "-m"]
HANG_GUARD_S = 1800  # only stops a hung sweep from blocking CI; no test asserts a duration


def reaped_children_cpu_s(process: subprocess.Popen) -> float:
    """CPU-seconds of the children that `process` reaped, read once it has ended (before it is
    waited for, so /proc still holds its entry)."""
    stat = Path(f"/proc/{process.pid}/stat")
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline:
        fields = stat.read_text().rsplit(")", 1)[1].split()  # fields[0] is field 3, state
        if fields[0] == "Z":
            cutime, cstime = int(fields[13]), int(fields[14])  # fields 16 and 17, clock ticks
            return (cutime + cstime) / os.sysconf("SC_CLK_TCK")
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"the sweep did not end within {HANG_GUARD_S} s")


def slot_counts_sweep(
    tmp_path: Path, data_dir: Path, debug_overrides: list[str], *settings: str, steps: int
) -> list[str]:
    """`+sweep=slot_counts` of real training jobs on tiny data, 2 trials in flight, local jobs,
    validated every 2 of `steps` steps on one batch; `settings` (hydra.sweeper.*) last."""
    return [
        *TRAIN_MULTIRUN,
        "+sweep=slot_counts",
        "hydra/launcher=local",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.poll_s=0.5",
        f"paths.runs_dir={tmp_path / 'runs'}",
        f"paths.data_dir={data_dir}",
        *debug_overrides,
        f"trainer.max_steps={steps}",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1",
        *settings,
    ]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc (Linux)")
def test_the_summary_costs_add_up_to_the_jobs_measured_cpu_seconds_within_5_percent(
    data_dir: Path, tmp_path: Path, debug_overrides: list[str]
):
    command = slot_counts_sweep(
        tmp_path, data_dir, debug_overrides, "hydra.sweeper.n_trials=2", "hydra.sweeper.seeds=[0,1]", steps=6
    )
    env = {**os.environ, "WANDB_MODE": "offline"}
    log = tmp_path / "sweep.log"
    with log.open("w") as out:
        sweeper = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=env)

    measured_s = reaped_children_cpu_s(sweeper)

    assert sweeper.wait() == 0, log.read_text()[-3000:]
    sweep_dir = tmp_path / "runs" / "sweeps" / "slot_counts" / "shapes"
    summary = OmegaConf.to_container(OmegaConf.load(sweep_dir / "optimization_results.yaml"))
    assert [row["seeds"] for row in summary["trials"]] == [2, 2]  # 4 jobs, each one child process
    summary_s = summary["total"]["device_hours"] * 3600
    assert summary_s == pytest.approx(sum(row["device_hours"] * 3600 for row in summary["trials"]))
    # each job's cost is its reaped process tree's CPU time (sweeps/jobs.py LocalJobs), wrapper and
    # exit included; results.json keeps the job's own count beside it
    results = [OmegaConf.load(p) for p in (tmp_path / "runs").glob("*/seed*/results.json")]
    assert len(results) == 4 and all(r.device_seconds >= r.device_seconds_by_job for r in results)
    assert summary_s == pytest.approx(measured_s, rel=0.05), (
        f"summary {summary_s:.2f} s, measured {measured_s:.2f} s"
    )


@pytest.mark.slow
def test_a_budget_spent_by_running_jobs_stops_the_sweep_before_any_trial_has_ended(
    data_dir: Path, tmp_path: Path, debug_overrides: list[str]
):
    """Two trials start together; a tiny budget is spent as soon as their jobs report a cost at a
    validation, while both still run: no third trial starts, and the two in flight finish."""
    command = slot_counts_sweep(
        tmp_path,
        data_dir,
        debug_overrides,
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.seeds=[0]",
        "hydra.sweeper.budget_hours=1e-6",  # 3.6 ms: spent by the first validation's report
        steps=40,  # seconds of training after the first report at step 2
    )
    env = {**os.environ, "WANDB_MODE": "offline"}

    run = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=HANG_GUARD_S)

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    log = run.stdout + run.stderr
    # counted while running: with ended trials only, the budget would be spent with at most one in flight
    assert "no new trial is launched; 2 in flight finish" in log
    sweep_dir = tmp_path / "runs" / "sweeps" / "slot_counts" / "shapes"
    summary = OmegaConf.to_container(OmegaConf.load(sweep_dir / "optimization_results.yaml"))
    assert [row["state"] for row in summary["trials"]] == ["COMPLETE", "COMPLETE"]  # 2 never started
    assert all(row["steps"] == 40 for row in summary["trials"])  # the two in flight ran to the end
    assert summary["budget"]["stopped_early"] is True
    assert summary["budget"]["spent_hours"] > summary["budget"]["hours"]

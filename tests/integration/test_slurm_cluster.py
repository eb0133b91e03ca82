"""The local one-node SLURM cluster (slurm/cluster.sh): jobs run, and a requeued job runs again.

Waits are polls with generous bounds that only stop a broken cluster from hanging the run; no
test asserts how long anything took.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import SlurmCluster

pytestmark = pytest.mark.slurm

# Generous: the machine is shared, and a requeued job first waits out cred_expire (30 s).
WAIT_BOUND_S = 600
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}


def sbatch(cluster: SlurmCluster, workdir: Path, script: str) -> str:
    """Submit `script` (bash) from `workdir`; returns the job id."""
    out = subprocess.run(
        [
            "sbatch",
            "--parsable",
            f"--partition={cluster.partition}",
            f"--chdir={workdir}",
            f"--output={workdir}/slurm-%j.out",
            "--open-mode=append",  # a requeued run appends instead of truncating the first run's log
            "--ntasks=1",
            "--cpus-per-task=1",
            "--mem=100M",
        ],
        input=f"#!/bin/bash\nset -eu\n{script}\n",
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, f"sbatch failed: {out.stderr}"
    return out.stdout.strip().split(";")[0]


def wait_until(cluster: SlurmCluster, job_id: str, what: str, done: Callable[[], bool]) -> None:
    """Poll `done` every second; fail (with the job's state) if it never holds within the bound."""
    deadline = time.monotonic() + WAIT_BOUND_S
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id}: {what} did not happen; scontrol says {cluster.job_info(job_id)}")
        time.sleep(1)


def final_state(cluster: SlurmCluster, job_id: str) -> str:
    """Wait until the job has ended and return its state (COMPLETED, FAILED, ...)."""
    states: list[str] = []

    def ended() -> bool:
        info = cluster.job_info(job_id)
        states.append("PURGED" if info is None else info["JobState"])
        return states[-1] in FINAL_STATES | {"PURGED"}

    wait_until(cluster, job_id, "ending", ended)
    return states[-1]


@pytest.fixture
def cancel_at_end(slurm_cluster: SlurmCluster) -> Iterator[Callable[[str], str]]:
    """cancel_at_end(job_id) -> job_id: scancel'd after the test, so no failed test leaves a job."""
    job_ids: list[str] = []

    def register(job_id: str) -> str:
        job_ids.append(job_id)
        return job_id

    yield register
    if job_ids:  # a no-op for jobs that already ended
        subprocess.run(["scancel", *job_ids], check=False)


def test_batch_job_runs_and_writes_its_output(slurm_cluster: SlurmCluster, cancel_at_end, tmp_path: Path):
    job_id = cancel_at_end(
        sbatch(
            slurm_cluster, tmp_path, 'echo "job $SLURM_JOB_ID on $SLURM_JOB_PARTITION" > result.txt\nid -u'
        )
    )

    assert final_state(slurm_cluster, job_id) in {"COMPLETED", "PURGED"}
    assert (tmp_path / "result.txt").read_text() == f"job {job_id} on {slurm_cluster.partition}\n"
    # The job runs as the submitting user (root in CI), with that user's files.
    assert (tmp_path / f"slurm-{job_id}.out").read_text().strip() == str(os.getuid())


# make test-all only (CI time): test_slurm_sweeps' requeued DDP job runs again and resumes, in make test
@pytest.mark.slow
@pytest.mark.heavy
def test_requeued_running_job_runs_again_with_restart_count(
    slurm_cluster: SlurmCluster, cancel_at_end, tmp_path: Path
):
    # The first run records itself and then waits to be requeued; the second run records and ends.
    script = (
        'echo "restart=${SLURM_RESTART_COUNT:-0}" >> runs.txt\n'
        'if [[ -z "${SLURM_RESTART_COUNT:-}" ]]; then sleep 3600; fi'
    )
    job_id = cancel_at_end(sbatch(slurm_cluster, tmp_path, script))
    runs = tmp_path / "runs.txt"
    wait_until(slurm_cluster, job_id, "the first run starting", runs.exists)

    subprocess.run(["scontrol", "requeue", job_id], check=True)

    assert final_state(slurm_cluster, job_id) in {"COMPLETED", "PURGED"}
    assert runs.read_text().splitlines() == ["restart=0", "restart=1"]
    info = slurm_cluster.job_info(job_id)
    assert info is None or info["Restarts"] == "1"

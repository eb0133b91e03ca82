"""LocalJobs follows a killed sweeper's jobs by pid, and only while the pid is still that job."""

import subprocess
import sys
import time
from pathlib import Path

from slotsweep.sweeps.jobs import FOLDER_PATTERN, LocalJobs


def _started(process: subprocess.Popen, marker: bytes) -> subprocess.Popen:
    """`process` once it runs its own command line: right after fork, /proc/<pid>/cmdline is
    still pytest's, and a check made then would see another program."""
    cmdline = Path(f"/proc/{process.pid}/cmdline")
    while marker not in cmdline.read_bytes():
        time.sleep(0.01)
    return process


def test_a_stored_pid_taken_by_another_process_is_ended_and_never_signalled(tmp_path: Path):
    jobs = LocalJobs(executor=None, launcher=None, folder=tmp_path / FOLDER_PATTERN)
    other = _started(
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]), b"-c"
    )  # took the job's pid
    try:
        assert jobs.states([str(other.pid)]) == {str(other.pid): "ended"}
        jobs.cancel(str(other.pid))
        assert other.poll() is None  # not SIGTERMed
    finally:
        other.kill()
        other.wait()


def test_a_live_job_controller_of_this_folder_is_running(tmp_path: Path):
    folder = tmp_path / FOLDER_PATTERN
    jobs = LocalJobs(executor=None, launcher=None, folder=folder)
    # The command line submitit gives its local job controller (submitit/local/local.py), here one
    # that only sleeps: what a relaunched sweeper finds in place of its predecessor's child.
    code = "import sys, time; time.sleep(60)"
    controller = _started(
        subprocess.Popen([sys.executable, "-c", code, "-m", "submitit.local._local", str(folder)]), b"_local"
    )
    try:
        assert jobs.states([str(controller.pid)]) == {str(controller.pid): "running"}
        jobs.cancel(str(controller.pid))
        assert controller.wait(timeout=60) == -15  # SIGTERM
    finally:
        controller.kill()

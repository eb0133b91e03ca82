"""Device-seconds and steps of a run, carried over its sessions (slotsweep.training.cost)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from slotsweep.training.cost import DeviceClock

SRC = Path(__file__).resolve().parents[4] / "src"


def test_cpu_seconds_of_this_session_add_to_the_previous_sessions():
    clock = DeviceClock({"device_seconds": 10.0, "steps": 7})
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:  # burn 0.2 CPU-seconds
        pass

    record = clock.record(n_gpus=0, first_step=5, last_step=9)

    assert record["device_kind"] == "cpu" and record["steps"] == 7 + 4
    assert 10.2 <= record["device_seconds"] < 10.5


def test_gpu_seconds_are_wall_time_times_the_gpus():
    before = time.monotonic()
    clock = DeviceClock(None)
    time.sleep(0.2)

    record = clock.record(n_gpus=4, first_step=0, last_step=3)

    wall = time.monotonic() - before
    assert record["device_kind"] == "gpu" and record["steps"] == 3
    assert 4 * 0.2 <= record["device_seconds"] <= 4 * wall


def test_a_process_first_clock_counts_from_the_process_start():
    """A job's start-up (interpreter, imports, data) is part of its cost; a later run in the same
    process counts from its own start."""
    script = (
        "import json, time\n"
        "deadline = time.process_time() + 0.3\n"
        "while time.process_time() < deadline: pass  # start-up work before training\n"
        "from slotsweep.training.cost import DeviceClock\n"
        "first, second = DeviceClock(None, True), DeviceClock(None, True)\n"
        "print(json.dumps([first.seconds(0), first.seconds(1), second.seconds(0)]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    cpu, wall, later = json.loads(out.stdout)
    assert cpu >= 0.3 and wall >= 0.3  # CPU-seconds and wall x 1 GPU since the process started
    assert later < 0.3

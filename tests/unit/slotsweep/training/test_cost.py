"""Device-seconds and steps of a run, carried over its sessions (slotsweep.training.cost)."""

import time

from slotsweep.training.cost import DeviceClock


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

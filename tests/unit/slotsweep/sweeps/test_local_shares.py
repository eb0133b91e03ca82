"""How a local sweep splits the machine's GPUs and cores among its job slots, and a job applies its share."""

import os
import subprocess
import sys

import pytest

from slotsweep.sweeps.local_shares import share
from slotsweep.training.job_cores import CPUS_ENV, SLOT_ENV


@pytest.mark.parametrize(
    ("n_devices", "n_slots", "expected"),
    [
        (4, 4, [[0], [1], [2], [3]]),  # one GPU per job on a 4-GPU box
        (8, 4, [[0, 1], [2, 3], [4, 5], [6, 7]]),  # 2 cores each
        (2, 4, [[0], [0], [1], [1]]),  # fewer devices: a trial's two seeds share one
        (3, 2, [[0], [1, 2]]),  # uneven: every device is given out
        (1, 3, [[0], [0], [0]]),
    ],
)
def test_each_slot_gets_a_contiguous_block_and_every_device_is_used(n_devices, n_slots, expected):
    blocks = [share(list(range(n_devices)), n_slots, slot) for slot in range(n_slots)]
    assert blocks == expected
    assert sorted({d for block in blocks for d in block}) == list(range(n_devices))


def test_slots_beyond_the_planned_ones_wrap_around_and_no_devices_give_none():
    assert share([0, 1, 2, 3], 2, 3) == share([0, 1, 2, 3], 2, 1) == [2, 3]
    assert share([], 4, 0) == []


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")
def test_a_job_pins_itself_to_its_cores_and_sizes_torch_threads_to_them():
    code = (
        "import os, torch; from slotsweep.training.job_cores import apply_cpu_share; "
        "cpus = apply_cpu_share(); print(cpus, sorted(os.sched_getaffinity(0)), torch.get_num_threads())"
    )
    core = sorted(os.sched_getaffinity(0))[-1]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update({CPUS_ENV: str(core), SLOT_ENV: "1"})
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [f"[{core}]", f"[{core}]", "1"]

"""Which GPUs and CPU cores each job of a local sweep gets: the machine split among its job slots.

A local sweep runs up to n_jobs x len(seeds) jobs at once (sweeps/jobs.py). Left to themselves they
would all see the whole machine: every job's PyTorch sizes its thread pool to every core (4 jobs x
8 threads on 8 cores), and every job trains on the first GPU. So job slot k of n gets the k-th
contiguous block of the sweeper's GPUs and of its cores (`share`): one GPU each on a 4-GPU box with
4 slots, 2 cores each on 8 cores; with fewer devices than slots, neighbouring slots share one. A
trial's seeds take neighbouring slots, so where they must share a device they share it with each
other, and a trial that ends frees whole devices for the next one.

The sweeper passes the share in the job's environment (`job_environment`); the job applies its
cores when training starts (`job_cores.apply_cpu_share`: affinity, and as many torch threads as cores unless
OMP_NUM_THREADS says otherwise). `hydra.sweeper.split_local_devices=false` gives every job every
device, as a plain process would have.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TypeVar

from slotsweep.training.job_cores import CPUS_ENV, SLOT_ENV

__all__ = [
    "job_environment",
    "machine_cpus",
    "machine_gpus",
    "share",
]


T = TypeVar("T")


def share(devices: Sequence[T], n_slots: int, slot: int) -> list[T]:
    """Slot `slot` of `n_slots`'s block of `devices` (at least one device when there are any).

    Slots beyond n_slots (more jobs than planned, e.g. confirmation seeds) wrap around.
    """
    if not devices:
        return []
    slot %= n_slots
    start = slot * len(devices) // n_slots
    stop = max(start + 1, (slot + 1) * len(devices) // n_slots)
    return list(devices[start:stop])


def machine_cpus() -> list[int]:
    """The cores this process may run on (a cgroup, taskset or SLURM allocation included)."""
    if not hasattr(os, "sched_getaffinity"):  # macOS: no affinity, every core
        return list(range(os.cpu_count() or 1))
    return sorted(os.sched_getaffinity(0))


def machine_gpus() -> list[str]:
    """The GPUs this process sees, as CUDA_VISIBLE_DEVICES names them for its children."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:  # ids or UUIDs; "" hides every GPU
        return [name for name in visible.split(",") if name.strip()]
    import torch  # counting GPUs creates no CUDA context: the jobs are fresh processes anyway

    return [str(index) for index in range(torch.cuda.device_count())]


def job_environment(slot: int, n_slots: int, split: bool) -> tuple[str, dict[str, str]]:
    """(CUDA_VISIBLE_DEVICES, other environment variables) for the job in `slot`.

    Without `split` the job sees every GPU, and its cores are left alone.
    """
    gpus = machine_gpus()
    if not split:
        return ",".join(gpus), {}
    cpus = share(machine_cpus(), n_slots, slot)
    return ",".join(share(gpus, n_slots, slot)), {
        CPUS_ENV: ",".join(map(str, cpus)),
        SLOT_ENV: str(slot),
    }

"""The job side of a local sweep's machine split: pin the process to the cores it was given.

The sweeper (sweeps/local_shares.py) gives each local job a slot and a block of cores in its
environment; the job reads them here when training starts.
"""

from __future__ import annotations

import logging
import os

__all__ = ["CPUS_ENV", "SLOT_ENV", "apply_cpu_share"]

log = logging.getLogger(__name__)

CPUS_ENV = "SLOTSWEEP_JOB_CPUS"  # "0,1": the cores the job pins itself to
SLOT_ENV = "SLOTSWEEP_JOB_SLOT"  # the job's slot: a relaunched sweeper reads it from adopted jobs


def apply_cpu_share() -> list[int] | None:
    """In a local sweep job: pin the process to its cores, and size torch's thread pool to them.

    Returns the cores, or None outside a split local sweep (nothing changed). Dataloader workers
    started later inherit the affinity.
    """
    listed = os.environ.get(CPUS_ENV)
    if not listed:
        return None
    cpus = [int(cpu) for cpu in listed.split(",")]
    if hasattr(os, "sched_setaffinity"):  # macOS has none: the thread count alone keeps to the share
        os.sched_setaffinity(0, cpus)
    if "OMP_NUM_THREADS" not in os.environ:  # the user's own thread count wins
        import torch

        torch.set_num_threads(len(cpus))
    log.info(
        f"local sweep job slot {os.environ.get(SLOT_ENV)}: cores {listed}, "
        f"GPUs '{os.environ.get('CUDA_VISIBLE_DEVICES', '')}'"
    )
    return cpus

"""What a training run cost: device-seconds and steps, summed over its sessions (resumes, requeues).

GPU-seconds on GPU (wall time x the GPUs of the job, busy or not: that is what a cluster charges),
CPU-seconds of the process and its ended children (data loader workers) otherwise. A job's cost
runs from its process's start, not from the training's: interpreter start-up, imports, data and
cache preparation count too. A sweep sums these per trial and compares them with
`hydra.sweeper.budget_hours`.
"""

import os
import resource
import time
from pathlib import Path
from typing import Any

__all__ = ["DeviceClock"]

_process_clock_taken = False  # only one clock of a process may count from the process's start


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _process_age_s() -> float:
    """Seconds since this process started (Linux /proc; 0 where it cannot be read)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started_ticks = int(fields[19])  # field 22, starttime, in clock ticks after boot
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


class DeviceClock:
    """Started when a session starts; `record` gives the results.json fields at its end.

    Args:
        previous: the run's results.json from an earlier session, whose cost is carried on.
        from_process_start: count from the process's start (a job: its start-up is paid for), for
            the first such clock of the process; later ones (runs after the first in one process)
            and the others count from their own start.
    """

    def __init__(self, previous: dict[str, Any] | None, from_process_start: bool = False) -> None:
        global _process_clock_taken
        self.previous_seconds = float((previous or {}).get("device_seconds", 0.0))
        self.previous_steps = int((previous or {}).get("steps", 0))
        self.wall_start = time.monotonic()
        self.cpu_start = _cpu_seconds()
        if from_process_start and not _process_clock_taken:
            _process_clock_taken = True
            self.wall_start -= _process_age_s()
            self.cpu_start = 0.0

    def seconds(self, n_gpus: int) -> float:
        """Device-seconds of the run so far, this session's included."""
        if n_gpus > 0:
            return self.previous_seconds + (time.monotonic() - self.wall_start) * n_gpus
        return self.previous_seconds + _cpu_seconds() - self.cpu_start

    def record(self, n_gpus: int, first_step: int, last_step: int) -> dict[str, Any]:
        """{device_kind, device_seconds, steps}: `steps` counts every step trained, including steps
        trained again after a resume from an older checkpoint.

        Args:
            n_gpus: GPUs of this session (0: a CPU run).
            first_step, last_step: the global step when this session started and ended.
        """
        return {
            "device_kind": "gpu" if n_gpus > 0 else "cpu",
            "device_seconds": self.seconds(n_gpus),
            "steps": self.previous_steps + last_step - first_step,
        }

"""What a training run cost: device-seconds and steps, summed over its sessions (resumes, requeues).

GPU-seconds on GPU (wall time x the GPUs of the job, busy or not: that is what a cluster charges),
CPU-seconds of the process and its ended children (data loader workers) otherwise. A sweep sums
these per trial and compares them with `hydra.sweeper.budget_hours`.
"""

import resource
import time
from typing import Any

__all__ = ["DeviceClock"]


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class DeviceClock:
    """Started when a session starts; `record` gives the results.json fields at its end.

    Args:
        previous: the run's results.json from an earlier session, whose cost is carried on.
    """

    def __init__(self, previous: dict[str, Any] | None) -> None:
        self.previous_seconds = float((previous or {}).get("device_seconds", 0.0))
        self.previous_steps = int((previous or {}).get("steps", 0))
        self.wall_start = time.monotonic()
        self.cpu_start = _cpu_seconds()

    def record(self, n_gpus: int, first_step: int, last_step: int) -> dict[str, Any]:
        """{device_kind, device_seconds, steps}: `steps` counts every step trained, including steps
        trained again after a resume from an older checkpoint.

        Args:
            n_gpus: GPUs of this session (0: a CPU run).
            first_step, last_step: the global step when this session started and ended.
        """
        if n_gpus > 0:
            kind, seconds = "gpu", (time.monotonic() - self.wall_start) * n_gpus
        else:
            kind, seconds = "cpu", _cpu_seconds() - self.cpu_start
        return {
            "device_kind": kind,
            "device_seconds": self.previous_seconds + seconds,
            "steps": self.previous_steps + last_step - first_step,
        }

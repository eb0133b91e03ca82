"""What every benchmark script shares: where the machine's description and the result tables go."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"

__all__ = ["RESULTS_DIR", "machine_description", "write_table"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_description() -> str:
    """One Markdown line naming what the numbers were measured on (timings mean little without it)."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    # the load average says how much the machine was shared while the numbers were taken
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (
        f"Machine: {platform.platform()}; CPU {_cpu_model()}, {os.cpu_count()} logical cores, "
        f"load average {load} (1/5/15 min); torch threads {torch.get_num_threads()}; GPU {gpu}; "
        f"Python {platform.python_version()}, torch {torch.__version__}."
    )


def write_table(name: str, markdown: str) -> Path:
    """Write ``markdown`` plus the machine description to ``benchmarks/results/<name>.md``.

    The file is written to ``<name>.md.tmp`` first and renamed, so an interrupted run never leaves a
    half-written table behind.
    """
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(f"{markdown.rstrip()}\n\n{machine_description()}\n")
    tmp.replace(path)
    return path

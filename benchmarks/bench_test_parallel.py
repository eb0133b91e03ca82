"""Does the test suite gain from running two test processes at a time (pytest-xdist `-n 2`)?

Many integration tests mostly wait: on SLURM's scheduler and `sacct` polls, on training
subprocesses that start Python and import torch. Two at a time could overlap those waits; on a
2-core machine the CPU-bound tests would only fight over the cores. This script times a selection
of tests both ways, in alternating rounds (serial, parallel, serial, ...), each a fresh pytest
process, and prints the median wall time per mode with its spread (min-max) and the ratio.

    python benchmarks/bench_test_parallel.py [--rounds 2] [--workers 2] [selection ...]

The default selection is the waiting kind: the SLURM tests and the local sweeper's tests. A
round that fails is reported and stops the benchmark (a speed-up of a failing suite means nothing).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from _common import REPO, write_table

WAITING = [
    "tests/integration/test_slurm_sweeps.py",
    "tests/integration/test_slurm_launcher.py",
    "tests/integration/test_slurm_cluster.py",
    "tests/integration/test_sweeps.py",
]


def _timed_pytest(selection: list[str], workers: int) -> float:
    """Wall seconds of one pytest process over `selection`; `workers` 0: no xdist."""
    parallel = ["-n", str(workers)] if workers else ["-p", "no:xdist"]
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not heavy", *parallel]
    start = time.perf_counter()
    run = subprocess.run([*command, *selection], cwd=REPO, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if run.returncode != 0:
        sys.exit(f"error: {' '.join(command[1:])} {' '.join(selection)} failed:\n{run.stdout[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist processes of the parallel side")
    parser.add_argument("selection", nargs="*", default=WAITING, help="test files or node ids")
    args = parser.parse_args()
    times: dict[str, list[float]] = {"serial": [], f"-n {args.workers}": []}
    for round_index in range(args.rounds):
        for mode, workers in (("serial", 0), (f"-n {args.workers}", args.workers)):
            times[mode].append(_timed_pytest(args.selection, workers))
            print(f"round {round_index + 1}: {mode} {times[mode][-1]:.0f} s", flush=True)
    serial = statistics.median(times["serial"])
    lines = [
        "# Tests two at a time (pytest-xdist) against one at a time",
        "",
        f"Selection: {' '.join(args.selection)}. {args.rounds} alternating rounds, each a fresh pytest "
        "process; wall seconds, median (min-max).",
        "",
        "| mode | wall s, median (min-max) | vs serial |",
        "|---|---:|---:|",
        *(
            f"| {mode} | {statistics.median(t):.0f} ({min(t):.0f}-{max(t):.0f}) | "
            f"{serial / statistics.median(t):.2f}x |"
            for mode, t in times.items()
        ),
    ]
    table = "\n".join(lines)
    print(table)
    print(f"\nwritten to {write_table('test_parallel', table)}")


if __name__ == "__main__":
    main()

"""Run every benchmark (`make bench`); each prints its table and writes benchmarks/results/<name>.md.

Each runs in its own process, so one's settings (the metrics benchmark's single thread) do not leak
into the next. About 35 minutes on 2 loaded cores. The GPU benchmark refuses to run without CUDA,
so it is skipped here on a machine without it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    "bench_metrics.py",
    "bench_train_steps.py",
    "bench_shard_cache.py",
    "bench_loader.py",
    "bench_input.py",
    "bench_gpu.py",
    "bench_sweeps.py",
    "bench_sweeps_replay.py",  # ~40 s: replays the committed curves (record_sweep_curves.py records them)
    "bench_pools.py",  # ~6 min: a pool of 4 heads against the 4 trials solo
    "bench_pool_sweep.py",  # ~12 min: an 8-trial sweep at pool_size=4 against pool_size=1
]

GPU_ONLY = {"bench_gpu.py"}


def _has_cuda() -> bool:
    import torch  # here only: the other benchmarks run in their own processes

    return torch.cuda.is_available()


def main() -> int:
    failed = []
    for script in BENCHMARKS:
        if script in GPU_ONLY and not _has_cuda():
            print(f"\n=== {script}: skipped, no CUDA device ===", flush=True)
            continue
        print(f"\n=== {script} ===", flush=True)
        start = time.perf_counter()
        if subprocess.run([sys.executable, str(HERE / script)], cwd=HERE.parent).returncode != 0:
            failed.append(script)
        print(f"=== {script}: {time.perf_counter() - start:.0f} s ===", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

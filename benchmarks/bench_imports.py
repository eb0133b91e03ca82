"""Start-up cost of the entry points: wall time, peak RSS and whether W&B/Optuna get imported.

Each case runs in a fresh interpreter, the eager baseline (what the code did before imports were
made lazy) next to the current path, in the same run:
- `train.py --help`: baseline imports timm plainly and slotsweep.training.task (torch, Lightning, timm,
  and W&B through timm) before Hydra prints the help; now the entry point imports training only
  inside the task.
- library import of a csv run (`import slotsweep.training.task`): baseline imports timm plainly first,
  so timm's `import wandb` runs; now timm comes through slotsweep.lean_timm with wandb hidden.
Prints a Markdown table and writes benchmarks/results/imports.md. A few minutes on 2 loaded cores.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

from _common import REPO, write_table

REPEATS = 3
# Runs in the child first. At exit (also Hydra's sys.exit) it reports which modules came in and its
# peak RSS (VmHWM: this process image's own, unlike ru_maxrss, which keeps the forking parent's).
PRELUDE = """import atexit, sys
def _report():
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1]
    print("MODULES", hwm, *(m in sys.modules for m in ("wandb", "optuna", "torch")), file=sys.stderr)
atexit.register(_report)
"""
TRAIN_HELP = """import runpy
sys.argv = ["src/train.py", "--help"]
runpy.run_path("src/train.py", run_name="__main__")
"""
EAGER = "import timm, slotsweep.training.task\n"  # timm first and plain: its `import wandb` runs
CASES = [  # (case, variant, child code)
    ("`train.py --help`", "baseline: eager", EAGER + TRAIN_HELP),
    ("`train.py --help`", "now: lazy", TRAIN_HELP),
    ("`import slotsweep.training.task` (csv run)", "baseline: plain timm", EAGER),
    ("`import slotsweep.training.task` (csv run)", "now: lean_timm", "import slotsweep.training.task\n"),
]
HEADER = (
    "| case | variant | wall s (median) | peak RSS MiB | imports wandb | imports optuna | imports torch |"
)


def _measure(code: str) -> tuple[float, float, list[bool]]:
    """(wall s, peak RSS MiB, [wandb, optuna, torch imported]) of one fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    start = time.perf_counter()
    child = subprocess.run(
        [sys.executable, "-c", PRELUDE + code],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wall = time.perf_counter() - start
    if child.returncode != 0:
        raise RuntimeError(f"child failed:\n{child.stderr[-2000:]}")
    report = next(line for line in child.stderr.splitlines() if line.startswith("MODULES"))
    hwm_kib, *flags = report.split()[1:]
    return wall, int(hwm_kib) / 1024, [flag == "True" for flag in flags]


def main() -> None:
    rows = [HEADER, "|---|---|---|---|---|---|---|"]
    for case, variant, code in CASES:
        runs = [_measure(code) for _ in range(REPEATS)]
        wall = statistics.median(r[0] for r in runs)
        rss = statistics.median(r[1] for r in runs)
        wandb, optuna, torch = ("yes" if flag else "no" for flag in runs[-1][2])
        rows.append(f"| {case} | {variant} | {wall:.2f} | {rss:.0f} | {wandb} | {optuna} | {torch} |")
    table = (
        "\n".join(rows)
        + f"\n\nMedian of {REPEATS} fresh interpreters each; `python benchmarks/bench_imports.py`."
    )
    print(table)
    print(f"wrote {write_table('imports', table)}")


if __name__ == "__main__":
    main()

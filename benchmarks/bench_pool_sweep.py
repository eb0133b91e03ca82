"""An 8-trial sweep with hydra.sweeper.pool_size=4 against the same sweep with pool_size=1.

Both sweeps run the same grid of 8 configurations (4 learning rates x 2 temperatures of the
temporal similarity loss) on seed 0, with 4 trials in flight, local jobs, at bench_pools.py's size
(a random DINO ViT-S/8 at 128 px: the frozen encoder is most of a step). With pool_size=1 every
trial is a job of its own; with pool_size=4 the trials are heads of pool jobs (training/pool.py),
one encoder forward per batch for up to 4 of them. Rounds alternate the two ways; the table gives
per way the median wall seconds and device-seconds (CPU-seconds here: what every job's results.json
says, summed over the trials) with their spread, and how far apart the two ways' trial values are
(they should be equal to float tolerance: a head's results equal its solo run's).

    python benchmarks/bench_pool_sweep.py [--rounds 2] [--steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna
from _common import REPO, write_table
from bench_pools import SIZE
from bench_sweeps import run_local_sweep

GRID = ["optim.base_lr=choice(0.0001, 0.0002, 0.0004, 0.0008)", "loss.timesim.temperature=choice(0.05, 0.1)"]
WAYS = {"pool_size=1": 1, "pool_size=4": 4}


def sweep(pool_size: int, steps: int, data_dir: str, sweep_dir: Path) -> dict:
    """One sweep of the grid; {wall_s, device_s, values: {params: value}}."""
    overrides = [
        "hydra/sweeper/sampler=grid",
        f"hydra.sweeper.pool_size={pool_size}",
        "hydra.sweeper.forecast_gpu=null",
        *SIZE,
        "logger=none",
        "visualize=null",
        "trainer.enable_progress_bar=false",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps // 2}",
        "trainer.limit_val_batches=1",
        f"checkpoint_every_n_steps={steps}",
        *GRID,
    ]
    run, _, wall_s = run_local_sweep(overrides, sweep_dir, data_dir, trials=8, n_jobs=4, seeds=1)
    if run.returncode != 0:
        raise SystemExit(f"pool_size={pool_size} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    study = optuna.load_study(study_name=sweep_dir.name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    trials = [t for t in study.trials if t.state.name == "COMPLETE"]
    if len(trials) != 8:
        raise SystemExit(f"pool_size={pool_size}: {len(trials)} of 8 trials completed")
    return {
        "wall_s": wall_s,
        "device_s": sum(t.user_attrs["device_seconds"] for t in trials),
        "values": {tuple(sorted(t.params.items())): t.value for t in trials},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20, help="training steps per trial (even)")
    parser.add_argument("--data-dir", default=None, help="shapes data (default: a temporary folder)")
    args = parser.parse_args()
    measured: dict[str, list[dict]] = {name: [] for name in WAYS}
    with tempfile.TemporaryDirectory(prefix="bench_pool_sweep_") as tmp:
        data_dir = args.data_dir or str(Path(tmp) / "data")
        for r in range(args.rounds):
            order = list(WAYS) if r % 2 == 0 else list(reversed(WAYS))  # alternate who goes first
            for name in order:
                start = time.perf_counter()
                result = sweep(WAYS[name], args.steps, data_dir, Path(tmp) / f"r{r}-{WAYS[name]}" / "sweep")
                measured[name].append(result)
                print(f"round {r} {name}: {result['wall_s']:.0f} s wall ({time.perf_counter() - start:.0f})")
    solo, pooled = measured["pool_size=1"], measured["pool_size=4"]
    deviation = max(
        abs(p["values"][key] - s["values"][key]) / max(abs(s["values"][key]), 1e-12)
        for s, p in zip(solo, pooled, strict=True)
        for key in s["values"]
    )
    rows = []
    for name, results in measured.items():
        walls = [r["wall_s"] for r in results]
        devices = [r["device_s"] for r in results]
        rows.append(
            f"| {name} | {statistics.median(walls):.0f} | {min(walls):.0f}-{max(walls):.0f} | "
            f"{statistics.median(devices):.0f} | {min(devices):.0f}-{max(devices):.0f} |"
        )
    wall_ratio = statistics.median(r["wall_s"] for r in solo) / statistics.median(r["wall_s"] for r in pooled)
    device_ratio = statistics.median(r["device_s"] for r in solo) / statistics.median(
        r["device_s"] for r in pooled
    )
    table = "\n".join(
        [
            "# An 8-trial sweep: pool_size=4 vs pool_size=1",
            "",
            f"Command: `python benchmarks/bench_pool_sweep.py --rounds {args.rounds} --steps {args.steps}`. "
            f"Grid {GRID} (8 trials), seed 0, n_jobs=4, local jobs; {args.steps} steps a trial, "
            "validated twice on 1 batch; size of bench_pools.py (random DINO ViT-S/8 at 128 px, "
            "batch 2 x 4 frames). Device-seconds: CPU-seconds of the jobs (results.json), summed.",
            "",
            "| way | wall s, median | spread | device-s, median | spread |",
            "| --- | ---: | --- | ---: | --- |",
            *rows,
            "",
            f"pool_size=4 / pool_size=1: **{wall_ratio:.2f}x** less wall time, **{device_ratio:.2f}x** "
            f"fewer device-seconds (medians of {args.rounds} alternating rounds). Largest relative "
            f"difference of a trial's value between the two ways: {deviation:.1e}.",
        ]
    )
    print(table)
    print(f"written: {write_table('pool_sweep', table)}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "benchmarks"))
    main()

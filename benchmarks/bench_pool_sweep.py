"""An 8-trial sweep with hydra.sweeper.pool_size=4 against the same sweep with pool_size=1.

Both sweeps run the same grid of 8 configurations (4 learning rates x 2 temperatures of the
temporal similarity loss) on seed 0, with 4 trials in flight, local jobs, at a size where the
frozen encoder is most of a step (a random DINO ViT-S/8 at 128 px). With pool_size=1 every
trial is a job of its own; with pool_size=4 the trials are heads of pool jobs (training/pool.py),
one encoder forward per batch for up to 4 of them. Rounds alternate the two ways; the table gives
per way the median wall seconds and device-seconds (CPU-seconds here: what every job's results.json
says, summed over the trials) with their spread, and how far apart the two ways' trial values are
(equal to float tolerance for the heads that started with their pool; a head that joined a
running pool at step S trained on the stream from S, as a solo run with stream_start_step=S does).

    python benchmarks/bench_pool_sweep.py [--rounds 2] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from _common import REPO, write_table

# a random DINO ViT-S/8 at 128 px (256 patches), batch 2 x 4 frames, 7 slots of 64, timesim: its
# encoder is ~64% of a solo step on a 2-core CPU (benchmarks/results/pools.md, earlier table), and
# a trial of 20 steps takes about a minute there
SIZE = [
    "encoder=dino_vits8",
    "encoder.pretrained=false",
    "encoder.img_size=128",
    "dataset.resolution=128",
    "dataset.n_frames=4",
    "dataset.train_clip_frames=4",
    "dataset.n_train_clips=8",
    "dataset.n_val_clips=1",
    "dataset.batch_size=2",
    "dataset.num_workers=0",
    "grouper.n_slots=7",
    "grouper.slot_dim=64",
    "loss=timesim",
]
GRID = ["optim.base_lr=choice(0.0001, 0.0002, 0.0004, 0.0008)", "loss.timesim.temperature=choice(0.05, 0.1)"]
WAYS = {"pool_size=1": 1, "pool_size=4": 4}


def sweep(pool_size: int, steps: int, data_dir: str, sweep_dir: Path) -> dict:
    """One sweep of the grid; {wall_s, device_s, values: {params: value}}."""
    command = [
        sys.executable,
        str(REPO / "src" / "train.py"),
        "-m",
        "hydra/sweeper=optuna",
        "hydra/sweeper/sampler=grid",
        "hydra/launcher=local",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweeper.n_trials=8",
        "hydra.sweeper.n_jobs=4",
        "hydra.sweeper.seeds=[0]",
        "hydra.sweeper.poll_s=1",
        f"hydra.sweeper.pool_size={pool_size}",
        "hydra.sweeper.forecast_gpu=null",
        f"paths.runs_dir={sweep_dir / 'runs'}",
        f"paths.data_dir={data_dir}",
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
    # the sweeper sizes each job's threads to its share of the cores: no thread count from outside
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    start = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    wall_s = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"pool_size={pool_size} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    study = optuna.load_study(study_name=sweep_dir.name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    trials = [t for t in study.trials if t.state.name == "COMPLETE"]
    if len(trials) != 8:
        raise SystemExit(f"pool_size={pool_size}: {len(trials)} of 8 trials completed")
    log = run.stdout + run.stderr
    return {
        "wall_s": wall_s,
        "device_s": sum(t.user_attrs["device_seconds"] for t in trials),
        "values": {tuple(sorted(t.params.items())): t.value for t in trials},
        "start_steps": {tuple(sorted(t.params.items())): _start_step(t) for t in trials},
        "summary": log[log.index("Sweep summary:\n") :].split("\n\n")[0].split("\n", 1)[1],
    }


def _start_step(trial: optuna.trial.FrozenTrial) -> int:
    """The stream step the trial's run entered at (a pooled head that joined a running pool: > 0)."""
    results = json.loads((Path(trial.user_attrs["jobs"][0]["run_dir"]) / "results.json").read_text())
    return results.get("pool", {}).get("start_step", 0)


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
    # A head that joined a running pool at step S > 0 trained on the stream's batches from S: another
    # run than the unpooled trial (equal to a solo run with stream_start_step=S, which the tests
    # check). The trials that started a pool at step 0 must equal the unpooled ones.
    from_start, joined = [], []
    for s, p in zip(solo, pooled, strict=True):
        for key, value in s["values"].items():
            difference = abs(p["values"][key] - value) / max(abs(value), 1e-12)
            (joined if p["start_steps"][key] else from_start).append(difference)
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
            "validated twice on 1 batch; random DINO ViT-S/8 at 128 px, batch 2 x 4 frames "
            "(encoder ~64% of a solo step). Device-seconds: CPU-seconds of the jobs (results.json), summed.",
            "",
            "| way | wall s, median | spread | device-s, median | spread |",
            "| --- | ---: | --- | ---: | --- |",
            *rows,
            "",
            f"pool_size=4 / pool_size=1: **{wall_ratio:.2f}x** less wall time, **{device_ratio:.2f}x** "
            f"fewer device-seconds (medians of {args.rounds} alternating rounds). Largest relative "
            f"difference of a trial's value between the two ways, over the {len(from_start)} pooled "
            f"trials that started with their pool (stream step 0): {max(from_start, default=0):.1e}; "
            f"the {len(joined)} that joined a running pool later trained on the seed's batches from "
            f"that step (stream_start_step, in their ids), so their values differ by up to "
            f"{max(joined, default=0):.1e} (relative) from the unpooled trials, which start at step 0.",
            "",
            "The pool_size=4 sweep's summary (last round), as the sweeper printed it:",
            "",
            pooled[-1]["summary"],
        ]
    )
    print(table)
    print(f"written: {write_table('pool_sweep', table)}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "benchmarks"))
    main()

"""The same Optuna study three ways: batch (Hydra's behaviour), asynchronous, asynchronous + pruning.

Run: `.venv/bin/python benchmarks/bench_sweeps.py [--trials 12 --seeds 2 --steps 300]`. Each way is
`python src/train.py -m +sweep=loss_weights` with the same sampler seed, `hydra/launcher=local`
(one subprocess per job, n_jobs=2 trials in flight, one thread each), in its own runs dir so that
no way reads another's finished runs. The preset is the demo's (conf/experiment/demo.yaml) cut to
`--steps` steps with 6 validations, on both losses; `grouper.n_slots` is in the search space so
trials differ in length (the decoder's cost grows with the slot count). Prints one Markdown table
(best value as mean ± std over its seeds, total training steps, device-seconds, wall time) and
writes it to benchmarks/results/sweeps.md. CPU-heavy: the defaults take hours on 2 cores; smaller
scales are stated in the table.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, write_table
from omegaconf import OmegaConf


def ways(startup_trials: int) -> dict[str, tuple[str, list[str]]]:
    """{sweep dir name: (row name, sweep overrides)}; the pruner prunes after `startup_trials`."""
    # loss_weights_pruned is loss_weights with the median pruner (sweeps/loss_weights_pruned.yaml)
    median = ["+sweep=loss_weights_pruned", f"hydra.sweeper.pruner.n_startup_trials={startup_trials}"]
    return {
        "batch": ("batch (n_jobs=2, as Hydra)", ["+sweep=loss_weights", "hydra.sweeper.batch=true"]),
        "async": ("asynchronous", ["+sweep=loss_weights"]),
        "pruned": ("asynchronous + median pruner", median),
    }


def preset(steps: int) -> list[str]:
    """The demo, short: `steps` training steps, 6 validations on a few batches, both losses."""
    return [
        "experiment=demo",
        "loss=videosaur",  # loss_weights sweeps both losses' weights (the demo trains featrec only)
        "visualize=null",
        "logger=none",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={max(1, steps // 6)}",
        "trainer.limit_val_batches=2",
        "trainer.enable_progress_bar=false",
        f"checkpoint_every_n_steps={steps}",
        "grouper.n_slots=range(3, 12)",  # trial lengths differ
    ]


def warm_data(args: argparse.Namespace, root: Path) -> None:
    """Generate the preset's shapes clips once, before any timed sweep (jobs would race to)."""
    fixed = [o for o in preset(args.steps) if not o.startswith("grouper.n_slots=")]
    command = [
        sys.executable,
        str(REPO / "src" / "train.py"),
        *fixed,
        "trainer.max_steps=1",
        f"paths.runs_dir={root / 'warm'}",
        f"paths.data_dir={args.data_dir}",
    ]
    subprocess.run(command, check=True, capture_output=True, cwd=REPO)


def run_way(name: str, overrides: list[str], args: argparse.Namespace, sweep_dir: Path) -> dict:
    """One sweep; its summary, printed summary table, command and wall time."""
    command = [
        sys.executable,
        str(REPO / "src" / "train.py"),
        "-m",
        *overrides,
        "hydra/launcher=local",
        f"hydra.sweep.dir={sweep_dir}",
        f"paths.runs_dir={sweep_dir / 'runs'}",
        f"paths.data_dir={args.data_dir}",
        f"hydra.sweeper.n_trials={args.trials}",
        "hydra.sweeper.n_jobs=2",
        f"hydra.sweeper.seeds={list(range(args.seeds))}",
        "hydra.sweeper.sampler.seed=0",
        "hydra.sweeper.sampler.n_startup_trials=4",
        "hydra.sweeper.poll_s=1",
        *preset(args.steps),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # 4 jobs share the cores
    start = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    wall_s = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"{name} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    summary = OmegaConf.to_container(OmegaConf.load(sweep_dir / "optimization_results.yaml"))
    log = run.stdout + run.stderr
    printed = log[log.index("Sweep summary:\n") :].split("\n\n")[0].split("\n", 1)[1]
    return {"summary": summary, "wall_s": wall_s, "table": printed, "command": command}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--startup-trials", type=int, default=3, help="trials the pruner never prunes")
    parser.add_argument("--data-dir", default=str(REPO / "data"), help="where the shapes clips are")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="slotsweep-bench-sweeps-") as root:
        warm_data(args, Path(root))
        for slug, (name, overrides) in ways(args.startup_trials).items():
            result = run_way(name, overrides, args, Path(root) / slug)
            summary = result["summary"]
            std = summary.get("best_value_std")
            best = f"{summary['best_value']:.4f}" + (f" ± {std:.4f}" if std is not None else "")
            device_s = summary["total"]["device_hours"] * 3600
            rows.append(
                f"| {name} | {best} | {summary['n_complete']} / {summary['n_pruned']} | "
                f"{summary['total']['steps']} | {device_s:.0f} | {result['wall_s']:.0f} |"
            )
            print(rows[-1], flush=True)
    table = "\n".join(
        [
            "# Sweeps: batch vs asynchronous vs asynchronous + pruning",
            "",
            f"`+sweep=loss_weights` plus `grouper.n_slots=range(3, 12)`, {args.trials} trials x "
            f"{args.seeds} seeds, TPE (seed 0, 4 random startup trials), median pruner after "
            f"{args.startup_trials} full trials, n_jobs=2 local subprocesses of "
            f"one thread each; the demo preset cut to {args.steps} steps, validated every "
            f"{max(1, args.steps // 6)} steps on 2 batches. Objective: val/video_fg_ari (maximised); best "
            "value: mean ± std over the best trial's seeds. Device-seconds: CPU-seconds of the jobs "
            "(results.json). Wall: the whole sweep.",
            "",
            "| way | best value | completed / pruned | training steps | device-s | wall (s) |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            "The pruned sweep's own summary (the last way run), as it printed it:",
            "",
            "```bash",
            shlex.join(result["command"][1:]).replace(str(REPO) + "/", ""),
            "```",
            "",
            result["table"],
        ]
    )
    print(table)
    print(f"\nwritten to {write_table('sweeps', table)}")


if __name__ == "__main__":
    main()

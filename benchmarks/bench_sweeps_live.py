"""One asha policy run for real, next to what the sweep replay predicted for the same 12 trials.

Run: `.venv/bin/python benchmarks/bench_sweeps_live.py --space lr --min-steps 150 --eta 3`
(CPU-heavy: ~10 minutes of the 2 cores). The recorded pool's first part is the unpruned sweep of
12 configurations that the random sampler (seed 0) drew; this runs the same sweep (same preset,
space, sampler seed, hence the same 12 configurations in the same order) with
`hydra/sweeper/pruner=asha` and local jobs, one trial at a time as the replay assumes. Then:

- live: the sweep's device-hours (summary total: every job from its process start to its end)
  over the unpruned sweep's (the pool's recorded cost of these 12 x every seed), and its winner;
- replay: bench_sweeps_replay's asha policy on the recorded curves of exactly these 12
  configurations, seeds in the sweep's order: its fraction and winner.

Both winners are judged like the replay judges them: the regret of the winner's mean over every
recorded seed against the best of the 12, in pooled seed-stds. Writes
benchmarks/results/sweeps_live.md (`--name`: another file).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
from pathlib import Path

from _common import REPO, write_table
from bench_sweeps import run_local_sweep, warm_data
from bench_sweeps_replay import Draw, asha_policy, full, load_pool
from omegaconf import OmegaConf
from record_sweep_curves import SPACES, pool_overrides


def matching_pool_config(params: dict, pool_configs: list[dict]) -> int:
    """Index of the recorded configuration with these swept values (the same sampler draws them)."""
    for index, entry in enumerate(pool_configs):
        recorded = entry["params"]
        if all(math.isclose(float(recorded[k]), float(v), rel_tol=1e-9) for k, v in params.items()):
            return index
    raise SystemExit(
        f"error: the live trial {params} is not in the recorded pool: was it recorded with --space?"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", choices=sorted(SPACES), default="lr")
    parser.add_argument("--min-steps", type=int, default=150, help="asha's first rung")
    parser.add_argument("--eta", type=int, default=3, help="asha's reduction factor")
    parser.add_argument("--every-seed", action="store_true", help="every rung runs every seed")
    parser.add_argument("--name", default="sweeps_live", help="the table: benchmarks/results/<name>.md")
    parser.add_argument("--data-dir", default=str(REPO / "data"))
    args = parser.parse_args()
    curves = SPACES[args.space][1]
    pool = json.loads(curves.read_text())
    first_part = pool["parts"][0]
    trials, n_seeds = first_part["configs"], pool["seeds"]
    overrides = [
        "+sweep=loss_weights",
        *pool_overrides(args.space, pool["steps"], pool["validation_every"]),
        "hydra/sweeper/pruner=asha",
        f"hydra.sweeper.pruner.min_steps={args.min_steps}",
        f"hydra.sweeper.pruner.reduction_factor={args.eta}",
        f"hydra.sweeper.pruner.seeds_as_fidelity={not args.every_seed}",
    ]
    with tempfile.TemporaryDirectory(prefix="slotsweep-bench-sweeps-live-") as root:
        warm_data(argparse.Namespace(steps=pool["steps"], lengths=False, data_dir=args.data_dir), Path(root))
        sweep_dir = Path(root) / "sweep"
        run, command, wall_s = run_local_sweep(
            overrides, sweep_dir, args.data_dir, trials, 1, n_seeds, first_part["sampler_seed"]
        )
        if run.returncode != 0:
            raise SystemExit(f"the live sweep failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
        summary = OmegaConf.to_container(OmegaConf.load(sweep_dir / "optimization_results.yaml"))
        log = run.stdout + run.stderr
        # the table, then its budget and unpruned-forecast lines (summary.format_table), up to the
        # next log record
        table, after = log[log.index("Sweep summary:\n") :].split("\n", 1)[1].split("\n\n", 1)
        notes = [line for line in after.split("\n[", 1)[0].splitlines() if line.strip()]
        printed = "\n\n".join([table, "\n".join(notes)])

    configs, seeds, steps, maximize = load_pool(curves)
    sign = 1 if maximize else -1
    last = steps[-1]
    first_configs = pool["configs"][:trials]  # the first part's, in the pool's order
    order = [matching_pool_config(row["params"], first_configs) for row in summary["trials"]]
    finals = [configs[i].mean(seeds, last) for i in order]  # by trial number
    seed_std = math.sqrt(
        statistics.fmean(statistics.variance([configs[i].values[s][last] for s in seeds]) for i in order)
    )
    best = max(sign * v for v in finals)
    draw = Draw([configs[i] for i in order], list(range(n_seeds)), steps)
    _, full_s = full(draw, maximize, random.Random(0))
    replay_winner, replay_s = asha_policy(args.min_steps, args.eta, not args.every_seed)(
        draw, maximize, random.Random(0)
    )
    live_winner, live_s = summary["best_trial"], summary["total"]["device_hours"] * 3600

    def row(name: str, winner: int | None, seconds: float) -> str:
        if winner is None:
            return f"| {name} | {seconds:.0f} | {seconds / full_s:.0%} | - | - | - |"
        regret = (best - sign * finals[winner]) / seed_std
        return (
            f"| {name} | {seconds:.0f} | {seconds / full_s:.0%} | {winner} | {finals[winner]:.4f} "
            f"| {regret:.2f} |"
        )

    policy = f"asha r={args.min_steps} eta={args.eta}, " + (
        "every seed" if args.every_seed else "seeds as fidelity"
    )
    lines = [
        f"# One sweep policy live vs its replay: {policy}",
        "",
        f"The {trials} configurations of {curves.name}'s first part (random sampler seed "
        f"{first_part['sampler_seed']}), {n_seeds} seeds, {last} steps, one trial at a time, local "
        f"jobs; the live sweep took {wall_s:.0f} s of wall time. Unpruned, these {trials} x {n_seeds} "
        f"jobs cost {full_s:.0f} device-s as recorded. Winner's value: its mean over all "
        f"{len(seeds)} recorded seeds at step {last}; the best of the {trials}: {sign * best:.4f}; "
        f"regret in pooled seed-stds ({seed_std:.4f}).",
        "",
        "```bash",
        " ".join(["python benchmarks/bench_sweeps_live.py", *sys.argv[1:]]),
        "```",
        "",
        "| run | device-s | fraction of the unpruned sweep | winner (trial) | winner's value | regret |",
        "|---|---:|---:|---:|---:|---:|",
        row("live", live_winner, live_s),
        row("replay (recorded curves)", replay_winner, replay_s),
        "",
        "The live sweep's summary:",
        "",
        printed,
        "",
    ]
    table = "\n".join(lines)
    print(table)
    print(f"\nwritten to {write_table(args.name, table)}")


if __name__ == "__main__":
    main()

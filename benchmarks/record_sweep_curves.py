"""Record a pool of learning curves for the sweep replay (bench_sweeps_replay.py reads it).

Run: `.venv/bin/python benchmarks/record_sweep_curves.py [--configs 12 --seeds 4 --steps 300]`, then
the same with `--sampler-seed 1 --append` for 12 more configurations (the committed pool: 24).
One unpruned sweep, `+sweep=loss_weights` on bench_sweeps.py's preset (the demo on both losses,
2-frame clips, batch 8, `grouper.n_slots=range(3, 12)` in the space), random sampler seed
`--sampler-seed`, every configuration on every seed, validated every `--every` steps. Writes
benchmarks/results/sweeps_curves.json (`--append`: adds to it): per configuration its params, per
seed the objective at each validation (read from the run dirs), and its cost: device-seconds per
step and per job start (a line through the device-seconds each job reported at its validations, so
the start-up that every extra job pays is known).

Why 300 steps, every 25: on this preset the objective is ~0 until step ~125 and rises through step
1000; at 200 steps most seeds have not moved yet, at 300 the 4-seed means spread over 0.06-0.30
FG-ARI, and 24 x 4 jobs of 300 steps cost ~0.09 CPU-s a step and ~5 s a job start: ~35 minutes
of the 2 cores in all (1000 steps would be ~2 hours). The pool ranks the configurations by how
fast they learn, not by where they end after 1000 steps; when a seed takes off varies more than
the configurations do (the replay's table gives both spreads).
CPU-heavy: each part (12 configurations x 4 seeds) took 14-20 minutes of the 2 cores (shared).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from _common import REPO, RESULTS_DIR, machine_description
from bench_sweeps import preset, run_local_sweep, warm_data

CURVES = RESULTS_DIR / "sweeps_curves.json"


def _fit_cost(curve: list[list]) -> tuple[float, float]:
    """(seconds per step, seconds at step 0) of a job: a line through the cost it reported."""
    points = [(step, cost) for step, _, cost in curve if cost is not None]
    if len(points) < 2:
        raise SystemExit("a job reported its cost at fewer than 2 validations: more steps or --every lower")
    slope = statistics.linear_regression([p[0] for p in points], [p[1] for p in points])
    return slope.slope, slope.intercept


SWEPT = (
    "loss.timesim.weight",
    "loss.featrec.weight",
    "loss.timesim.temperature",
    "grouper.n_slots",
    "optim.base_lr",
)
# --space: what the sweep searches besides loss_weights' space and the preset's slot counts, and the
# pool file it writes. `lr` adds the learning rate (3x either side of the preset's 4e-3): trials
# that differ more, since a rate too low or too high keeps a seed from taking off by step 300.
SPACES = {
    "loss_weights": ([], CURVES),
    "lr": (["optim.base_lr=tag(log, interval(1.5e-3, 1.2e-2))"], RESULTS_DIR / "sweeps_curves_lr.json"),
}


def pool_overrides(space: str, steps: int, every: int) -> list[str]:
    """The sweep's overrides (besides +sweep=loss_weights) of a pool of this --space."""
    searched = SPACES[space][0]
    overrides = [
        o if not o.startswith("trainer.val_check_interval=") else f"trainer.val_check_interval={every}"
        for o in preset(steps, lengths=False)
        if not (searched and o.startswith("optim.base_lr="))  # the space's range replaces the rate
    ]
    return overrides + searched


def _config(experiment_dir: Path) -> dict:
    """One configuration's entry: its swept values, per seed [[step, value], ...], and its cost."""
    seeds, per_step, at_start, params = {}, [], [], {}
    for run_dir in sorted(experiment_dir.glob("seed*")):
        results = json.loads((run_dir / "results.json").read_text())
        if results["status"] != "completed":
            raise SystemExit(f"{run_dir}: {results['status']}, not completed")
        node = results["config"]
        params = {key: _select(node, key) for key in SWEPT}
        lines = [json.loads(line) for line in (run_dir / "validation.jsonl").read_text().splitlines()]
        seeds[str(results["seed"])] = [[r["step"], r["values"][0]] for r in lines]
        slope, intercept = _fit_cost([[r["step"], r["values"][0], r.get("device_seconds")] for r in lines])
        per_step.append(slope)
        at_start.append(intercept)
    return {
        "params": params,
        "seconds_per_step": statistics.fmean(per_step),
        "seconds_per_job_start": max(0.0, statistics.fmean(at_start)),
        "seeds": seeds,
    }


def _select(node: dict, key: str) -> object:
    for part in key.split("."):
        node = node[part]
    return node


def _appended(pool: dict, part: dict) -> dict:
    """`pool` with `part`'s configurations added; the two must have been recorded alike."""
    for key in ("preset", "sweep", "objective", "steps", "seeds", "validation_every"):
        if pool.get(key) != part[key]:
            raise SystemExit(f"error: --append: the pool's {key} is {pool.get(key)!r}, not {part[key]!r}")
    if any(p["sampler_seed"] == part["parts"][0]["sampler_seed"] for p in pool["parts"]):
        raise SystemExit("error: --append: a part with this --sampler-seed is in the pool already")
    newer = {key: value for key, value in part.items() if key not in pool}  # keys the pool predates
    return {
        **pool,
        **newer,
        "parts": pool["parts"] + part["parts"],
        "configs": pool["configs"] + part["configs"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=25, help="validation interval (steps)")
    parser.add_argument("--sampler-seed", type=int, default=0, help="the random sampler's seed")
    parser.add_argument(
        "--append",
        action="store_true",
        help="add the configurations to the recorded pool (same preset, steps and seeds) instead of "
        "replacing it: a pool recorded in parts, each under ~15 minutes of the cores",
    )
    parser.add_argument("--space", choices=sorted(SPACES), default="loss_weights")
    parser.add_argument("--data-dir", default=str(REPO / "data"))
    args = parser.parse_args()
    overrides, curves = pool_overrides(args.space, args.steps, args.every), SPACES[args.space][1]
    with tempfile.TemporaryDirectory(prefix="slotsweep-record-curves-") as root:
        sweep_dir = Path(root) / "sweep"
        warm_data(argparse.Namespace(steps=args.steps, lengths=False, data_dir=args.data_dir), Path(root))
        everything = ["+sweep=loss_weights", *overrides]
        run, _, wall_s = run_local_sweep(
            everything, sweep_dir, args.data_dir, args.configs, 1, args.seeds, args.sampler_seed
        )
        if run.returncode != 0:  # the runs may all be there still: _config checks each one
            print(f"the sweep exited with {run.returncode}:\n{run.stderr[-3000:]}", file=sys.stderr)
        configs = [_config(d) for d in sorted((sweep_dir / "runs").iterdir()) if (d / "seed0").is_dir()]
    part = {"sampler_seed": args.sampler_seed, "configs": len(configs), "wall_s": round(wall_s)}
    pool = {
        "preset": " ".join(overrides),
        "sweep": "+sweep=loss_weights, random sampler"
        + (f", --space {args.space}" if args.space != "loss_weights" else ""),
        "space": args.space,
        "objective": "val/video_fg_ari",
        "direction": "maximize",
        "steps": args.steps,
        "seeds": args.seeds,
        "validation_every": args.every,
        "machine": machine_description(),
        "parts": [part],
        "configs": configs,
    }
    if args.append:
        pool = _appended(json.loads(curves.read_text()), pool)
    curves.write_text(json.dumps(pool, separators=(",", ":")) + "\n")
    print(f"{len(configs)} configurations x {args.seeds} seeds in {wall_s:.0f} s: {curves}")


if __name__ == "__main__":
    main()

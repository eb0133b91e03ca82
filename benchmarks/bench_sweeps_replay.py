"""Sweep policies replayed on recorded learning curves: their device-hours and the winners they pick.

Run: `.venv/bin/python benchmarks/bench_sweeps_replay.py [--draws 500] [--json]`. Reads each pool
that record_sweep_curves.py wrote (benchmarks/results/sweeps_curves*.json, or `--curves <file>`:
configurations x seeds, the objective at every validation, each configuration's cost per step and
per job start). Each
draw takes 12 configurations and an order of the seeds at random; every policy then runs a sweep
of those 12 on the recorded values, one trial at a time:

- `none`: every configuration, every seed, to the end (the full sweep: its best is the target);
- `random 3`: 3 of the 12 at random, trained fully;
- Optuna's `median`, `successive halving`, `hyperband` and `wilcoxon` pruners, each in a real
  in-memory study: a trial reports its seed mean at each validation and stops at the next one once
  its pruner says so (the sweeper's stop lag), every seed from step 0;
- `asha`: slotsweep.sweeps.promotion's decisions (the sweeper's own), at several rung settings
  (`rung_settings`), with and without seeds as a fidelity, and once without the seed-noise
  allowance. A promoted
  trial's seeds resume where they paused; each segment pays one job start per seed.

Per policy: its device-hours as a fraction of the full sweep's, the probability that its winner
(best completed trial) is within one pooled seed-std of the full sweep's best (both judged on the
mean over all recorded seeds at the last step), and the mean regret in seed-stds. Writes a table
per pool, sweeps_curves<name>.json -> benchmarks/results/sweeps_replay<name>.md (not with --json,
which prints one object per pool and policy).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna

from slotsweep.sweeps.promotion import RungResult, Rungs, next_promotion

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_table  # noqa: E402

CURVES = Path(__file__).resolve().parent / "results" / "sweeps_curves.json"
DRAWN = 12  # configurations per draw


@dataclass
class Config:
    """One recorded configuration: {seed: {step: value}} and its cost."""

    values: dict[int, dict[int, float]]
    per_step: float
    per_start: float

    def mean(self, seeds: list[int], step: int) -> float:
        return statistics.fmean(self.values[s][step] for s in seeds)

    def cost(self, seeds: int, from_step: int, to_step: int) -> float:
        """Device-seconds of `seeds` jobs that train from_step -> to_step (each pays its start)."""
        return seeds * (self.per_start + (to_step - from_step) * self.per_step)


@dataclass
class Draw:
    configs: list[Config]
    seeds: list[int]  # the order in which a policy uses them
    steps: list[int]  # validation steps, ascending


def load_pool(path: Path) -> tuple[list[Config], list[int], list[int], bool]:
    """(configs, seeds, validation steps, maximize) of a recorded pool."""
    pool = json.loads(path.read_text())
    configs = []
    for entry in pool["configs"]:
        values = {int(s): {int(step): value for step, value in curve} for s, curve in entry["seeds"].items()}
        configs.append(Config(values, entry["seconds_per_step"], entry["seconds_per_job_start"]))
    seeds = sorted(set.intersection(*(set(c.values) for c in configs)))
    steps = sorted(set.intersection(*(set(c.values[s]) for c in configs for s in seeds)))
    return configs, seeds, steps, pool["direction"] == "maximize"


Policy = Callable[[Draw, bool, random.Random], tuple[int | None, float]]  # (winner index, device-s)


def full(
    draw: Draw, maximize: bool, rng: random.Random, subset: int | None = None
) -> tuple[int | None, float]:
    """Every (or `subset` random) configuration(s), every seed, to the end."""
    last = draw.steps[-1]
    chosen = rng.sample(range(len(draw.configs)), subset) if subset else range(len(draw.configs))
    sign = 1 if maximize else -1
    winner = max(chosen, key=lambda i: sign * draw.configs[i].mean(draw.seeds, last))
    return winner, sum(draw.configs[i].cost(len(draw.seeds), 0, last) for i in chosen)


def optuna_policy(make_pruner: Callable[[], optuna.pruners.BasePruner]) -> Policy:
    """A sequential Optuna study with this pruner over the draw's configurations, every seed."""

    def run(draw: Draw, maximize: bool, rng: random.Random) -> tuple[int | None, float]:
        # a fixed name: hyperband assigns brackets by a hash of the study name and trial number, so
        # an auto-generated (random) name would make the table differ from run to run
        direction = "maximize" if maximize else "minimize"
        study = optuna.create_study(study_name="replay", direction=direction, pruner=make_pruner())
        cost, finals = 0.0, {}
        for index, config in enumerate(draw.configs):
            trial = study.ask()
            stopped_at = None
            for k, step in enumerate(draw.steps):
                trial.report(config.mean(draw.seeds, step), step)
                if step < draw.steps[-1] and trial.should_prune():
                    stopped_at = draw.steps[k + 1]  # it stops at its next validation
                    break
            end = draw.steps[-1] if stopped_at is None else stopped_at
            cost += config.cost(len(draw.seeds), 0, end)
            if stopped_at is None:
                finals[index] = config.mean(draw.seeds, end)
                study.tell(trial, finals[index])
            else:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        sign = 1 if maximize else -1
        return max(finals, key=lambda i: sign * finals[i]) if finals else None, cost

    return run


def asha_policy(min_steps: int, eta: int, seeds_as_fidelity: bool, noise_allowance: bool = True) -> Policy:
    """slotsweep's pause-and-promote scheduler, one segment at a time; without `noise_allowance`
    the plain top 1/eta of each rung goes on."""

    def run(draw: Draw, maximize: bool, rng: random.Random) -> tuple[int | None, float]:
        last = draw.steps[-1]
        rungs = Rungs(min_steps, eta, last, len(draw.seeds), seeds_as_fidelity)
        steps = rungs.steps
        results: dict[int, dict[int, RungResult]] = {}  # {trial: {rung: result}}
        at: dict[int, int] = {}  # trial -> rung it is paused at
        cost, started, finals = 0.0, 0, {}

        def segment(trial: int, rung: int) -> None:
            nonlocal cost
            config = draw.configs[trial]
            seeds = draw.seeds[: rungs.seeds_at(rung)]
            previous = draw.seeds[: rungs.seeds_at(rung - 1)] if rung > 0 else []
            start = steps[rung - 1] if rung > 0 else 0
            cost += config.cost(len(previous), start, steps[rung])  # resumed from their pause
            cost += config.cost(len(seeds) - len(previous), 0, steps[rung])  # gained seeds
            values = tuple(config.values[s][steps[rung]] for s in seeds)
            if rung == len(steps) - 1:
                finals[trial] = statistics.fmean(values)
                at.pop(trial, None)
            else:
                at[trial] = rung
            results.setdefault(trial, {})[rung] = RungResult(trial, rung, values, rung < len(steps) - 1)

        while True:
            by_rung: dict[int, list[RungResult]] = {}
            for trial, rungs_reached in results.items():
                for rung, result in rungs_reached.items():
                    if rung < len(steps) - 1:
                        paused = at.get(trial) == rung
                        by_rung.setdefault(rung, []).append(RungResult(trial, rung, result.values, paused))
            finishing = started == len(draw.configs)
            promoted = next_promotion(by_rung, eta, maximize, noise_allowance, finishing)
            if promoted is not None:
                segment(promoted.trial, promoted.rung + 1)
            elif started < len(draw.configs):
                segment(started, 0)
                started += 1
            else:
                break
        sign = 1 if maximize else -1
        return max(finals, key=lambda i: sign * finals[i]) if finals else None, cost

    return run


def at_validation(steps: list[int], step: float) -> int:
    """The first validation step at or after `step` (rungs can only be where values were recorded)."""
    return next((s for s in steps if s >= step), steps[-1])


def rung_settings(steps: list[int]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(first rung, eta) of the replayed asha policies: (settings replayed with and without seeds as
    a fidelity, settings replayed with it only).

    The first: rungs 1/9, 1/3 and 1/4 of the way in, eta 3, 3 and 2 (textbook asha: several rungs,
    the first early). The second, late and steep: one rung 2/3 of the way in keeping 1/4, and one
    rung at 1/2, 7/12 or 2/3 keeping 1 of the draw's 12 (eta = 12: one seed per trial to the rung,
    the best one confirmed on every seed), the shape a budget of a quarter of the sweep allows when
    the objective only moves half-way in.
    """
    last = steps[-1]
    textbook = [
        (at_validation(steps, last / 9), 3),
        (at_validation(steps, last / 3), 3),
        (at_validation(steps, last / 4), 2),
    ]
    steep = [(at_validation(steps, last * 2 / 3), 4)]
    steep += [(at_validation(steps, last * share), DRAWN) for share in (1 / 2, 7 / 12, 2 / 3)]
    recorded = set(steps)
    for r, eta in textbook + steep:  # a rung between two validations would have no recorded value
        missing = [step for step in Rungs(r, eta, last).steps if step not in recorded]
        if missing:
            raise SystemExit(
                f"error: rungs {missing} (r={r}, eta={eta}) are not validation steps of the pool"
            )
    return textbook, steep


def policies(steps: list[int]) -> dict[str, Policy]:
    """The replayed policies by name. Rungs, warm-ups and minimum resources at validation steps."""
    last = steps[-1]
    r_first, r_quarter = steps[0], at_validation(steps, last / 4)
    asha = {}
    textbook, steep = rung_settings(steps)
    for r, eta in textbook:
        for fidelity in (True, False):
            name = f"asha r={r} eta={eta}, " + ("seeds as fidelity" if fidelity else "every seed")
            asha[name] = asha_policy(r, eta, fidelity)
    for r, eta in steep:
        asha[f"asha r={r} eta={eta}, seeds as fidelity"] = asha_policy(r, eta, True)
    r, eta = textbook[0]
    for fidelity in (True, False):
        name = f"asha r={r} eta={eta}, " + ("seeds as fidelity" if fidelity else "every seed")
        asha[f"{name}, no noise allowance"] = asha_policy(r, eta, fidelity, noise_allowance=False)
    return {
        "none (full sweep)": full,
        "random 3 trained fully": lambda d, m, rng: full(d, m, rng, subset=3),
        f"Optuna median (5 startup trials, warm-up {r_quarter})": optuna_policy(
            lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=r_quarter)
        ),
        f"Optuna successive halving (r={r_quarter}, eta=3)": optuna_policy(
            lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=r_quarter, reduction_factor=3)
        ),
        f"Optuna hyperband (r={r_first}, max {last}, eta=3)": optuna_policy(
            lambda: optuna.pruners.HyperbandPruner(r_first, max_resource=last, reduction_factor=3)
        ),
        "Optuna wilcoxon (p=0.1)": optuna_policy(lambda: optuna.pruners.WilcoxonPruner(p_threshold=0.1)),
        **asha,
    }


def replay(path: Path, n_draws: int, seed: int) -> tuple[list[dict], dict]:
    """Per policy {policy, fraction, p_within, p_within_mean_std, regret, no_winner}; and the pool's
    description."""
    configs, seeds, steps, maximize = load_pool(path)
    sign = 1 if maximize else -1
    last = steps[-1]
    finals = [c.mean(seeds, last) for c in configs]
    # pooled std of one seed's final value over the pool: the seed noise a winner is judged by
    variances = [statistics.variance([c.values[s][last] for s in seeds]) for c in configs]
    std = math.sqrt(statistics.fmean(variances))
    named = policies(steps)
    totals = {name: {"fraction": [], "within": [], "close": [], "regret": [], "none": 0} for name in named}
    rng = random.Random(seed)
    for _ in range(n_draws):
        chosen = rng.sample(range(len(configs)), DRAWN)
        order = rng.sample(seeds, len(seeds))
        draw = Draw([configs[i] for i in chosen], order, steps)
        best = max(sign * finals[i] for i in chosen)
        _, full_cost = full(draw, maximize, rng)
        for name, policy in named.items():
            winner, cost = policy(draw, maximize, random.Random(rng.random()))
            totals[name]["fraction"].append(cost / full_cost)
            if winner is None:
                totals[name]["none"] += 1
                continue
            regret = (best - sign * finals[chosen[winner]]) / std
            totals[name]["within"].append(regret <= 1.0)
            # one std of a mean over every recorded seed: the noise in the full sweep's own ranking
            totals[name]["close"].append(regret <= 1.0 / math.sqrt(len(seeds)))
            totals[name]["regret"].append(regret)
    rows = [
        {
            "policy": name,
            "fraction": statistics.fmean(t["fraction"]),
            "p_within": sum(t["within"]) / n_draws,  # a draw without a winner counts as a miss
            "p_within_mean_std": sum(t["close"]) / n_draws,
            "regret": statistics.fmean(t["regret"]) if t["regret"] else math.nan,
            "no_winner": t["none"],
        }
        for name, t in totals.items()
    ]
    about = {
        "configs": len(configs),
        "seeds": len(seeds),
        "steps": steps,
        "seed_std": std,
        "config_std": statistics.stdev(finals),  # how far apart the configurations' seed means are
        "per_step_s": statistics.fmean(c.per_step for c in configs),
        "per_start_s": statistics.fmean(c.per_start for c in configs),
        "draws": n_draws,
    }
    return rows, about


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--curves",
        type=Path,
        action="append",
        help="a recorded pool (repeatable; default: every committed results/sweeps_curves*.json)",
    )
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object per pool and policy")
    args = parser.parse_args()
    pools = args.curves or sorted(CURVES.parent.glob(f"{CURVES.stem}*.json"))
    missing = [path for path in pools if not path.is_file()]
    if missing or not pools:
        print(
            f"error: no recorded pool at {missing[0] if missing else CURVES}: record one first with "
            "benchmarks/record_sweep_curves.py, or give --curves <file>",
            file=sys.stderr,
        )
        sys.exit(2)
    optuna.logging.set_verbosity(logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    for path in pools:
        start = time.perf_counter()
        rows, about = replay(path, args.draws, args.seed)
        elapsed = time.perf_counter() - start
        if args.json:
            for row in rows:
                print(json.dumps({"pool": path.name, **row}))
            continue
        table = render(path, rows, about, elapsed, args)
        print(table)
        # sweeps_curves<suffix>.json -> sweeps_replay<suffix>.md
        print(f"\nwritten to {write_table('sweeps_replay' + path.stem.removeprefix(CURVES.stem), table)}\n")


def render(path: Path, rows: list[dict], about: dict, elapsed: float, args: argparse.Namespace) -> str:
    """The markdown table of one pool's replay, with how the pool was recorded."""
    pool = json.loads(path.read_text())
    recorded_s = sum(part["wall_s"] for part in pool["parts"])
    machine = pool["machine"].removeprefix("Machine: ").rstrip(".")
    space = pool.get("space", "loss_weights")  # pools recorded before --space existed
    record = "python benchmarks/record_sweep_curves.py --configs 12 --seeds 4 --steps 300 --every 25" + (
        "" if space == "loss_weights" else f" --space {space}"
    )
    lines = [
        f"# Sweep policies replayed on recorded curves ({path.name})",
        "",
        f"Pool ({path.name}): {about['configs']} configurations x {about['seeds']} seeds "
        f"of `{pool['sweep']}` on `{pool['preset']}`, validated every {pool['validation_every']} "
        f"steps to step {about['steps'][-1]}, recorded in {recorded_s} s ({len(pool['parts'])} "
        f"part(s)) on {machine}. A job cost {about['per_step_s']:.3f} device-s a step and "
        f"{about['per_start_s']:.1f} device-s to start (means over the configurations). Pooled "
        f"seed-std of the final value {about['seed_std']:.4f}; std of the configurations' "
        f"{about['seeds']}-seed means {about['config_std']:.4f}.",
        "",
        f"{about['draws']} draws of {DRAWN} configurations and a seed order (`--seed {args.seed}`), "
        f"replayed in {elapsed:.1f} s. Fraction: device-hours over the full sweep's (every "
        "configuration and seed to the end), each job paying its start-up. P(within): the probability "
        "that the winner's all-seed mean is within one seed-std of the full sweep's best, and within "
        f"one std of a {about['seeds']}-seed mean (seed-std / {math.sqrt(about['seeds']):.0f}). "
        "Regret: mean, in seed-stds.",
        "",
        "```bash",
        "# recorded with (each part under the CPU lock; the second adds to the first):",
        record,
        f"{record} --sampler-seed 1 --append",
        "# this table:",
        f"python benchmarks/bench_sweeps_replay.py --curves benchmarks/results/{path.name} "
        f"--draws {about['draws']} --seed {args.seed}",
        "```",
        "",
        f"| policy | fraction of device-hours | P(within one seed-std) | P(within one std of a "
        f"{about['seeds']}-seed mean) | mean regret (seed-stds) |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {r['policy']} | {r['fraction']:.0%} | {r['p_within']:.0%} | {r['p_within_mean_std']:.0%} "
            f"| {r['regret']:.2f} |"
            for r in rows
        ),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

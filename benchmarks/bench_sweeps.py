"""The same Optuna study three ways: batch (Hydra's behaviour), asynchronous, asynchronous + pruning.

Run: `.venv/bin/python benchmarks/bench_sweeps.py [--trials 12 --seeds 2 --steps 1000]`. Each way is
`python src/train.py -m +sweep=loss_weights` with the same random sampler (seed 0: every way asks
the same 12 configurations in the same order, so the comparison is not sampler luck; the table
says whether they matched), `hydra/launcher=local`, n_jobs=2 trials in flight, in its own runs dir
so that no way reads another's finished runs. The sweeper splits the cores among the 2 x seeds job
slots (sweeps/local_shares.py): on 2 cores a trial's seeds share one core, so a core whose trial
has ended idles at the batch barrier until the other trial ends, as a GPU would.

The preset is the demo's (conf/experiment/demo.yaml) on both losses, 2-frame training clips,
batch 8 at the demo's learning rate, `--steps` steps, validated every 50 steps on 2 batches. It
learns: video FG-ARI is ~0 until step ~150, 0.02-0.29 at 200, 0.34-0.55 at 1000. The pruner is
successive halving with its first rung at step 200 (`--min-resource`), where the signal has
started, and the next at 600 (`--reduction-factor` 3). `grouper.n_slots=range(3, 12)` is in the
search space so trials differ in length (the decoder's and slot attention's cost grow with the
slot count). Prints one Markdown table (best value as mean ± std over its seeds, total training
steps, device-seconds, slot use, wall time) and whether the issue's targets are met, and writes
it to benchmarks/results/sweeps.md. CPU-heavy: the defaults took 67 minutes on 2 idle AMD EPYC cores.

`--lengths` runs the batch and asynchronous ways only, with `dataset.train_clip_frames=choice(2, 4)`
in the space as well: a 4-frame trial takes about twice as long as a 2-frame one, which shows what
the batch barrier costs (results/sweeps_lengths.md; `--trials 8 --steps 300`: 15 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, write_table
from omegaconf import OmegaConf


def ways(args: argparse.Namespace) -> dict[str, tuple[str, list[str]]]:
    """{sweep dir name: (row name, sweep overrides)}, in the order they are run."""
    # Successive halving, not the median pruner (`+sweep=loss_weights_pruned`'s before the replay
    # chose hyperband): this preset's trials differ little (final FG-ARI 0.34-0.55), so the median
    # of the completed trials is close to every trial and the median pruner stopped them late
    # (steps 250-950 of 1000 in a run of this benchmark: ~60% of the unpruned steps). Successive
    # halving keeps a fixed share.
    halving = [
        "+sweep=loss_weights",
        "hydra/sweeper/pruner=successive_halving",
        f"hydra.sweeper.pruner.min_resource={args.min_resource}",
        f"hydra.sweeper.pruner.reduction_factor={args.reduction_factor}",
    ]
    unpruned = {
        "async": ("asynchronous", ["+sweep=loss_weights"]),
        "batch": ("batch (n_jobs=2, as Hydra)", ["+sweep=loss_weights", "hydra.sweeper.batch=true"]),
    }
    return (
        unpruned if args.lengths else {"pruned": ("asynchronous + successive halving", halving), **unpruned}
    )


VALIDATION_INTERVAL = 50  # steps; a pruned trial stops at the validation after the decision
CLIP_FRAMES_SPACE = "choice(2, 4)"  # --lengths: a 4-frame trial takes ~1.8x a 2-frame one


def preset(steps: int, lengths: bool) -> list[str]:
    """The demo, short: `steps` training steps, validations every 50 steps on 2 batches, both losses.

    With `lengths`, the training clips' length is in the search space too (2 or 4 frames).
    """
    return [
        "experiment=demo",
        "loss=videosaur",  # loss_weights sweeps both losses' weights (the demo trains featrec only)
        # 2: half the demo's step cost, and it learns as fast per step; 4: the demo's
        f"dataset.train_clip_frames={CLIP_FRAMES_SPACE if lengths else 2}",
        "dataset.batch_size=8",  # half again; the objective's onset is at the same step
        "optim.base_lr=4.0e-3",  # lr = base_lr x batch / 32: the demo's 1e-3 at batch 8
        "visualize=null",
        "logger=none",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={VALIDATION_INTERVAL}",
        "trainer.limit_val_batches=2",
        "trainer.enable_progress_bar=false",
        f"checkpoint_every_n_steps={steps}",
        "grouper.n_slots=range(3, 12)",  # trial lengths differ, by ~5% between 3 and 11 slots
    ]


def warm_data(args: argparse.Namespace, root: Path) -> None:
    """Generate the preset's shapes clips once, before any timed sweep (jobs would race to)."""
    fixed = [o for o in preset(args.steps, args.lengths) if "(" not in o]  # no search space
    command = [
        sys.executable,
        str(REPO / "src" / "train.py"),
        *fixed,
        "trainer.max_steps=1",
        f"paths.runs_dir={root / 'warm'}",
        f"paths.data_dir={args.data_dir}",
    ]
    subprocess.run(command, check=True, capture_output=True, cwd=REPO)


def run_local_sweep(
    overrides: list[str],
    sweep_dir: Path,
    data_dir: str,
    trials: int,
    n_jobs: int,
    seeds: int,
    sampler_seed: int = 0,
) -> tuple[subprocess.CompletedProcess, list[str], float]:
    """`src/train.py -m` with local jobs, the random sampler (`sampler_seed`) and `overrides` last,
    in its own sweep and runs dir; (the finished process, its command, wall seconds)."""
    command = [
        sys.executable,
        str(REPO / "src" / "train.py"),
        "-m",
        "hydra/launcher=local",
        f"hydra.sweep.dir={sweep_dir}",
        f"paths.runs_dir={sweep_dir / 'runs'}",
        f"paths.data_dir={data_dir}",
        f"hydra.sweeper.n_trials={trials}",
        f"hydra.sweeper.n_jobs={n_jobs}",
        f"hydra.sweeper.seeds={list(range(seeds))}",
        "hydra/sweeper/sampler=random",
        f"hydra.sweeper.sampler.seed={sampler_seed}",
        "hydra.sweeper.poll_s=1",
        *overrides,
    ]
    # The sweeper sizes each job's threads to its share of the cores; a thread count in the
    # environment would override that
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    start = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    return run, command, time.perf_counter() - start


def run_way(name: str, overrides: list[str], args: argparse.Namespace, sweep_dir: Path) -> dict:
    """One sweep; its summary, printed summary table, command and wall time."""
    everything = [*overrides, *preset(args.steps, args.lengths)]
    run, command, wall_s = run_local_sweep(everything, sweep_dir, args.data_dir, args.trials, 2, args.seeds)
    if run.returncode != 0:
        raise SystemExit(f"{name} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    summary = OmegaConf.to_container(OmegaConf.load(sweep_dir / "optimization_results.yaml"))
    log = run.stdout + run.stderr
    printed = log[log.index("Sweep summary:\n") :].split("\n\n")[0].split("\n", 1)[1]
    training_s = sum(
        json.loads(path.read_text()).get("wall_time_s") or 0.0
        for path in (sweep_dir / "runs").glob("*/seed*/results.json")
    )
    # Slot use: the share of the job slots' time (n_jobs=2 trials x their seeds) spent training;
    # the rest is job start-up and, in the batch way, slots idle behind a batch's slowest trial.
    slot_use = training_s / (2 * args.seeds * wall_s)
    return {"summary": summary, "wall_s": wall_s, "slot_use": slot_use, "table": printed, "command": command}


def verdicts(results: dict[str, dict]) -> list[str]:
    """The issue's targets for the ways that ran, each with its numbers and met / not met."""
    met = {True: "met", False: "NOT met"}
    unpruned = results["async"]["summary"]
    lines = []
    if "pruned" in results:
        pruned = results["pruned"]["summary"]
        share = pruned["total"]["steps"] / unpruned["total"]["steps"]
        gap = unpruned["best_value"] - pruned["best_value"]
        noise = unpruned.get("best_value_std") or 0.0
        lines += [
            f"- pruned steps / unpruned steps = {share:.0%} (target <= 50%): {met[share <= 0.5]}",
            f"- unpruned best - pruned best = {gap:+.4f}, unpruned best's seed std {noise:.4f} "
            f"(target: within one std): {met[gap <= noise]}",
        ]
    walls = results["async"]["wall_s"], results["batch"]["wall_s"]
    saved = 1 - walls[0] / walls[1]
    return lines + [
        f"- asynchronous wall {walls[0]:.0f} s vs batch {walls[1]:.0f} s ({saved:+.1%} saved; "
        f"target: below): {met[walls[0] < walls[1]]}",
    ]


def same_configurations(results: dict[str, dict]) -> str:
    """'yes', or which trial numbers' parameters differ between the ways (they should not)."""
    params = {
        slug: {row["number"]: row["params"] for row in result["summary"]["trials"]}
        for slug, result in results.items()
    }
    numbers = sorted(set().union(*params.values()))
    differ = [n for n in numbers if len({repr(way.get(n)) for way in params.values()}) > 1]
    return "yes" if not differ else f"no, trials {differ} differ"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--min-resource", type=int, default=200, help="steps to the first rung")
    parser.add_argument("--reduction-factor", type=int, default=3, help="1/this of a rung's trials go on")
    parser.add_argument("--data-dir", default=str(REPO / "data"), help="where the shapes clips are")
    parser.add_argument(
        "--lengths",
        action="store_true",
        help="batch vs asynchronous only, with 2- or 4-frame training clips in the search space so "
        "that trial lengths differ ~2x (results/sweeps_lengths.md)",
    )
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="slotsweep-bench-sweeps-") as root:
        warm_data(args, Path(root))
        for slug, (name, overrides) in ways(args).items():
            results[slug] = run_way(name, overrides, args, Path(root) / slug)
            print(f"{name}: {results[slug]['wall_s']:.0f} s", flush=True)
    rows = []
    names = {slug: name for slug, (name, _) in ways(args).items()}
    for slug, result in reversed(results.items()):  # batch first: the baseline
        name = names[slug]
        summary = result["summary"]
        std = summary.get("best_value_std")
        best = f"{summary['best_value']:.4f}" + (f" ± {std:.4f}" if std is not None else "")
        device_s = summary["total"]["device_hours"] * 3600
        rows.append(
            f"| {name} | {best} | {summary['n_complete']} / {summary['n_pruned']} | "
            f"{summary['total']['steps']} | {device_s:.0f} | {result['slot_use']:.0%} | "
            f"{result['wall_s']:.0f} |"
        )
    if args.lengths:
        title = "# Sweeps: batch vs asynchronous, trial lengths ~2x apart"
        space = f"`grouper.n_slots=range(3, 12)` and `dataset.train_clip_frames={CLIP_FRAMES_SPACE}`"
        pruner, clips, order = "", "2- or 4-frame clips", "asynchronous, batch"
    else:
        title = "# Sweeps: batch vs asynchronous vs asynchronous + pruning"
        space, clips, order = "`grouper.n_slots=range(3, 12)`", "2-frame clips", "pruned, asynchronous, batch"
        pruner = (
            f"successive halving with rungs at steps {args.min_resource} x {args.reduction_factor}^k "
            f"(the top 1/{args.reduction_factor} of the trials that reached a rung go on; the first "
            "trials at a rung only if they lead it); "
        )
    lines = [
        title,
        "",
        f"`+sweep=loss_weights` plus {space}, {args.trials} trials x {args.seeds} seeds, random "
        f"sampler (seed 0); {pruner}n_jobs=2 local subprocesses, the cores split among the "
        f"{2 * args.seeds} job slots. The demo preset on both losses with {clips}, batch 8, "
        f"{args.steps} steps, validated every {VALIDATION_INTERVAL} steps on 2 batches. "
        "Objective: val/video_fg_ari (maximised); best value: mean ± std over the best trial's "
        "seeds. Device-seconds: CPU-seconds of the jobs (results.json). Slot use: the jobs' "
        f"training time over {2 * args.seeds} job slots (2 trials x {args.seeds} seeds) x the "
        "sweep's wall time (start-up and, in the batch way, slots idle behind a batch's slowest "
        f"trial make up the rest). Wall: the whole sweep. Run order: {order}. Same configurations "
        f"asked in every way: {same_configurations(results)}.",
        "",
        "| way | best value | completed / pruned | training steps | device-s | slot use | wall (s) |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Targets (issue #12):",
        "",
        *verdicts(results),
    ]
    if "pruned" in results:
        command = shlex.join(results["pruned"]["command"][1:]).replace(str(REPO) + "/", "")
        lines += ["", "The pruned sweep's own summary, as it printed it:", "", "```bash", command, "```", ""]
        lines.append(results["pruned"]["table"])
    table = "\n".join(lines)
    print(table)
    print(f"\nwritten to {write_table('sweeps_lengths' if args.lengths else 'sweeps', table)}")


if __name__ == "__main__":
    main()

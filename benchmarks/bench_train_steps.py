"""Training steps per second: cached encoder outputs (`cache=true`) vs the encoder in the loop.

Run: `.venv/bin/python benchmarks/bench_train_steps.py` (about 4 min on 2 loaded cores, most of it
the reference-sized encoder). Same model, same config, same batches; only where the encoder's outputs
come from differs. Prints one Markdown table and writes it to benchmarks/results/train_steps.md.
"""

from __future__ import annotations

import argparse
import tempfile

from _common import REFERENCE_SIZE, StepTimes, compose_train, time_training_steps, write_table

# name -> (overrides, timed steps); steps are few where one takes seconds
SETUPS = {
    # the shapes default (tiny ViT, 64 px, 32 clips of 4 frames); fewer stored clips than the
    # default 1000 only to build the cache quickly: a step does not depend on the dataset's size
    "shapes default (tiny ViT, 64 px, batch 32 x 4 frames)": (["dataset.n_train_clips=128"], 8),
    # batch 1 on CPU; no flips, so the cache encodes each frame once (a flip doubles the build only)
    "reference size (ViT-B/8 random, 224 px, batch 1 x 4 frames)": (
        [*REFERENCE_SIZE, "dataset.batch_size=1", "dataset.hflip=false"],
        3,
    ),
}


def measure(overrides: list[str], n_steps: int, data_dir: str) -> tuple[StepTimes, StepTimes]:
    """(encoder in the loop, cached) step times; the cache is built into a fresh directory."""
    in_loop = time_training_steps(compose_train(*overrides, data_dir=data_dir), n_steps)
    with tempfile.TemporaryDirectory(prefix="slotsweep-bench-cache-") as cache:
        cfg = compose_train(*overrides, "cache=true", f"paths.features_dir={cache}", data_dir=data_dir)
        cached = time_training_steps(cfg, n_steps)
    cached.build_s -= in_loop.build_s  # what the cache added to building the task
    return in_loop, cached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data", help="where the shapes clips are generated")
    args = parser.parse_args()
    rows = []
    for name, (overrides, n_steps) in SETUPS.items():
        in_loop, cached = measure(overrides, n_steps, args.data_dir)
        saved_s = 1 / in_loop.steps_per_s - 1 / cached.steps_per_s
        break_even = f"{cached.build_s / saved_s:.0f}" if saved_s > 0 else "never"
        rows.append(
            f"| {name} | {in_loop.steps_per_s:.2f} | {cached.steps_per_s:.2f} | "
            f"**{cached.steps_per_s / in_loop.steps_per_s:.1f}x** | "
            f"{in_loop.cpu_per_step / cached.cpu_per_step:.1f}x | {cached.build_s:.0f} s | "
            f"{break_even} | {n_steps} |"
        )
    table = "\n".join(
        [
            "# Training steps: cached encoder outputs vs the encoder in the loop",
            "",
            "Lightning training steps on CPU (forward, backward, clipping, Adam, data loading), fp32, "
            "the same model and batches both ways: the encoder in the loop runs the frozen ViT on "
            "every batch; cached (`cache=true`) reads its float16 outputs from disk. Steps/s "
            "from the fastest of the timed steps (after two untimed ones); CPU speedup from the CPU "
            "time per step (the work done, which other jobs on a shared machine barely change). "
            "Cache build: encoding the train and val splits once, then reused by every run and sweep "
            "trial; break-even: steps of one run that pay for it.",
            "",
            "| setup | encoder in the loop (steps/s) | cached (steps/s) | speedup | CPU speedup | "
            "cache build | break-even (steps) | timed steps |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(table)
    print(f"\nwritten to {write_table('train_steps', table)}")


if __name__ == "__main__":
    main()

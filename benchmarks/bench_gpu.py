"""GPU training steps at the reference size: fp32 vs bf16-mixed, encoder in the loop vs cached.

Run: `.venv/bin/python benchmarks/bench_gpu.py` (about 2 min on one GPU). Without CUDA it prints why
and writes nothing (a table from a GPU machine is kept). `--accelerator cpu --setup shapes` runs the
same code on a CPU, to check the script where no GPU is lent. Prints one Markdown table and writes
it to benchmarks/results/gpu.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

import torch
from _common import REFERENCE_SIZE, compose_train, time_training_steps, write_table

SETUPS = {
    "reference": (
        "the reference-sized model: ViT-B/8 random, 224 px, 4 frames, 11 slots of 128, SlotMixer "
        "3x1024, temporal similarity",
        REFERENCE_SIZE,
    ),
    "shapes": ("the shapes default: tiny ViT, 64 px, 4 frames, 7 slots of 64", []),
}
PRECISIONS = ("32-true", "bf16-mixed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accelerator", default="gpu", choices=("gpu", "cpu"))
    parser.add_argument("--setup", default="reference", choices=sorted(SETUPS))
    parser.add_argument("--batch-size", type=int, default=32, help="clips per step")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per row")
    parser.add_argument("--data-dir", default="data", help="where the shapes clips are generated")
    args = parser.parse_args()
    if args.accelerator == "gpu" and not torch.cuda.is_available():
        print("bench_gpu: skipped, no CUDA device on this machine (torch.cuda.is_available() is False)")
        return
    label, setup = SETUPS[args.setup]
    overrides = [
        *setup,
        f"dataset.batch_size={args.batch_size}",
        f"dataset.n_train_clips={args.batch_size}",  # one batch of stored clips: the cache stays small
        "dataset.hflip=false",
        "dataset.num_workers=4",  # a GPU step outpaces loading in the main process
    ]
    rows = []
    with tempfile.TemporaryDirectory(prefix="slotsweep-bench-cache-") as cache:
        for source, cache_setting in [("encoder in the loop", "false"), ("cached", "true")]:
            for precision in PRECISIONS:
                cfg = compose_train(
                    *overrides,
                    f"cache={cache_setting}",
                    f"paths.features_dir={cache}",
                    f"trainer.precision={precision}",
                    data_dir=args.data_dir,
                )
                times = time_training_steps(cfg, args.steps, warmup=2, accelerator=args.accelerator)
                memory = "n/a" if times.peak_memory_gib is None else f"{times.peak_memory_gib:.1f}"
                rows.append((source, precision, times.steps_per_s, memory))
    baseline = rows[0][2]  # encoder in the loop, fp32
    device = torch.cuda.get_device_name(0) if args.accelerator == "gpu" else "CPU"
    table = "\n".join(
        [
            f"# {device}: training steps, fp32 vs bf16-mixed, encoder in the loop vs cached",
            "",
            f"Setup: {label}; batch {args.batch_size}. Lightning training steps with data loading "
            f"(dataset.num_workers=4), fastest of {args.steps} after 3 untimed. `trainer.precision`: "
            "32-true (the reference) or bf16-mixed (autocast; the losses' targets, log-softmax and "
            "MSE stay fp32). Peak memory: `torch.cuda.max_memory_allocated`. Attention in the "
            "predictor and the decoder's allocator runs PyTorch's fused kernel "
            "(`F.scaled_dot_product_attention`); slot attention cannot (its softmax is over the "
            "slots, the queries, not over the keys).",
            "",
            "| encoder outputs | precision | steps/s | clips/s | vs fp32 in the loop | peak memory (GiB) |",
            "|---|---|---|---|---|---|",
            *(
                f"| {source} | {precision} | {rate:.2f} | {rate * args.batch_size:.0f} | "
                f"**{rate / baseline:.1f}x** | {memory} |"
                for source, precision, rate, memory in rows
            ),
        ]
    )
    print(table)
    name = "gpu" if args.accelerator == "gpu" else "gpu_script_on_cpu"
    print(f"\nwritten to {write_table(name, table)}")


if __name__ == "__main__":
    sys.exit(main())

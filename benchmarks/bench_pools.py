"""Trial pools: trial-steps per second of a 4-head pool against the same 4 trials run solo.

Size: a randomly initialised DINO ViT-S/8 at 128 px (256 patches), batch 2 x 4 frames, 7 slots of
64, temporal similarity: the frozen encoder is most of a training step here, as in every reference
preset (the script measures and prints its share). Each round times the pool (one encoder forward
per batch, four heads step on it) and then each of the four trials alone, one after another, in
alternating rounds of >= 10 timed steps each; the table gives the median over all timed steps and
their spread (min-max). No validation, checkpoints or logger on either side.

    python benchmarks/bench_pools.py [--rounds 2] [--steps 10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from _common import _StepClock, compose_train, time_training_steps, write_table

from slotsweep.build import build_model
from slotsweep.training.pool import run_pool

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
TRIALS = (  # four trials of one seed: the hyperparameters a sweep would vary
    ["optim.base_lr=0.0004"],
    ["optim.base_lr=0.0002"],
    ["grouper.n_slots=5"],
    ["loss.timesim.temperature=0.1"],
)


def pool_step_times(n_steps: int, warmup: int = 1) -> list[float]:
    """Wall seconds of each timed step of a pool of the four TRIALS (run_pool in a temporary runs
    dir: the heads' run dirs are written as in a sweep; validation only once, after the last step)."""
    length = warmup + n_steps + 1  # +1: a step's duration is the gap to the previous mark
    untimed = [
        f"trainer.max_steps={length}",
        f"trainer.val_check_interval={length}",
        "trainer.limit_val_batches=1",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        f"checkpoint_every_n_steps={length}",
    ]
    clock = _EncoderCalls()
    with tempfile.TemporaryDirectory(prefix="bench_pools_") as runs_dir:
        cfgs = [compose_train(*SIZE, *trial, *untimed, f"paths.runs_dir={runs_dir}") for trial in TRIALS]
        run_pool(cfgs, Path(runs_dir) / "pool", callbacks=[clock])
    assert clock.calls == length, "one encoder forward per batch"
    marks = [wall for wall, _ in clock.marks[warmup:]]
    return [b - a for a, b in zip(marks, marks[1:], strict=False)]


class _EncoderCalls(_StepClock):
    """The step clock, and the pool's encoder forwards of training so far (validation not counted)."""

    calls = 0

    def on_train_batch_end(self, trainer: L.Trainer, pool: L.LightningModule, *args) -> None:
        super().on_train_batch_end()
        self.calls = pool.encoder.calls - pool.encoder_calls_at_start


def encoder_share(step_s: float, repeats: int = 5) -> tuple[float, float]:
    """(median seconds of the encoder's forward on one batch, its share of a solo step)."""
    cfg = compose_train(*SIZE)
    model, _ = build_model(cfg)
    frames = torch.randn(cfg.dataset.batch_size * cfg.dataset.train_clip_frames, 3, 128, 128)
    times = []
    with torch.no_grad():
        model.encoder(frames)
        for _ in range(repeats):
            start = time.perf_counter()
            model.encoder(frames)
            times.append(time.perf_counter() - start)
    encoder_s = statistics.median(times)
    return encoder_s, encoder_s / step_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per side per round")
    args = parser.parse_args()
    pooled: list[float] = []  # seconds per pool step (= 4 trial-steps)
    solo: list[float] = []  # seconds per solo step (= 1 trial-step)
    for round_ in range(args.rounds):
        pooled += pool_step_times(args.steps)
        for trial in TRIALS:
            solo += time_training_steps(compose_train(*SIZE, *trial), args.steps).wall
        pool_s, solo_s = statistics.median(pooled), statistics.median(solo)
        print(f"round {round_ + 1}: pool {pool_s:.2f} s/step, solo {solo_s:.2f} s/step")
    k = len(TRIALS)
    pool_rate = [k / s for s in pooled]
    solo_rate = [1 / s for s in solo]
    encoder_s, share = encoder_share(statistics.median(solo))
    speedup = statistics.median(pool_rate) / statistics.median(solo_rate)
    table = "\n".join(
        [
            "# Trial pools: 4 heads over one encoder forward vs 4 solo runs",
            "",
            f"Command: `python benchmarks/bench_pools.py --rounds {args.rounds} --steps {args.steps}`. "
            "Random DINO ViT-S/8 at 128 px (256 patches), batch 2 x 4 frames, 7 slots of 64, timesim; "
            f"CPU. The encoder's forward on one batch takes {encoder_s:.2f} s, **{share:.0%} of a solo "
            f"step**. {args.rounds} alternating rounds; each side {args.steps} timed steps per round "
            "(per trial for solo).",
            "",
            "| way | trial-steps/s, median | spread (min-max) | timed steps |",
            "|---|---|---|---|",
            f"| 4 trials solo, one after another | {statistics.median(solo_rate):.3f} | "
            f"{min(solo_rate):.3f}-{max(solo_rate):.3f} | {len(solo)} |",
            f"| one pool of 4 heads | {statistics.median(pool_rate):.3f} | "
            f"{min(pool_rate):.3f}-{max(pool_rate):.3f} | {len(pooled)} |",
            "",
            f"Pool / solo: **{speedup:.2f}x** trial-steps per second (medians).",
        ]
    )
    print(table)
    write_table("pools", table)


if __name__ == "__main__":
    main()

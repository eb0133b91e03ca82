"""Trial pools: trial-steps per second of a 4-head pool against the same 4 trials run solo.

Size: the reference's model (a randomly initialised DINO ViT-B/8 at 224 px, 784 patches, 11 slots
of 128, SlotMixer, temporal similarity; `_common.REFERENCE_SIZE`) at batch 1 x 4 frames, fp32: the
frozen encoder is most of a training step here, as in every reference preset (the script measures
and prints its share). Each round times the pool (one encoder forward per batch, four heads step
on it) and each of the four trials alone, one after another; the order of the two sides
alternates between rounds, so a drift in the machine's load hits both. The table gives the median
over all timed steps and their spread (min-max). No validation, checkpoints or logger on either side.

Where the pool's step goes: inside the pool the script times the shared encoder's forward and each
head's step (forward from the features, backward, clipping, optimizer), the rest of the step being
the loader and Lightning's loop (the clock optimizer included). Against the solo step, that says
how much each head costs beyond the trainable part of a solo step.

    python benchmarks/bench_pools.py [--rounds 2] [--steps 10]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import lightning as L
import torch
from _common import REFERENCE_SIZE, _StepClock, compose_train, time_training_steps, write_table

from slotsweep import numerics
from slotsweep.build import build_model
from slotsweep.training.pool import HeadRun, PoolModule, build_pool

SIZE = [
    *REFERENCE_SIZE,
    "dataset.batch_size=1",
    "dataset.num_workers=0",
    "trainer.precision=32-true",  # the CPU's (auto resolves to it here; Lightning takes no "auto")
]
TRIALS = (  # four trials of one seed: the hyperparameters a sweep would vary
    ["optim.base_lr=0.0004"],
    ["optim.base_lr=0.0002"],
    ["grouper.n_slots=9"],
    ["loss.timesim.temperature=0.1"],
)


class _Timer:
    """Wraps a callable and keeps the wall seconds of each call (the pool's encoder, its heads)."""

    def __init__(self, fn: Callable) -> None:
        self.fn, self.seconds = fn, []

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.fn(*args, **kwargs)
        self.seconds.append(time.perf_counter() - start)
        return out


def pool_step_times(n_steps: int, warmup: int = 1) -> tuple[list[float], list[float], list[float]]:
    """For each timed step of a pool of the four TRIALS: its wall seconds, its encoder forward's, and
    its heads' steps' (len(TRIALS) per step)."""
    cfgs = [compose_train(*SIZE, *trial) for trial in TRIALS]
    datamodule, heads = build_pool(cfgs)
    runs = [HeadRun(cfg, f"trial{k}", None, None) for k, cfg in enumerate(cfgs)]
    pool = PoolModule(heads, runs, {"id": "bench", "size": len(cfgs)}, numerics.resolve(cfgs[0]))
    encoder = pool.encoder._forward = _Timer(pool.encoder._forward)
    head = pool._head_step = _Timer(pool._head_step)
    clock = _StepClock()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=warmup + n_steps + 1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )
    trainer.fit(pool, datamodule=datamodule)
    assert pool.encoder.calls == warmup + n_steps + 1, "one encoder forward per batch"
    marks = [wall for wall, _ in clock.marks[warmup:]]
    timed = range(warmup + 1, warmup + n_steps + 1)  # the batches whose steps the marks bound
    k = len(TRIALS)
    return (
        [b - a for a, b in zip(marks, marks[1:], strict=False)],
        [encoder.seconds[batch] for batch in timed],
        [s for batch in timed for s in head.seconds[k * batch : k * (batch + 1)]],
    )


def encoder_seconds(repeats: int = 5) -> float:
    """Median seconds of the frozen encoder's forward on one solo batch, alone."""
    cfg = compose_train(*SIZE)
    model, _ = build_model(cfg)
    S = model.encoder.img_size
    frames = torch.randn(cfg.dataset.batch_size * cfg.dataset.train_clip_frames, 3, S, S)
    times = []
    with torch.no_grad():
        model.encoder(frames)
        for _ in range(repeats):
            start = time.perf_counter()
            model.encoder(frames)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per side per round")
    args = parser.parse_args()
    pooled: list[float] = []  # seconds per pool step (= 4 trial-steps)
    solo: list[float] = []  # seconds per solo step (= 1 trial-step)
    pool_encoder: list[float] = []  # seconds of the encoder's forward in each timed pool step
    pool_head: list[float] = []  # seconds of each head's step in them

    def run_pool() -> None:
        steps, encoder_s, head_s = pool_step_times(args.steps)
        pooled.extend(steps), pool_encoder.extend(encoder_s), pool_head.extend(head_s)

    def run_solo() -> None:
        for trial in TRIALS:
            solo.extend(time_training_steps(compose_train(*SIZE, *trial), args.steps).wall)

    for round_ in range(args.rounds):
        for side in (run_pool, run_solo) if round_ % 2 == 0 else (run_solo, run_pool):
            side()
        print(
            f"round {round_ + 1}: pool {statistics.median(pooled):.2f} s/step, "
            f"solo {statistics.median(solo):.2f} s/step",
            flush=True,
        )
    k = len(TRIALS)
    pool_rate = [k / s for s in pooled]
    solo_rate = [1 / s for s in solo]
    pool_s, solo_s = statistics.median(pooled), statistics.median(solo)
    encoder_s = encoder_seconds()
    share = encoder_s / solo_s
    bound = k / (1 + (k - 1) * (1 - share))
    speedup = statistics.median(pool_rate) / statistics.median(solo_rate)
    in_pool_encoder, in_pool_head = statistics.median(pool_encoder), statistics.median(pool_head)
    # what is neither the encoder nor a head, step by step (medians of parts need not add up)
    rest = statistics.median(
        step - encoder - sum(pool_head[k * i : k * (i + 1)])
        for i, (step, encoder) in enumerate(zip(pooled, pool_encoder, strict=True))
    )
    solo_rest = solo_s - encoder_s  # the trainable part, loader and loop of a solo step
    table = "\n".join(
        [
            "# Trial pools: 4 heads over one encoder forward vs 4 solo runs",
            "",
            f"Command: `python benchmarks/bench_pools.py --rounds {args.rounds} --steps {args.steps}`. "
            "The reference's model (random DINO ViT-B/8 at 224 px, 784 patches, 11 slots of 128, "
            "SlotMixer, timesim) at batch 1 x 4 frames, fp32, CPU. The encoder's forward on one batch "
            f"takes {encoder_s:.2f} s, **{share:.0%} of a solo step** ({solo_s:.2f} s). "
            f"{args.rounds} rounds, the sides' order alternating; each side {args.steps} timed steps "
            "per round (per trial for solo).",
            "",
            "| way | trial-steps/s, median | spread (min-max) | timed steps |",
            "|---|---|---|---|",
            f"| 4 trials solo, one after another | {statistics.median(solo_rate):.3f} | "
            f"{min(solo_rate):.3f}-{max(solo_rate):.3f} | {len(solo)} |",
            f"| one pool of 4 heads | {statistics.median(pool_rate):.3f} | "
            f"{min(pool_rate):.3f}-{max(pool_rate):.3f} | {len(pooled)} |",
            "",
            f"Pool / solo: **{speedup:.2f}x** trial-steps per second (medians). The bound at this "
            f"encoder share, K / (1 + (K - 1)(1 - share)) for K = {k} heads that each cost a solo "
            f"step's non-encoder part, is {bound:.2f}x.",
            "",
            "Where a pool step goes (medians, seconds):",
            "",
            "| part | pool step | solo step |",
            "|---|---|---|",
            f"| frozen encoder forward | {in_pool_encoder:.2f} (once) | {encoder_s:.2f} (timed alone) |",
            f"| each head: forward from the features, backward, clip, Adam | {in_pool_head:.2f} x {k} | "
            f"{solo_rest:.2f} (the step less the encoder: also the loader and Lightning's loop) |",
            f"| the rest: loader, Lightning's loop, clock optimizer | {rest:.2f} | (in the line above) |",
            f"| whole step | {pool_s:.2f} | {solo_s:.2f} |",
        ]
    )
    print(table)
    write_table("pools", table)


if __name__ == "__main__":
    main()

"""Trial pools: trial-steps per second of a 4-head pool against the same 4 trials run solo.

Size: the reference's model (a randomly initialised DINO ViT-B/8, 11 slots of 128, SlotMixer,
temporal similarity; `_common.REFERENCE_SIZE`) at 160 px (400 patches) and batch 1 x 4 frames,
fp32: the frozen encoder is most of a training step here, as in every reference preset (the script
measures and prints its share; at 224 px it is the same, ~83%, and a run takes twice as long).
Each round times the pool (one encoder forward per batch, four heads step on it) and each of the
four trials alone, one after another; the order of the two sides alternates between rounds, so a
drift in the machine's load hits both. The table gives the median
over all timed steps and their spread (min-max). No validation, checkpoints or logger on either side.

Where the pool's step goes: inside the pool the script times the shared encoder's forward and each
head's step (forward from the features, backward, clipping, optimizer), the rest of the step being
the loader and Lightning's loop (the clock optimizer included). Against the solo step, that says
how much each head costs beyond the trainable part of a solo step.

    python benchmarks/bench_pools.py [--rounds 2] [--steps 10]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import median

import lightning as L
from _common import REFERENCE_SIZE, _StepClock, compose_train, write_table

from slotsweep import numerics
from slotsweep.training import task
from slotsweep.training.pool import HeadRun, PoolModule, build_pool

SIZE = [
    *REFERENCE_SIZE,  # at 224 px; the later keys win
    "encoder.img_size=160",
    "dataset.resolution=160",
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
    """Wraps a callable and keeps the wall seconds of each call."""

    def __init__(self, fn: Callable) -> None:
        self.fn, self.seconds = fn, []

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.fn(*args, **kwargs)
        self.seconds.append(time.perf_counter() - start)
        return out


@dataclass
class Steps:
    """Per timed step (seconds): the whole step, its encoder forward, and each head's update (its
    forward from the features, backward, clipping and Adam, the encoder's time taken out)."""

    wall: list[float] = field(default_factory=list)
    encoder: list[float] = field(default_factory=list)
    heads: list[list[float]] = field(default_factory=list)

    def extend(self, other: Steps) -> None:
        self.wall += other.wall
        self.encoder += other.encoder
        self.heads += other.heads

    def rest(self) -> list[float]:
        """What is neither the encoder nor a head: the loader, Lightning's loop, the schedule."""
        return [w - e - sum(h) for w, e, h in zip(self.wall, self.encoder, self.heads, strict=True)]


def _timed_fit(
    module: L.LightningModule, datamodule, encoder_timer: _Timer, update: str, n_steps: int, **trainer
) -> Steps:
    """Fit `module` for warm-up + n_steps + 1 steps (the first mark starts the first timed step),
    timing the module's method `update` (a head's whole update, the encoder forward included where
    it runs inside it); `encoder_timer` wraps the encoder's computing forward."""
    warmup = 1
    update_timer = _Timer(getattr(module, update))
    setattr(module, update, update_timer)
    clock = _StepClock()
    L.Trainer(
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
        **trainer,
    ).fit(module, datamodule=datamodule)
    assert len(encoder_timer.seconds) == warmup + n_steps + 1, "one encoder forward per batch"
    k = len(update_timer.seconds) // len(encoder_timer.seconds)  # updates per batch: the heads
    marks = [wall for wall, _ in clock.marks[warmup:]]
    steps = Steps(wall=[b - a for a, b in zip(marks, marks[1:], strict=False)])
    for batch in range(warmup + 1, warmup + n_steps + 1):  # the batches whose steps the marks bound
        updates = update_timer.seconds[k * batch : k * (batch + 1)]
        steps.encoder.append(encoder_timer.seconds[batch])
        steps.heads.append([updates[0] - encoder_timer.seconds[batch], *updates[1:]])  # the first runs it
    return steps


def pool_steps(n_steps: int) -> Steps:
    """A pool of the four TRIALS: one encoder forward per batch, each head's _head_step on it."""
    cfgs = [compose_train(*SIZE, *trial) for trial in TRIALS]
    datamodule, heads = build_pool(cfgs)
    runs = [HeadRun(cfg, f"trial{k}", None, None) for k, cfg in enumerate(cfgs)]
    pool = PoolModule(heads, runs, {"id": "bench", "size": len(cfgs)}, numerics.resolve(cfgs[0]))
    encoder = pool.encoder._forward = _Timer(pool.encoder._forward)  # what runs once per batch
    # the pool clips each head itself; its Trainer runs at the numerics' precision
    return _timed_fit(pool, datamodule, encoder, "_head_step", n_steps, precision="32-true")


def solo_steps(trial: list[str], n_steps: int) -> Steps:
    """One trial alone, as a solo run's Trainer drives it: optimizer_step holds its update (its
    training_step with the encoder forward, backward, clipping and Adam)."""
    cfg = compose_train(*SIZE, *trial)
    datamodule, module = task.build_task(cfg)
    frozen = module.model.encoder
    encoder = frozen.forward = _Timer(frozen.forward)  # an instance attribute: nn.Module.__call__ finds it
    return _timed_fit(
        module,
        datamodule,
        encoder,
        "optimizer_step",
        n_steps,
        precision=cfg.trainer.precision,
        gradient_clip_val=cfg.trainer.gradient_clip_val,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per side per round")
    args = parser.parse_args()
    pooled, solo = Steps(), Steps()  # a pool step is 4 trial-steps, a solo step 1

    def run_pool() -> None:
        pooled.extend(pool_steps(args.steps))

    def run_solo() -> None:
        for trial in TRIALS:
            solo.extend(solo_steps(trial, args.steps))

    for round_ in range(args.rounds):
        for side in (run_pool, run_solo) if round_ % 2 == 0 else (run_solo, run_pool):
            side()
        print(
            f"round {round_ + 1}: pool {median(pooled.wall):.2f} s/step, solo {median(solo.wall):.2f} s/step",
            flush=True,
        )
    k = len(TRIALS)
    pool_rate = [k / s for s in pooled.wall]
    solo_rate = [1 / s for s in solo.wall]
    pool_s, solo_s = median(pooled.wall), median(solo.wall)
    share = median(solo.encoder) / solo_s
    bound = k / (1 + (k - 1) * (1 - share))
    speedup = median(pool_rate) / median(solo_rate)
    pool_head = median([h for heads in pooled.heads for h in heads])
    table = "\n".join(
        [
            "# Trial pools: 4 heads over one encoder forward vs 4 solo runs",
            "",
            f"Command: `python benchmarks/bench_pools.py --rounds {args.rounds} --steps {args.steps}`. "
            "The reference's model (random DINO ViT-B/8, 11 slots of 128, SlotMixer, timesim) at "
            "160 px (400 patches), batch 1 x 4 frames, fp32, CPU. The encoder's forward is "
            f"**{share:.0%} of a solo step** (medians of the solo steps: {median(solo.encoder):.2f} s "
            f"of {solo_s:.2f} s). {args.rounds} rounds, the sides' order alternating; each side "
            f"{args.steps} timed steps per round (per trial for solo).",
            "",
            "| way | trial-steps/s, median | spread (min-max) | timed steps |",
            "|---|---|---|---|",
            f"| 4 trials solo, one after another | {median(solo_rate):.3f} | "
            f"{min(solo_rate):.3f}-{max(solo_rate):.3f} | {len(solo.wall)} |",
            f"| one pool of 4 heads | {median(pool_rate):.3f} | "
            f"{min(pool_rate):.3f}-{max(pool_rate):.3f} | {len(pooled.wall)} |",
            "",
            f"Pool / solo: **{speedup:.2f}x** trial-steps per second (medians). At this encoder share, "
            f"{k} heads that each cost what a solo step costs beyond its encoder would give "
            f"K / (1 + (K - 1)(1 - share)) = {bound:.2f}x.",
            "",
            "Where a step goes (medians over the timed steps, seconds; a head's update is its forward "
            "from the features, backward, clipping and Adam):",
            "",
            "| part | pool step | solo step |",
            "|---|---|---|",
            f"| frozen encoder forward | {median(pooled.encoder):.2f} (once) | {median(solo.encoder):.2f} |",
            f"| a head's update | {pool_head:.2f} x {k} | {median([h[0] for h in solo.heads]):.2f} |",
            f"| the rest: loader, Lightning's loop, schedule | {median(pooled.rest()):.2f} | "
            f"{median(solo.rest()):.2f} |",
            f"| whole step | {pool_s:.2f} | {solo_s:.2f} |",
        ]
    )
    print(table)
    write_table("pools", table)


if __name__ == "__main__":
    main()

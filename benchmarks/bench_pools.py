"""Trial pools: trial-steps per second of a 4-head pool against the same 4 trials run solo.

Size: the reference's model (a randomly initialised DINO ViT-B/8, 11 slots of 128, SlotMixer,
temporal similarity; `_common.REFERENCE_SIZE`) at 160 px (400 patches) and batch 1 x 4 frames,
fp32: the frozen encoder is most of a training step here, as in every reference preset (the script
measures and prints its share; at 224 px it is the same, ~83%, and a run takes twice as long).
Each round times the pool (src/pool.py's run_pool: one encoder forward per batch, four heads step
on it) and each of the four trials alone, one after another; the order of the two sides alternates
between rounds, so a drift in the machine's load hits both. The table gives the median over all
timed steps and their spread (min-max). No validation, checkpoint or logger in a timed step.

Where a step goes: on both sides the script times the frozen encoder's forward and each head's
update (its forward from the features, backward, clipping and Adam: the pool's _head_step, a solo
module's optimizer_step, less the encoder's time where it runs inside), the rest of the step being
the loader and Lightning's loop. Side by side, that says what a head costs in a pool against the
same work in a solo run.

    python benchmarks/bench_pools.py [--rounds 2] [--steps 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

import lightning as L
from _common import REFERENCE_SIZE, bare_trainer, compose_train, write_table

from slotsweep.training import task
from slotsweep.training.pool import run_pool

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
    """Wraps a callable and keeps the wall seconds of each call, until taken."""

    def __init__(self, fn: Callable) -> None:
        self.fn, self.seconds = fn, []

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.fn(*args, **kwargs)
        self.seconds.append(time.perf_counter() - start)
        return out

    def take(self) -> list[float]:
        taken, self.seconds = self.seconds, []
        return taken


class _StepTimers(L.Callback):
    """At each training batch's end: the wall clock, and the encoder forwards and head updates timed
    in that batch. `install(module)` wraps the module's encoder forward and update in _Timers when
    training starts (a pool has its heads and their shared encoder by then)."""

    def __init__(self, install: Callable[[L.LightningModule], tuple[_Timer, _Timer]]) -> None:
        self.install = install
        self.batches: list[tuple[float, list[float], list[float]]] = []

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.encoder, self.update = self.install(module)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args) -> None:
        self.batches.append((time.perf_counter(), self.encoder.take(), self.update.take()))


@dataclass
class Steps:
    """Per timed step (seconds): the whole step, its encoder forward, and each head's update (its
    forward from the features, backward, clipping and Adam, the encoder's time taken out)."""

    wall: list[float] = field(default_factory=list)
    encoder: list[float] = field(default_factory=list)
    heads: list[list[float]] = field(default_factory=list)

    @classmethod
    def timed(cls, timers: _StepTimers, warmup: int = 1) -> Steps:
        """The steps after `warmup` batches: a step lasts from the previous batch's end to its own."""
        steps = cls()
        for (before, _, _), (end, encoder, updates) in zip(
            timers.batches[warmup:], timers.batches[warmup + 1 :], strict=False
        ):
            assert len(encoder) == 1, "one encoder forward per batch"
            steps.wall.append(end - before)
            steps.encoder.append(encoder[0])
            steps.heads.append([updates[0] - encoder[0], *updates[1:]])  # the first update runs the encoder
        return steps

    def extend(self, other: Steps) -> None:
        self.wall += other.wall
        self.encoder += other.encoder
        self.heads += other.heads

    def rest(self) -> list[float]:
        """What is neither the encoder nor a head: the loader, Lightning's loop, the schedule."""
        return [w - e - sum(h) for w, e, h in zip(self.wall, self.encoder, self.heads, strict=True)]


def _time_pool(pool: L.LightningModule) -> tuple[_Timer, _Timer]:
    encoder = pool.encoder._forward = _Timer(pool.encoder._forward)  # what computes, once per batch
    update = pool._head_step = _Timer(pool._head_step)
    return encoder, update


def _time_solo(module: L.LightningModule) -> tuple[_Timer, _Timer]:
    frozen = module.model.encoder
    encoder = frozen.forward = _Timer(frozen.forward)  # an instance attribute: nn.Module.__call__ finds it
    # optimizer_step holds a solo run's update: the closure (training_step, backward), clipping, Adam
    update = module.optimizer_step = _Timer(module.optimizer_step)
    return encoder, update


def pool_steps(n_steps: int, warmup: int = 1) -> Steps:
    """A pool of the four TRIALS through run_pool, in a temporary runs dir (the heads' run dirs are
    written as in a sweep; one validation batch and the checkpoint after the last, untimed, step)."""
    length = warmup + n_steps + 1  # +1: a step's duration is the gap to the previous batch's end
    untimed = [
        f"trainer.max_steps={length}",
        f"trainer.val_check_interval={length}",
        "trainer.limit_val_batches=1",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        f"checkpoint_every_n_steps={length}",
    ]
    timers = _StepTimers(_time_pool)
    with tempfile.TemporaryDirectory(prefix="bench_pools_") as runs_dir:
        cfgs = [compose_train(*SIZE, *trial, *untimed, f"paths.runs_dir={runs_dir}") for trial in TRIALS]
        run_pool(cfgs, Path(runs_dir) / "pool", callbacks=[timers])
    return Steps.timed(timers, warmup)


def solo_steps(trial: list[str], n_steps: int, warmup: int = 1) -> Steps:
    """One trial alone, its model and loop as a solo run's (no validation, checkpoints or logger)."""
    cfg = compose_train(*SIZE, *trial)
    datamodule, module = task.build_task(cfg)
    timers = _StepTimers(_time_solo)
    bare_trainer(cfg, "cpu", warmup + n_steps + 1, [timers]).fit(module, datamodule=datamodule)
    return Steps.timed(timers, warmup)


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

"""Asynchronous successive halving that pauses and promotes (ASHA), with seeds as a fidelity.

The decisions only, on plain numbers: `Rungs` says where trials pause and how many seeds they run
there; `next_promotion` picks the paused trial to resume when a slot is free. The sweeper
(optuna_sweeper.py) runs the jobs; the replay benchmark (benchmarks/bench_sweeps_replay.py) runs
the same decisions on recorded learning curves.

Rung k is at step min(min_steps * eta**k, max_steps); the last rung is max_steps. A trial at rung k
is promotable when its seed mean is among the best 1/eta of the trials that reached rung k, or
short of the last of those by less than the seed noise at that rung (`seed_noise`), scaled to the
difference of two means. So a trial is never cut by a difference that the seeds alone make.

The noise is measured per rung because it grows with the values: early, when every seed is near
its start, a study-wide std (dominated by the late rungs) would let every trial through. And it is
the noise of a *paired* difference: every trial at a rung ran the same seeds (the first
`seeds_at(k)` of the sweep's list), so what a seed does to every configuration alike (its data
order, its initialisation taking off early) cancels in the difference of two trials' means; what
is left is how differently the seeds treat the two configurations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from slotsweep.errors import SlotsweepError

__all__ = ["Promotion", "Rungs", "RungResult", "next_promotion", "seed_noise"]


@dataclass(frozen=True)
class Rungs:
    """Where trials pause and with how many seeds.

    Args:
        min_steps: the first rung's step (r).
        eta: the reduction factor: 1/eta of a rung's trials go on, and rungs are eta times apart.
        max_steps: the last rung (trainer.max_steps).
        n_seeds: seeds a trial runs at the last rung.
        seeds_as_fidelity: true: n_seeds / eta**(rungs above) seeds at a rung (at least one), so low
            rungs run one seed and a promoted trial gains its others; false: every rung runs all.
    """

    min_steps: int
    eta: int
    max_steps: int
    n_seeds: int = 1
    seeds_as_fidelity: bool = True

    def __post_init__(self) -> None:
        if self.eta < 2:
            raise SlotsweepError(f"hydra.sweeper.pruner.reduction_factor={self.eta} must be >= 2")
        if not 1 <= self.min_steps <= self.max_steps:
            raise SlotsweepError(
                f"hydra.sweeper.pruner.min_steps={self.min_steps} must be in [1, trainer.max_steps="
                f"{self.max_steps}]"
            )

    @property
    def steps(self) -> list[int]:
        """The rungs' steps, ascending, the last one max_steps."""
        steps = []
        step = self.min_steps
        while step < self.max_steps:
            steps.append(step)
            step *= self.eta
        return [*steps, self.max_steps]

    def seeds_at(self, rung: int) -> int:
        """Seeds a trial runs at rung `rung` (0-based)."""
        if not self.seeds_as_fidelity:
            return self.n_seeds
        above = len(self.steps) - 1 - rung
        return max(1, min(self.n_seeds, math.ceil(self.n_seeds / self.eta**above)))


@dataclass(frozen=True)
class RungResult:
    """A trial that reached a rung: its per-seed values there, and whether it is paused there."""

    trial: int
    rung: int
    values: tuple[float, ...]
    paused: bool

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)


def seed_noise(results: Sequence[RungResult]) -> float | None:
    """The std of one seed's value in the difference of two trials that ran the same seeds.

    `results`: one rung's results; their values are per seed in the sweep's seed order (all start
    with the same seeds). With two or more trials of several seeds: the residual std of a two-way
    fit (trial + seed) over their common seeds, i.e. the trial x seed interaction. With one: that
    trial's plain std (an upper bound: it still holds what each seed does to every trial). None
    without any trial of several finite seeds.
    """
    groups = [r.values for r in results if len(r.values) >= 2 and all(math.isfinite(v) for v in r.values)]
    if not groups:
        return None
    n_seeds = min(len(g) for g in groups)
    rows = [g[:n_seeds] for g in groups]
    row_means = [sum(row) / n_seeds for row in rows]
    if len(rows) == 1:
        return math.sqrt(sum((v - row_means[0]) ** 2 for v in rows[0]) / (n_seeds - 1))
    grand = sum(row_means) / len(rows)
    seed_effects = [sum(row[j] for row in rows) / len(rows) - grand for j in range(n_seeds)]
    squares = sum(
        (v - mean - effect) ** 2
        for row, mean in zip(rows, row_means, strict=True)
        for v, effect in zip(row, seed_effects, strict=True)
    )
    return math.sqrt(squares / ((len(rows) - 1) * (n_seeds - 1)))


@dataclass(frozen=True)
class Promotion:
    """The paused trial to resume, and why: its place among the trials that reached its rung."""

    trial: int
    rung: int
    mean: float
    rank: int  # 1 = the best at its rung
    reached: int  # trials at its rung
    kept: int  # how many of them the rung keeps (its top 1/eta)
    behind: float  # how far its mean trails the last one kept (0 when it is among them)
    allowance: float  # the seed noise it was allowed to trail by

    def __str__(self) -> str:
        place = f"{self.mean:.4g} at rung {self.rung}, {self.rank} of {self.reached}"
        if self.rank <= self.kept:
            return f"{place} (the rung keeps {self.kept})"
        return (
            f"{place}: {self.behind:.3g} behind the rung's top {self.kept}, within the seed noise "
            f"({self.allowance:.3g})"
        )


def next_promotion(
    results: Mapping[int, Sequence[RungResult]],
    eta: int,
    maximize: bool,
    noise_allowance: bool = True,
    finishing: bool = False,
) -> Promotion | None:
    """The paused trial to resume next, or None (start a new trial).

    Highest rung first (it is closest to a result); within a rung the best mean among the paused
    trials that are promotable (see the module docstring).

    Args:
        results: {rung: every trial's result at that rung} for the rungs below the last.
        eta: the reduction factor.
        maximize: the direction of the objective.
        noise_allowance: false: the plain top 1/eta, however small the gap (the replay's baseline).
        finishing: no new trial will start: a rung keeps ceil(n / eta) of its n trials instead of
            floor, so that fewer than eta trials at a high rung still send their best on and the
            sweep ends with a trial that ran the last rung.
    """
    sign = 1.0 if maximize else -1.0
    for rung in sorted(results, reverse=True):
        reached = [r for r in results[rung] if all(math.isfinite(v) for v in r.values)]
        n_top = -(-len(reached) // eta) if finishing else len(reached) // eta
        if n_top == 0:
            continue
        ranked = sorted(reached, key=lambda r: sign * r.mean, reverse=True)
        last_kept = ranked[n_top - 1]
        seed_std = seed_noise(reached) if noise_allowance else None
        for rank, result in enumerate(ranked, 1):  # the best first: the first promotable one goes on
            if not result.paused:
                continue
            gap = sign * (last_kept.mean - result.mean)  # > 0: worse than the last one kept
            noise = (
                0.0
                if seed_std is None
                else seed_std * math.sqrt(1 / len(result.values) + 1 / len(last_kept.values))
            )
            if rank <= n_top or gap < noise:
                behind = gap if rank > n_top else 0.0  # ranked: >= 0 outside the top
                return Promotion(result.trial, rung, result.mean, rank, len(ranked), n_top, behind, noise)
    return None

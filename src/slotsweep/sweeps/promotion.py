"""Asynchronous successive halving that pauses and promotes (ASHA), with seeds as a fidelity.

The decisions only, on plain numbers: `Rungs` says where trials pause and how many seeds they run
there; `next_promotion` picks the paused trial to resume when a slot is free. The sweeper
(optuna_sweeper.py) runs the jobs; the replay benchmark (benchmarks/bench_sweeps_replay.py) runs
the same decisions on recorded learning curves.

Rung k is at step min(min_steps * eta**k, max_steps); the last rung is max_steps. A trial at rung k
is promotable when its seed mean is among the best 1/eta of the trials that reached rung k, or
short of the last of those by less than the seed noise: the pooled std of single seeds measured in
the study (trials with several seeds at a rung), scaled to the difference of two means. So a trial
is never cut by a difference that the seeds alone make.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from slotsweep.errors import SlotsweepError

__all__ = ["Rungs", "RungResult", "next_promotion", "pooled_seed_std"]


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


def pooled_seed_std(results: Sequence[RungResult]) -> float | None:
    """The std of one seed's value, pooled over the results with >= 2 seeds; None without any."""
    groups = [r.values for r in results if len(r.values) >= 2 and all(math.isfinite(v) for v in r.values)]
    dof = sum(len(g) - 1 for g in groups)
    if dof == 0:
        return None
    squares = sum(sum((v - sum(g) / len(g)) ** 2 for v in g) for g in groups)  # floats: called often
    return math.sqrt(squares / dof)


def next_promotion(
    results: Mapping[int, Sequence[RungResult]],
    eta: int,
    maximize: bool,
    seed_std: float | None,
    finishing: bool = False,
) -> RungResult | None:
    """The paused trial to resume next, or None (start a new trial).

    Highest rung first (it is closest to a result); within a rung the best mean among the paused
    trials that are promotable (see the module docstring).

    Args:
        results: {rung: every trial's result at that rung} for the rungs below the last.
        eta: the reduction factor.
        maximize: the direction of the objective.
        seed_std: the pooled std of one seed (None: not measured yet, no allowance).
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
        candidates = []
        for result in ranked:
            if not result.paused:
                continue
            gap = sign * (last_kept.mean - result.mean)  # > 0: worse than the last one kept
            noise = (
                0.0
                if seed_std is None
                else seed_std * math.sqrt(1 / len(result.values) + 1 / len(last_kept.values))
            )
            if ranked.index(result) < n_top or gap < noise:
                candidates.append(result)
        if candidates:
            return candidates[0]
    return None

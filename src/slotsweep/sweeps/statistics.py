"""Seed statistics: is the best config better than seed noise?

Runs are grouped by experiment id (the config without the seed) or by config keys, and each metric
is summarised over the completed seeds as mean ± sample std and a Student-t 95% confidence interval.
Failed and missing seeds are reported, never averaged in.
"""

from __future__ import annotations

import difflib
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from scipy import stats

from slotsweep.errors import SlotsweepError
from slotsweep.metric_names import AGGREGATE_KEYS, higher_is_better
from slotsweep.sweeps.records import Group, Run, Stat, Table, is_result_key

__all__ = ["aggregate", "seed_stat"]


def seed_stat(values: list[float]) -> Stat:
    """Mean, sample std (ddof=1) and Student-t 95% CI of the mean over seeds."""
    n = len(values)
    if n == 0:
        return Stat(0, math.nan, math.nan, math.nan, math.nan)
    mean = math.fsum(values) / n
    if n == 1:
        return Stat(1, mean, math.nan, math.nan, math.nan)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
    return Stat(n, mean, std, mean - half, mean + half)


def _sort_key(value: Any) -> tuple:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    return (0, value, "") if numeric else (1, 0, str(value))


def aggregate(
    runs: list[Run],
    metrics: list[str] | tuple[str, ...] = AGGREGATE_KEYS,
    by: list[str] | None = None,
    planned_seeds: list[int] | None = None,
    use_best: bool = False,
) -> Table:
    """Group runs (by exp_id, or by the values of the config keys `by`) and summarise each metric.

    A seed counts for a group when its run completed; planned seeds (the sweep's, and every seed
    seen in any group) that a group lacks are reported as missing with the reason.
    """
    if not runs:
        raise SlotsweepError("no runs to aggregate (no results.json found)")
    for metric in metrics:
        if not any(metric in (run.best_metrics if use_best else run.metrics) for run in runs):
            known = sorted({k for run in runs for k in run.metrics})
            raise SlotsweepError(f"--metrics {metric}: no run has it; the runs have {known}")
    notes: list[str] = []
    buckets: dict[tuple, list[Run]] = defaultdict(list)
    seen: dict[tuple[str, int], Run] = {}
    # A seed found twice (a copied run dir, one set aside by force=true) counts once: the one in
    # its own <exp_id>/seed<k>/ dir.
    for run in sorted(runs, key=lambda r: (Path(r.source).parent.name != f"seed{r.seed}", r.source)):
        first = seen.setdefault((run.exp_id, run.seed), run)
        if first is not run:
            notes.append(
                f"{run.exp_id} seed {run.seed}: also in {run.source}, left out (counted {first.source})"
            )
            continue
        buckets[_group_key(run, by)].append(run)
    keys = list(by) if by else _differing_keys(buckets)
    groups = [
        Group(
            label=key[0] if not by else ", ".join(f"{k}={v}" for k, v in zip(by, key, strict=True)),
            params={k: members[0].config.get(k) for k in keys},
            runs=members,
        )
        for key, members in buckets.items()
    ]
    groups.sort(key=lambda g: ([_sort_key(g.params[k]) for k in keys], g.label))
    planned = set(planned_seeds or ()) | {run.seed for run in runs}
    for group in groups:
        for run in group.runs:
            if run.status != "completed":
                group.missing[run.seed] = run.status
                error = (run.error or "").strip().splitlines()
                notes.append(
                    f"{group.label} seed {run.seed}: {run.status}" + (f": {error[0]}" if error else "")
                )
        present = {run.seed for run in group.runs}
        group.missing.update({seed: "absent" for seed in sorted(planned - present)})
        for metric in metrics:
            values = []
            for run in (r for r in group.runs if r.status == "completed"):
                value = (run.best_metrics if use_best else run.metrics).get(metric)
                if value is None or not math.isfinite(value):
                    notes.append(f"{group.label} seed {run.seed}: {metric} is {value}, left out")
                else:
                    values.append(float(value))
            group.stats[metric] = seed_stat(values)
    best = {}
    for metric in metrics:
        scored = [g for g in groups if g.stats[metric].n > 0]
        sign = 1 if higher_is_better(metric) else -1
        if scored:
            best[metric] = max(scored, key=lambda g: sign * g.stats[metric].mean).label
    return Table(keys=keys, metrics=list(metrics), groups=groups, best=best, notes=notes)


def _group_key(run: Run, by: list[str] | None) -> tuple:
    if not by:
        return (run.exp_id,)
    for key in by:
        if key not in run.config:
            close = difflib.get_close_matches(key, list(run.config), n=3)
            raise SlotsweepError(f"--by {key}: not a config key of {run.source}; close keys: {close}")
    return tuple(_hashable(run.config[key]) for key in by)


def _hashable(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _differing_keys(buckets: dict[tuple, list[Run]]) -> list[str]:
    """Config keys (results-relevant, seed left out) whose values differ between groups."""
    configs = [members[0].config for members in buckets.values()]
    keys = sorted({k for config in configs for k in config if is_result_key(k)})
    return [k for k in keys if len({json.dumps(c.get(k), default=str) for c in configs}) > 1]

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scipy import stats

from slotsweep.errors import SlotsweepError
from slotsweep.evaluation.protocol import EvalProtocol
from slotsweep.metric_names import AGGREGATE_KEYS, higher_is_better
from slotsweep.results.published import Published
from slotsweep.results.records import Group, Run, Stat, Table, is_result_key

__all__ = ["aggregate", "seed_stat"]

AS_TRAINED = "as-trained"  # n_slots of a protocol that scores each run with its own slot count


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
    mix_protocols: bool = False,
    published: list[Published] | None = None,
) -> Table:
    """Group runs (by exp_id, or by the values of the config keys `by`) and summarise each metric.

    A seed counts for a group when its run completed; planned seeds (the sweep's, and every seed
    seen in any group) that a group lacks are reported as missing with the reason. Columns: each
    metric as results.json has it (one protocol, unless `mix_protocols`), then each metric under
    each protocol the runs were re-scored with (eval JSONs). `published` rows join the columns
    whose protocol they match.
    """
    if not runs:
        raise SlotsweepError("no runs to aggregate (no results.json found)")
    for metric in metrics:
        if not any(metric in source for run in runs for source in _metric_sources(run, use_best)):
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
    if by:
        notes += _pooled_differences(groups, by)
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
    columns = list(metrics)
    trained, protocol_lines = _trained_protocol(groups, mix_protocols)
    _summarise(
        groups, {m: m for m in metrics}, lambda run: run.best_metrics if use_best else run.metrics, notes
    )
    column_sets = [(trained, {m: m for m in metrics})]
    for protocol in _evaluated_protocols(groups):
        label = _protocol_label(protocol, trained)
        named = {f"{m} [{label}]": m for m in metrics}
        _summarise(groups, named, lambda run, p=protocol: _evaluated(run, p), notes)
        columns += list(named)
        column_sets.append((protocol, named))
        protocol_lines.append(f"[{label}]: {EvalProtocol.from_dict(protocol).describe()}")
    groups += _published_rows(published or [], column_sets, keys, notes)
    best = _best_groups(groups, columns, notes)
    return Table(keys=keys, metrics=columns, groups=groups, best=best, notes=notes, protocols=protocol_lines)


def _metric_sources(run: Run, use_best: bool) -> list[dict[str, float]]:
    return [run.best_metrics if use_best else run.metrics, *(e.metrics for e in run.evaluations)]


def _completed(groups: list[Group]) -> list[Run]:
    return [
        run for group in groups if group.published is None for run in group.runs if run.status == "completed"
    ]


def _summarise(
    groups: list[Group], columns: dict[str, str], values_of: Callable[[Run], dict | None], notes: list[str]
) -> None:
    """Fill group.stats[column] from each completed run's `values_of(run)[metric]`."""
    for group in groups:
        for column, metric in columns.items():
            values = []
            for run in (r for r in group.runs if r.status == "completed"):
                found = values_of(run)
                if found is None:  # not scored under this column's protocol
                    continue
                value = found.get(metric)
                if value is None or not math.isfinite(value):
                    notes.append(f"{group.label} seed {run.seed}: {column} is {value}, left out")
                else:
                    values.append(float(value))
            group.stats[column] = seed_stat(values)


def _comparable(run: Run, protocol: dict[str, Any] | None) -> dict[str, Any] | None:
    """`protocol` with n_slots "as trained" where it is the run's own slot count: a model trained
    with 11 slots and one with 7, each scored with its own, are compared under one protocol. Fields
    added since a record was written take their defaults (a record without precision was fp32)."""
    if protocol is None:
        return None
    protocol = EvalProtocol.from_dict(protocol).as_dict()
    if protocol["n_slots"] != run.config.get("grouper.n_slots"):
        return protocol
    return protocol | {"n_slots": AS_TRAINED}


def _protocol_text(protocol: dict[str, Any] | None) -> str:
    if protocol is None:
        return "not stamped (results.json written before protocol stamps)"
    return EvalProtocol.from_dict(protocol).describe()


def _trained_protocol(groups: list[Group], mix: bool) -> tuple[dict[str, Any] | None, list[str]]:
    """The one protocol of the runs' results.json metrics and its header line; two protocols in
    one column are refused unless `mix` (then each is listed with its groups, and it is None)."""
    by_protocol: dict[str, list[Run]] = defaultdict(list)
    for run in _completed(groups):
        by_protocol[json.dumps(_comparable(run, run.protocol), sort_keys=True)].append(run)
    if len(by_protocol) <= 1:
        first = _completed(groups)[0] if by_protocol else None
        protocol = _comparable(first, first.protocol) if first else None
        return protocol, [f"protocol: {_protocol_text(protocol)}"]
    (first, *_), (second, *_) = list(by_protocol.values())[:2]
    if not mix:
        a, b = _comparable(first, first.protocol), _comparable(second, second.protocol)
        if a is None or b is None:
            difference = "one is not stamped"
        else:
            a, b = EvalProtocol.from_dict(a), EvalProtocol.from_dict(b)
            difference = "; ".join(f"{k}: {x!r} vs {y!r}" for k, (x, y) in a.differences(b).items())
        raise SlotsweepError(
            f"the runs' metrics were measured under {len(by_protocol)} protocols, which one column "
            f"cannot mix ({difference}; {first.source} vs {second.source}): re-score them under one "
            f"(python src/eval.py runs=<dir> ...), aggregate them apart, or pass --mix-protocols"
        )
    lines = [f"protocols (mixed in one column by --mix-protocols, {len(by_protocol)}):"]
    for members in by_protocol.values():
        labels = sorted({g.label for g in groups for run in g.runs if run in members})
        lines.append(f"- {_protocol_text(_comparable(members[0], members[0].protocol))}: {', '.join(labels)}")
    return None, lines


def _evaluated_protocols(groups: list[Group]) -> list[dict[str, Any]]:
    """Distinct protocols of the runs' eval JSONs, in a stable order."""
    found = {}
    for run in _completed(groups):
        for evaluation in run.evaluations:
            protocol = _comparable(run, evaluation.protocol)
            found[json.dumps(protocol, sort_keys=True)] = protocol
    return [found[key] for key in sorted(found)]


def _evaluated(run: Run, protocol: dict[str, Any]) -> dict[str, float] | None:
    return next((e.metrics for e in run.evaluations if _comparable(run, e.protocol) == protocol), None)


def _protocol_label(protocol: dict[str, Any], trained: dict[str, Any] | None) -> str:
    """An eval column set's name: how its protocol differs from the trained one's."""
    if trained is None:
        return f"eval {EvalProtocol.from_dict(protocol).key()}"
    differences = EvalProtocol.from_dict(protocol).differences(EvalProtocol.from_dict(trained))
    return ", ".join(f"{k}={mine}" for k, (mine, _) in differences.items()) or "re-scored"


def _published_rows(
    published: list[Published],
    column_sets: list[tuple[dict[str, Any] | None, dict[str, str]]],
    keys: list[str],
    notes: list[str],
) -> list[Group]:
    """A row per published entry whose protocol matches a column set's; values in those columns."""
    rows = []
    for entry in published:
        stats = {}
        for protocol, columns in column_sets:
            if protocol is not None and entry.matches(protocol):
                for column, metric in columns.items():
                    if metric in entry.metrics:
                        stats[column] = seed_stat([entry.metrics[metric]])
        if stats:
            all_columns = [c for _, columns in column_sets for c in columns]
            stats = {c: stats.get(c, seed_stat([])) for c in all_columns}
            label = f"{entry.name} (published)"
            rows.append(
                Group(
                    label=label, params=dict.fromkeys(keys, "-"), runs=[], stats=stats, published=entry.source
                )
            )
            notes.append(f"{label}: {entry.source}")
    return rows


def _best_groups(groups: list[Group], columns: list[str], notes: list[str]) -> dict[str, str]:
    """Per column, the best group when its 95% CI clears the runner-up's; otherwise a tie note."""
    best = {}
    for column in columns:
        sign = 1 if higher_is_better(column) else -1
        scored = sorted(
            (g for g in groups if g.published is None and g.stats[column].n > 0),
            key=lambda g: -sign * g.stats[column].mean,
        )
        if len(scored) < 2:
            continue
        top, runner_up = scored[0].stats[column], scored[1].stats[column]
        gap = top.ci_low > runner_up.ci_high if sign > 0 else top.ci_high < runner_up.ci_low
        if gap:  # NaN intervals (one seed) compare False: no claim without an interval
            best[column] = scored[0].label
        else:
            notes.append(
                f"{column}: {scored[0].label} and {scored[1].label} tied within noise "
                f"(95% CIs overlap or need >= 2 seeds); no best marked"
            )
    return best


def _pooled_differences(groups: list[Group], by: list[str]) -> list[str]:
    """Warnings for groups whose runs differ in result keys other than `by` (and the seed)."""
    warnings = []
    for group in groups:
        configs = [run.config for run in group.runs]
        keys = sorted({k for c in configs for k in c if is_result_key(k, c) and k not in by})
        differing = {k: sorted({json.dumps(c.get(k), default=str) for c in configs}) for k in keys}
        differing = {k: v for k, v in differing.items() if len(v) > 1}
        if differing:
            listed = "; ".join(f"{k} ({', '.join(v)})" for k, v in differing.items())
            warnings.append(
                f"warning: --by {','.join(by)}: group {group.label} pools runs that also differ in {listed}"
            )
    return warnings


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
    keys = sorted({k for config in configs for k in config if is_result_key(k, config)})
    return [k for k in keys if len({json.dumps(c.get(k), default=str) for c in configs}) > 1]

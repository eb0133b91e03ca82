"""What aggregation works on: runs (one seed each), seed statistics, groups and the table.

Loaders (loaders.py) make `Run`s from results.json files or W&B; statistics.py groups them into a
`Table`; tables.py and plots.py format it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from slotsweep.runs.experiment import NON_RESULT_DECLARATION, flatten, non_result_keys

__all__ = ["Evaluation", "Group", "Run", "Stat", "Table", "flatten", "is_result_key"]


@dataclass
class Evaluation:
    """A run's final checkpoint scored by src/eval.py under a protocol (its eval JSON)."""

    protocol: dict[str, Any]  # slotsweep.evaluation.protocol.EvalProtocol.as_dict()
    metrics: dict[str, float]
    source: str


@dataclass
class Run:
    """One seed of one experiment, as results.json (or W&B) describes it."""

    exp_id: str
    seed: int
    status: str  # "completed", "failed", or what W&B says ("running", ...)
    metrics: dict[str, float]  # final validation values
    best_metrics: dict[str, float]  # best over validations
    config: dict[str, Any]  # flattened resolved config: {"grouper.n_slots": 7, ...}
    error: str | None
    source: str  # results.json path or W&B run path, for messages
    protocol: dict[str, Any] | None = None  # of `metrics`; None in results.json older than stamps
    evaluations: list[Evaluation] = field(default_factory=list)


@dataclass
class Stat:
    """A metric over the completed seeds of a group; nan where undefined (std and CI need n >= 2)."""

    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1)
    ci_low: float  # Student-t 95% confidence interval of the mean
    ci_high: float


@dataclass
class Group:
    label: str
    params: dict[str, Any]  # the config keys that differ between groups -> this group's values
    runs: list[Run]
    stats: dict[str, Stat] = field(default_factory=dict)  # column -> statistic
    published: str | None = None  # a published baseline's source (conf/baselines/), not seeds
    missing: dict[int, str] = field(default_factory=dict)  # seed -> why ("failed", "absent", ...)

    @property
    def seeds(self) -> list[int]:
        return sorted(run.seed for run in self.runs if run.status == "completed")


@dataclass
class Table:
    keys: list[str]
    metrics: list[str]  # the columns: a metric, or "<metric> [<eval protocol>]" for eval JSONs
    groups: list[Group]
    best: dict[str, str]  # column -> label of the best group, where its CI clears the runner-up's
    notes: list[str]  # failed runs' errors, NaN values, ties, warnings: printed under the table
    protocols: list[str] = field(default_factory=list)  # one line per column set, printed above


def is_result_key(key: str, config: dict[str, Any]) -> bool:
    """Whether `key` can change a result of the run whose flattened config is `config` (the
    dataset's declared keys included: runs.non_result_keys)."""
    skipped = non_result_keys(config.get(f"dataset.{NON_RESULT_DECLARATION}"))
    return not any(key == skip or key.startswith(f"{skip}.") for skip in skipped)

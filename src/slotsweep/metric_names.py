"""The validation metrics by name: one registry that everything naming a metric derives from.

The Lightning module builds and logs `val/<name>` for every entry, W&B keeps the best value of
each in the run summary, the aggregation CLI shows the `aggregate` entries by default and the
objective default is `DEFAULT_OBJECTIVE`. A new metric is one entry in `METRICS` (and its class in
slotsweep.evaluation.metrics). Kept free of torch, so the aggregation CLI and the sweeper import it cheaply.
"""

import importlib
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AGGREGATE_KEYS",
    "DEFAULT_OBJECTIVE",
    "METRICS",
    "MetricSpec",
    "higher_is_better",
    "val_key",
]


@dataclass(frozen=True)
class MetricSpec:
    """One validation metric.

    Args:
        name: logged as `val/<name>`.
        target: dotted path of its torchmetrics class; built with `options` plus the dataset's
            mask conventions (`ignore_background`, `ignore_overlaps`).
        options: the class's other constructor arguments.
        higher_is_better: the direction of "best" (W&B summary, best_metrics, aggregation).
        aggregate: a default column of the aggregation CLI (`--metrics`).
        prog_bar: shown in Lightning's progress bar.
    """

    name: str
    target: str
    options: dict[str, Any] = field(default_factory=dict)
    higher_is_better: bool = True
    aggregate: bool = False
    prog_bar: bool = False

    def build(self, **conventions: bool) -> Any:
        """A fresh metric object; `conventions` are the dataset's ignore_background/ignore_overlaps."""
        module, _, cls = self.target.rpartition(".")  # imported here: this module stays torch-free
        return getattr(importlib.import_module(module), cls)(**self.options, **conventions)

    def better(self, value: float, than: float) -> bool:
        return value > than if self.higher_is_better else value < than

    @property
    def summary(self) -> str:
        """The W&B summary that keeps its best value ("max" or "min")."""
        return "max" if self.higher_is_better else "min"


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec(
            "video_fg_ari",
            "slotsweep.evaluation.metrics.FGARI",
            {"video": True},
            aggregate=True,
            prog_bar=True,
        ),
        MetricSpec(
            "video_mbo", "slotsweep.evaluation.metrics.MBO", {"video": True}, aggregate=True, prog_bar=True
        ),
        # mIoU: mBO's IoU with one-to-one (Hungarian) matching, what later papers report beside mBO
        MetricSpec(
            "video_miou", "slotsweep.evaluation.metrics.MBO", {"video": True, "matching": "hungarian"}
        ),
        MetricSpec("image_fg_ari", "slotsweep.evaluation.metrics.FGARI", {"video": False}),
        MetricSpec("image_mbo", "slotsweep.evaluation.metrics.MBO", {"video": False}),
        MetricSpec(
            "image_miou", "slotsweep.evaluation.metrics.MBO", {"video": False, "matching": "hungarian"}
        ),
    )
}


def val_key(name: str) -> str:
    """The logged key of metric `name` (also its key in results.json and W&B)."""
    return f"val/{name}"


AGGREGATE_KEYS = tuple(val_key(name) for name, spec in METRICS.items() if spec.aggregate)
DEFAULT_OBJECTIVE = val_key("video_fg_ari")


def higher_is_better(key: str) -> bool:
    """Direction of a logged key: a registered metric's own; otherwise losses are minimised."""
    spec = METRICS.get(key.removeprefix("val/"))
    return spec.higher_is_better if spec is not None and key == val_key(spec.name) else "loss" not in key

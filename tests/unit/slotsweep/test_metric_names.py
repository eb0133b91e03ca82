"""The metric registry: every consumer of a metric name derives it from metric_names.METRICS."""

import pytest

from slotsweep.evaluation.metrics import make_metrics
from slotsweep.metric_names import AGGREGATE_KEYS, DEFAULT_OBJECTIVE, METRICS, higher_is_better, val_key


@pytest.mark.parametrize("name", list(METRICS))
def test_each_entry_builds_its_metric_with_the_declared_direction(name: str) -> None:
    spec = METRICS[name]
    metric = spec.build(ignore_background=True, ignore_overlaps=False)
    assert metric.ignore_background is True and metric.ignore_overlaps is False
    assert type(metric).higher_is_better is spec.higher_is_better  # torchmetrics' own flag
    assert spec.summary == ("max" if spec.higher_is_better else "min")
    assert higher_is_better(val_key(name)) is spec.higher_is_better


def test_module_metrics_are_the_registry() -> None:
    metrics = make_metrics(ignore_background=False, ignore_overlaps=True)
    assert list(metrics) == list(METRICS)
    assert metrics.ignore_overlaps is True


def test_defaults_derive_from_the_registry(compose_train) -> None:
    assert list(compose_train().objective) == [DEFAULT_OBJECTIVE]
    assert DEFAULT_OBJECTIVE.removeprefix("val/") in METRICS
    assert AGGREGATE_KEYS and all(key.removeprefix("val/") in METRICS for key in AGGREGATE_KEYS)


def test_unregistered_keys_fall_back_to_losses_being_minimised() -> None:
    assert higher_is_better("val/loss") is False
    assert higher_is_better("train/timesim") is True  # a name without "loss" counts as a score
    assert higher_is_better("train/video_fg_ari_loss") is False

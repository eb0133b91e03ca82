"""Search spaces in Hydra's override syntax, as Optuna distributions.

`loss.timesim.weight=tag(log, interval(0.01, 1))`, `grouper.n_slots=range(3, 12)` or
`encoder=choice(dino_vits16, dinov2_vits14)` on the command line or in `hydra.sweeper.params`
become Optuna distributions; plain overrides (`trainer=debug`) go unchanged to every job.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Quote, QuotedString
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from slotsweep.errors import SlotsweepError

__all__ = ["SearchSpace", "parse_search_space", "override_string", "TAGS"]

TAGS = ("log", "int")  # tag(log, interval(a, b)): log scale; tag(int, interval(a, b)): integers


@dataclass
class SearchSpace:
    """Sweep arguments split into what Optuna samples and what every job gets unchanged.

    distributions: {override key: distribution} of the swept keys, in argument order.
    listed: {override key: values} of the keys swept over listed values (choice, range), which is
        what the grid sampler enumerates.
    fixed: the other overrides, as typed (`key=value`, `group=option`, `~key`).
    """

    distributions: dict[str, BaseDistribution]
    listed: dict[str, list[Any]]
    fixed: list[str]

    def grid(self) -> dict[str, list[Any]]:
        """{key: values} for optuna.samplers.GridSampler; every swept key must be listed."""
        continuous = [key for key in self.distributions if key not in self.listed]
        if continuous:
            raise SlotsweepError(
                f"hydra/sweeper/sampler=grid needs listed values, but {continuous} are intervals: "
                "use choice(a, b, ...) or range(start, stop, step) for them, or another sampler"
            )
        return dict(self.listed)


def parse_search_space(arguments: Sequence[str], config_loader: Any = None) -> SearchSpace:
    """Parse overrides such as `loss.timesim.weight=tag(log, interval(0.01, 1))`.

    A later argument replaces an earlier one with the same key, so command-line sweeps win over
    `hydra.sweeper.params` (which come first). `config_loader` is needed for `glob(...)` only.
    """
    parser = OverridesParser.create(config_loader=config_loader)
    distributions: dict[str, BaseDistribution] = {}
    listed: dict[str, list[Any]] = {}
    fixed: dict[str, str] = {}
    for override in parser.parse_overrides(list(arguments)):
        key = override.get_key_element()
        distributions.pop(key, None)
        listed.pop(key, None)
        fixed.pop(key, None)
        if not override.is_sweep_override():
            fixed[key] = override.input_line
            continue
        try:
            distributions[key], values = _distribution(override)
        except ValueError as error:  # Optuna's own checks (low > high, log with step, ...)
            raise SlotsweepError(f"{override.input_line}: {error}") from error
        if values is not None:
            listed[key] = values
    return SearchSpace(distributions, listed, list(fixed.values()))


def _distribution(override: Override) -> tuple[BaseDistribution, list[Any] | None]:
    """The distribution of one sweep override, and its listed values (None for an interval)."""
    sweep = override.value()
    tags = set(sweep.tags)
    unknown = tags.difference(TAGS)
    if unknown:
        raise SlotsweepError(f"{override.input_line}: unknown tag {sorted(unknown)}; allowed: {list(TAGS)}")
    log_scale = "log" in tags
    if override.is_choice_sweep():
        if tags:
            raise SlotsweepError(f"{override.input_line}: tags apply to interval() and range(), not choices")
        values = [
            value.text if isinstance(value, QuotedString) else value for value in override.sweep_iterator()
        ]
        nested = [value for value in values if isinstance(value, (list, dict))]
        if nested:
            raise SlotsweepError(
                f"{override.input_line}: choices must be numbers, strings or bools, not {nested}"
            )
        return CategoricalDistribution(values), values
    if override.is_range_sweep():
        values = list(override.sweep_iterator())
        if not values:
            raise SlotsweepError(f"{override.input_line}: the range is empty")
        low, high, step = min(values), max(values), abs(sweep.step)
        if all(isinstance(value, int) for value in values):
            return IntDistribution(low, high, step=step, log=log_scale), values
        return FloatDistribution(low, high, step=step, log=log_scale), values
    # interval(a, b): continuous, or integers with tag(int, ...)
    if "int" in tags:
        return IntDistribution(int(sweep.start), int(sweep.end), log=log_scale), None
    return FloatDistribution(float(sweep.start), float(sweep.end), log=log_scale), None


def override_string(key: str, value: Any) -> str:
    """`key=value` in override syntax; a string that would read as another type (`'1.5'`) is quoted."""
    text = f"{key}={Override._get_value_element_as_str(value)}"
    if isinstance(value, str) and OverridesParser.create().parse_override(text).value() != value:
        text = f"{key}={QuotedString(text=value, quote=Quote.single).with_quotes()}"
    return text

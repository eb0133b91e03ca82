"""Constructor-argument checks shared by the datamodules: one message format for every dataset."""

import numpy as np

from slotsweep.errors import SlotsweepError

__all__ = ["check", "check_positive_ints", "is_int"]


def check(ok: bool, key: str, value: object, allowed: str) -> None:
    """Raise `dataset.<key>=<value> is invalid: <allowed>` unless ok."""
    if not ok:
        raise SlotsweepError(f"dataset.{key}={value!r} is invalid: {allowed}")


def is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def check_positive_ints(values: dict[str, object]) -> None:
    """Every {key: value} must be an integer >= 1 (counts, sizes, batch sizes)."""
    for key, value in values.items():
        check(is_int(value) and value >= 1, key, value, "must be an integer >= 1")

"""What the entry points share: bad input is one line on stderr and a non-zero exit.

In a single run a SlotsweepError (also one that Hydra's `instantiate` wrapped) becomes
`error: <message>` and exit code 2. In a multirun the error is re-raised, so the launcher records
the job as failed and the sweep goes on.
"""

import functools
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from slotsweep.errors import SlotsweepError

__all__ = ["MOVED_KEYS", "exit_with_error", "refuse_moved_keys", "report_errors"]


def exit_with_error(error: BaseException | str) -> NoReturn:
    """Bad input: one `error: ...` line on stderr, exit code 2 (what every entry point promises)."""
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


# Keys that moved, with what to write instead: Hydra's own error for them ("Could not override")
# does not say where they went.
MOVED_KEYS = {
    "encoder.cache": "cache=true (the location is paths.features_dir=<dir>): the cache is no encoder setting",
}


def refuse_moved_keys(overrides: list[str]) -> None:
    """Exit with one line if a command-line override sets a key of MOVED_KEYS."""
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if key in MOVED_KEYS:
            exit_with_error(f"{override}: {key} is gone; use {MOVED_KEYS[key]}")


def _user_error(error: BaseException | None) -> SlotsweepError | None:
    """The SlotsweepError behind `error`: raised as is, or wrapped by Hydra's `instantiate`
    (InstantiationException, raised `from` the constructor's error, once per nesting level)."""
    while error is not None and not isinstance(error, SlotsweepError):
        error = error.__cause__
    return error


def report_errors(task: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return task(*args, **kwargs)
        except Exception as error:
            user_error = _user_error(error)
            multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
            if user_error is None or multirun:
                raise
            exit_with_error(user_error)

    return wrapper

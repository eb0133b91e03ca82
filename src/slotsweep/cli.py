"""What the entry points share: bad input is one line on stderr and a non-zero exit.

In a single run a SlotsweepError becomes `error: <message>` and exit code 2. In a multirun the
error is re-raised, so the launcher records the job as failed and the sweep goes on.
"""

import functools
import sys
from collections.abc import Callable
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from slotsweep.errors import SlotsweepError

__all__ = ["report_errors"]


def report_errors(task: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return task(*args, **kwargs)
        except SlotsweepError as error:
            if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
                raise
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    return wrapper

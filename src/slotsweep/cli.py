"""What the entry points share: an error the user caused is one line on stderr and exit code 2.

`report_errors` wraps a whole entry point, Hydra included, so errors from composing the config,
building parts (Hydra's `instantiate`), the trainer, the sweeper's storage or the launcher all
reach one place. There, a SlotsweepError anywhere in the exception's chain is printed as it is,
and the exceptions other libraries raise for bad input (KNOWN_LIBRARY_ERRORS) are turned into one
line naming the key or file. Anything else is a bug and keeps its traceback, as does every error
with SLOTSWEEP_DEBUG=1 or HYDRA_FULL_ERROR=1.

In a multirun a trial's error never reaches this boundary: Hydra's launcher records the job as
failed and the sweep goes on. An error that stops the sweep itself (a bad storage URL, no SLURM)
does, and is one line like any other.
"""

import difflib
import functools
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from slotsweep.errors import SlotsweepError

__all__ = [
    "KNOWN_LIBRARY_ERRORS",
    "MultirunSummary",
    "exit_with_error",
    "expand_shorthands",
    "split_options",
    "report_errors",
    "require_paths",
    "user_message",
]

DEBUG_VARIABLES = ("SLOTSWEEP_DEBUG", "HYDRA_FULL_ERROR")  # =1: tracebacks for developers


def exit_with_error(error: BaseException | str) -> NoReturn:
    """Bad input: one `error: ...` line on stderr, exit code 2 (what every entry point promises)."""
    print(f"error: {_one_line(str(error))}", file=sys.stderr)
    sys.exit(2)


def _one_line(text: str) -> str:
    return " ".join(text.split())


# `encoder.cache=true|false|<dir>` is the spelling the issue tracker, older docs and users' scripts
# use; the cache is not an encoder argument any more (conf/train.yaml `cache`, location
# `paths.features_dir`), so the command line keeps that spelling as a shorthand, rewritten here
# before Hydra composes (Hydra would refuse the key: the encoder has no `cache` argument).
CACHE_SHORTHAND = "encoder.cache"
_OFF = ("false", "null", "none", "0")
_ON = ("true", "1")


def expand_shorthands(overrides: list[str]) -> list[str]:
    """Command-line overrides with `encoder.cache=<v>` written out.

    `encoder.cache=true` -> `cache=true`; `=false|null` -> `cache=false`; `=<dir>` -> `cache=true
    paths.features_dir=<dir>`. A sweep over it (`encoder.cache=true,false`) or a deletion is refused
    with one line naming the keys to sweep instead.
    """
    expanded = []
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key != CACHE_SHORTHAND:
            expanded.append(override)
            continue
        if override.startswith("~") or not value or "," in value or "(" in value:
            exit_with_error(
                f"{override}: {CACHE_SHORTHAND} takes one value, true, false or a directory; to sweep or "
                "unset the cache use cache=true,false and paths.features_dir=<dir>"
            )
        if value.lower() in _OFF:
            expanded.append("cache=false")
        elif value.lower() in _ON:
            expanded.append("cache=true")
        else:
            expanded += ["cache=true", f"paths.features_dir={value}"]
    return expanded


def split_options(arguments: list[str], options: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """An entry point's own `key=value` options (`options`: their defaults) apart from the Hydra
    overrides they are mixed with; a key given twice is an error."""
    chosen, overrides, seen = dict(options), [], set()
    for argument in arguments:
        key, equals, value = argument.partition("=")
        if equals and key in options:
            if key in seen:
                exit_with_error(f"{key} is given twice ({chosen[key]}, {value}): give it once")
            chosen[key], _ = value, seen.add(key)
        else:
            overrides.append(argument)
    return chosen, overrides


def _instantiation(error: BaseException) -> str:
    """Hydra's `Error in call to target 'X': ValueError(...) full_key: optim` as `optim: ...`."""
    key = re.search(r"full_key: (\S+)", str(error))
    cause = error.__cause__
    reason = f"{type(cause).__name__}: {cause}" if cause is not None else str(error).split("\n")[0]
    return f"{key.group(1) if key else 'config'}: {reason}"


def _with_cause(error: BaseException) -> str:
    """Hydra prints OmegaConf's cause (the key and the allowed values) under its own message."""
    message = str(error).split("\nConfig search path")[0]  # Hydra's search path: noise to a user
    cause = error.__cause__
    return f"{message} ({cause})" if cause is not None and str(cause) not in message else message


def _composition(error: BaseException) -> str:
    """An override of a key the config lacks: the closest existing keys, not Hydra's advice to add
    it with `+` (a typo is far more likely than a new key)."""
    cause = error.__cause__
    parent = getattr(cause, "parent_node", None)
    full_key = getattr(cause, "full_key", None)
    if (
        parent is None
        or not full_key
        or type(cause).__name__ not in ("ConfigAttributeError", "ConfigKeyError")
    ):
        return _with_cause(error)
    prefix, _, name = full_key.rpartition(".")
    keys = sorted(k for k in parent if isinstance(k, str) and k != "hydra" and not k.startswith("_"))
    close = difflib.get_close_matches(name, keys, n=3, cutoff=0.6)
    if close:
        dotted = [f"{prefix}.{k}" if prefix else k for k in close]
        return f"{full_key}: no such key; did you mean {' or '.join(dotted)}?"
    return f"{full_key}: no such key; {prefix or 'the config'} has {', '.join(keys)}"


def _os_error(error: BaseException) -> str:
    assert isinstance(error, OSError)
    where = error.filename if error.filename is not None else "a file"
    return f"{where}: {error.strerror or error}: check the path and its permissions"


# Exception class (module.qualname, matched along the MRO; the first entry that matches wins) ->
# its one-line message. Names, not imports: the entry point must not import SQLAlchemy to report a typo.
KNOWN_LIBRARY_ERRORS: dict[str, Callable[[BaseException], str]] = {
    "hydra.errors.InstantiationException": _instantiation,
    "hydra.errors.ConfigCompositionException": _composition,  # an unknown key: the closest ones
    "hydra.errors.HydraException": _with_cause,  # compose errors: unknown option or key, bad override
    "omegaconf.errors.OmegaConfBaseException": str,  # a value of the wrong type, a missing `???`
    "lightning.fabric.utilities.exceptions.MisconfigurationException": lambda e: f"trainer: {e}",
    "sqlalchemy.exc.SQLAlchemyError": lambda e: f"hydra.sweeper.storage: {str(e).splitlines()[0]}",
    "optuna.exceptions.OptunaError": lambda e: f"hydra.sweeper: {e}",
    "submitit.core.utils.UncompletedJobError": lambda e: f"hydra.launcher: {e}",
    "builtins.OSError": _os_error,  # unwritable runs dir, full disk, unreadable file: names the path
}


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def user_message(error: BaseException) -> str | None:
    """The one-line message for an error the user caused, or None for a bug."""
    for link in _chain(error):
        if isinstance(link, SlotsweepError):
            return str(link)
    for link in _chain(error):
        classes = {f"{cls.__module__}.{cls.__qualname__}" for cls in type(link).__mro__}
        for name, describe in KNOWN_LIBRARY_ERRORS.items():  # in order: Hydra's IOError is Hydra's
            if name in classes:
                return _one_line(describe(link))
    if isinstance(error, RuntimeError) and 'Could not detect "srun"' in str(error):  # submitit's
        return "hydra/launcher=slurm_*: no SLURM on this machine (srun not found); use hydra/launcher=local"
    return None


def require_paths(cfg: Any, wanted: dict[str, str]) -> None:
    """Refuse at once if a path the user named does not exist: `wanted` maps keys of `cfg` to what
    they should be ("a checkpoint file"); a key set to null is not checked. Entry points call this
    before torch is imported, so a typo in a path is answered in about a second."""
    for key, what in wanted.items():
        value = cfg[key]
        if value is not None and not os.path.exists(value):
            exit_with_error(f"{key}={value} does not exist: give {what}")


def report_errors(entry_point: Callable[..., Any]) -> Callable[..., Any]:
    """Run an entry point (a @hydra.main or argparse main); bad input exits 2 with one line."""

    @functools.wraps(entry_point)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = any(os.environ.get(name) == "1" for name in DEBUG_VARIABLES)
        hydra_full_error = os.environ.get("HYDRA_FULL_ERROR")
        os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing: errors come here
        try:
            return entry_point(*args, **kwargs)
        except Exception as error:
            message = None if debug else user_message(error)
            if message is None:
                raise
            exit_with_error(message)
        finally:  # as it was: a later entry point in this process must not see ours
            if hydra_full_error is None:
                os.environ.pop("HYDRA_FULL_ERROR", None)
            else:
                os.environ["HYDRA_FULL_ERROR"] = hydra_full_error

    return wrapper


class MultirunSummary(Callback):
    """How a grid or a sweep ends (conf/train.yaml `hydra.callbacks`): with where its runs are and
    the command that tabulates them, so the user need not look up the sweep's timestamp; and
    without the empty `.submitit/%j` folder that submitit's local jobs leave in the sweep dir (each
    job's controller makes the folder pattern itself before filling in its id)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        # The same config object the launcher resolved the sweep dir from: ${now:} gives the same time.
        sweep_dir = Path(config.hydra.sweep.dir)
        stray = sweep_dir / ".submitit" / "%j"
        if stray.is_dir() and not any(stray.iterdir()):
            stray.rmdir()
        print(
            f"multirun done: runs in {config.paths.runs_dir}/<exp_id>/seed<k>; "
            f"mean ± std over seeds: python src/aggregate.py {sweep_dir}"
        )

"""Where runs come from: results.json files below a dir, a Hydra multirun dir, or a W&B project.

- any directory holding run dirs (`runs/`, `runs/<exp_id>/`): every results.json below it;
- a Hydra multirun dir (it has `multirun.yaml`): the runs whose config that sweep produced, found
  under its `paths.runs_dir`; its `seed=` sweep gives the planned seeds;
- `wandb:<entity>/<project>`: the project's runs through the W&B API (needs network).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep
from hydra.errors import OverrideParseException
from omegaconf import OmegaConf

from slotsweep.errors import SlotsweepError
from slotsweep.results.records import Evaluation, Run, flatten, is_result_key
from slotsweep.runs.experiment import EVAL_DIR, RESULTS_FILE

__all__ = ["load_local", "load_wandb"]


def _evaluations(run_dir: Path) -> list[Evaluation]:
    """The run's eval JSONs of its final checkpoint (src/eval.py) that carry a protocol."""
    found = []
    for path in sorted((run_dir / EVAL_DIR).glob("*.json")):
        record = json.loads(path.read_text())
        if "protocol" in record and record.get("final"):
            found.append(Evaluation(record["protocol"], record.get("metrics") or {}, str(path)))
    return found


def _run_from_results(results: dict[str, Any], source: str) -> Run:
    return Run(
        exp_id=results["exp_id"],
        seed=int(results["seed"]),
        status=results["status"],
        metrics=results.get("metrics") or {},
        best_metrics=results.get("best_metrics") or {},
        config=flatten(results.get("config") or {}),
        error=results.get("error"),
        source=source,
        protocol=results.get("protocol"),
        evaluations=_evaluations(Path(source).parent),
    )


def _read_runs(directories: list[Path]) -> list[Run]:
    """The runs of every results.json below `directories`; an unreadable one is skipped with a
    warning on stderr (one damaged file must not hide the rest of a sweep)."""
    paths = {path.resolve() for d in directories if d.is_dir() for path in d.rglob(RESULTS_FILE)}
    runs = []
    for path in sorted(paths):
        try:
            runs.append(_run_from_results(json.loads(path.read_text()), str(path)))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            print(f"warning: skipped {path}: unreadable ({type(e).__name__}: {e})", file=sys.stderr)
    if not runs:
        names = " or ".join(str(d) for d in directories)
        raise SlotsweepError(f"no readable {RESULTS_FILE} below {names}: pass a runs or multirun dir")
    return runs


def load_local(source: Path) -> tuple[list[Run], list[int]]:
    """Runs below `source` and the seeds the sweep planned ([] when unknown).

    A Hydra multirun dir holds no results itself: its `multirun.yaml` says which configs it ran,
    and those runs are looked up under its `paths.runs_dir`.
    """
    if not source.is_dir():
        raise SlotsweepError(
            f"{source} is not a directory; pass a runs dir, a multirun dir or wandb:<entity>/<project>"
        )
    if not (source / "multirun.yaml").is_file():
        return _read_runs([source]), []
    config = OmegaConf.load(source / "multirun.yaml")
    runs_dir = _runs_dir_of_sweep(config, source)
    hydra = config.pop("hydra")
    reference = flatten(OmegaConf.to_container(config, resolve=True))
    allowed, free, planned = _sweep_space(hydra)
    runs = [
        run
        for run in _read_runs([source, runs_dir])
        if _in_sweep(run.config, reference, allowed, free) and (not planned or run.seed in planned)
    ]
    return runs, planned


def _runs_dir_of_sweep(config: Any, sweep_dir: Path) -> Path:
    """The runs dir the sweep wrote to: as many levels above sweep_dir as `hydra.sweep.dir` is below
    `paths.runs_dir` (runs/multirun/<time>, runs/sweeps/<sweep>/<exp_name>). Re-resolving
    paths.runs_dir alone would use this shell's env variables and working directory."""
    pattern = OmegaConf.to_container(config.hydra.sweep, resolve=False)["dir"]  # ${now:} needs Hydra
    runs_dir = Path(config.paths.runs_dir)
    prefix = "${paths.runs_dir}/"
    if pattern.startswith(prefix):
        depth = len(Path(pattern.removeprefix(prefix)).parts)
    elif Path(pattern).is_relative_to(runs_dir):  # a literal dir, e.g. hydra.sweep.dir=runs/sweeps/mine
        depth = len(Path(pattern).relative_to(runs_dir).parts)
    else:  # the sweep dir was set outside the runs dir
        return runs_dir
    return sweep_dir.resolve().parents[depth - 1]


def _sweep_space(hydra: Any) -> tuple[dict[str, list[Any]], list[str], list[int]]:
    """From multirun.yaml's hydra node: {swept key: values}, free key prefixes, planned seeds."""
    parser = OverridesParser.create()
    groups = set(hydra.runtime.choices)
    # Sweeper `params` (the basic sweeper's and Optuna's search space) sweep like CLI overrides.
    params = [f"{key}={value}" for key, value in (hydra.sweeper.get("params") or {}).items()]
    allowed: dict[str, list[Any]] = {}
    free: list[str] = []
    for text in [*params, *hydra.overrides.task]:  # the command line wins, as in Hydra
        try:
            override = parser.parse_override(text)
        except OverrideParseException:  # a sweeper's own search-space syntax: any value belongs
            free.append(text.split("=", 1)[0])
            continue
        key = override.key_or_group
        if not override.is_sweep_override():
            continue
        options = [] if isinstance(override.value(), IntervalSweep) else list(override.sweep_iterator())
        global_keys = _global_group_keys(hydra, key, options)  # None: not a _global_ group
        if global_keys is not None:  # a method or experiment: each option sets keys anywhere
            free.extend([key, *global_keys])
        elif key in groups or isinstance(override.value(), IntervalSweep):
            free.append(key)  # a swept group changes every key below it; an interval has no list
        else:
            allowed[key] = options
    # The Optuna sweeper runs every trial with each of `hydra.sweeper.seeds`.
    seeds = allowed.pop("seed", None) or hydra.sweeper.get("seeds") or []
    return allowed, free, sorted(int(seed) for seed in seeds)


def _global_group_keys(hydra: Any, group: str, options: list[Any]) -> list[str] | None:
    """The keys that a swept config group of the `_global_` package may set (`+method=a,b`,
    `experiment=a,b`): every key its options' bodies set and every group their defaults override,
    read from the sweep's own config folders. None when `group` is no such group."""
    sources = OmegaConf.select(hydra, "runtime.config_sources", default=None) or []
    folders = [Path(s.path) for s in sources if s.schema == "file"]
    files = [f / group / f"{option}.yaml" for option in options for f in folders]
    files = [f for f in files if f.is_file()]
    if not files or not any(f.read_text().startswith("# @package _global_") for f in files):
        return None
    keys: list[str] = []
    seen: set[Path] = set()
    while files:
        path = files.pop()
        if path in seen:
            continue
        seen.add(path)
        body = yaml.safe_load(path.read_text()) or {}
        for entry in body.pop("defaults", []):
            name, option = next(iter(entry.items())) if isinstance(entry, dict) else (entry, None)
            name = name.removeprefix("override ").strip()
            if name.startswith("/"):  # another group, e.g. /loss or /grouper/initializer@grouper.initializer
                package = name.split("@")[1] if "@" in name else name.lstrip("/").replace("/", ".")
                keys.append(package)
            elif name != "_self_":  # an option of the same group (a preset building on another)
                files += [f for f in (fo / group / f"{name}.yaml" for fo in folders) if f.is_file()]
        keys += list(flatten(body))
    return keys


def _in_sweep(config: dict[str, Any], reference: dict[str, Any], allowed: dict, free: list[str]) -> bool:
    for key in set(config) | set(reference):
        if not is_result_key(key, config) or any(key == f or key.startswith(f"{f}.") for f in free):
            continue
        if key in allowed:
            if config.get(key) not in allowed[key]:
                return False
        elif config.get(key) != reference.get(key):
            return False
    return True


def load_wandb(project: str) -> list[Run]:
    """Runs of a W&B project (`entity/project`) with the fields results.json would hold."""
    import wandb

    runs = []
    for run in wandb.Api().runs(project):
        summary = dict(run.summary)
        # define_best_summaries stores {"max" or "min": .., "last": ..}; other runs keep plain numbers.
        final = {k: v["last"] if isinstance(v, dict) else v for k, v in summary.items() if _number(v, "last")}
        best = {
            k: v[extreme]
            for k, v in summary.items()
            for extreme in ("max", "min")
            if isinstance(v, dict) and _number(v, extreme)
        }
        state = {"finished": "completed", "crashed": "failed", "failed": "failed"}.get(run.state, run.state)
        config = dict(run.config)
        protocol = config.pop("protocol", None)  # tracking.stamp_protocol
        runs.append(
            Run(
                exp_id=run.group or run.id,
                seed=int(run.config.get("seed", -1)),
                status=state,
                metrics=final,
                best_metrics=best,
                config=flatten(config),
                error=None if state == "completed" else f"W&B state {run.state}",
                source=f"wandb:{project}/{run.id}",
                protocol=protocol,
            )
        )
    return runs


def _number(value: Any, part: str) -> bool:
    value = value.get(part) if isinstance(value, dict) else value
    return isinstance(value, (int, float)) and not isinstance(value, bool)

"""src/eval.py: score one checkpoint, or re-score every completed run of a runs/sweep dir.

Each scoring writes `<run_dir>/eval/<ckpt stem>-<protocol key>.json` holding the protocol
(slotsweep.evaluation.protocol) and the metrics, so aggregate.py tabulates it under its protocol. A
run already scored under the requested protocol and metric version is skipped (force=true re-scores
it). A list of slot counts (`n_slots=[5,7,9,11]`) scores each in turn: one eval JSON per count.
"""

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from slotsweep.build import build_datamodule, checkpoint_config
from slotsweep.config import check_config
from slotsweep.contracts import DataModule
from slotsweep.errors import SlotsweepError
from slotsweep.evaluation.jandf import JandF
from slotsweep.evaluation.protocol import EvalProtocol, protocol_of
from slotsweep.metric_names import METRICS, val_key
from slotsweep.results.loaders import load_local
from slotsweep.runs.checkpoint_files import LAST_CHECKPOINT
from slotsweep.runs.experiment import EVAL_DIR
from slotsweep.training.quiet import quiet_lightning
from slotsweep.training.task import build_task

__all__ = ["evaluate", "eval_path", "scores_table"]

log = logging.getLogger(__name__)


def eval_path(ckpt: Path, protocol: EvalProtocol) -> Path:
    """Where the scores of `ckpt` under `protocol` go: the eval/ dir of the checkpoint's run."""
    return ckpt.parent.parent / EVAL_DIR / f"{ckpt.stem}-{protocol.key()}.json"


def _slot_counts(cfg: DictConfig) -> list[int | None]:
    n_slots = cfg.n_slots
    if n_slots is None or isinstance(n_slots, int):
        return [n_slots]
    return list(n_slots)


def _train_config(ckpt: Path, config: Path | None, cfg: DictConfig) -> DictConfig:
    """The config that rebuilds the checkpoint's model (build.checkpoint_config: the run's config,
    `config`, else the one the checkpoint carries; the overrides) with the command line's dataset
    keys (those not null)."""
    trained = checkpoint_config(ckpt, config, list(cfg.overrides), cfg.allow_pickle)
    dataset = {k: v for k, v in OmegaConf.to_container(cfg.dataset).items() if v is not None}
    unknown = [f"dataset.{k}={v}" for k, v in dataset.items() if k not in trained.dataset]
    if unknown:
        raise SlotsweepError(
            f"{', '.join(unknown)}: the dataset of {ckpt} ({trained.dataset._target_}) has no such "
            f"key; leave it null"
        )
    train_cfg = OmegaConf.merge(trained, {"dataset": dataset})
    check_config(train_cfg)  # once per checkpoint, before anything is built
    return train_cfg


def _protocol(
    train_cfg: DictConfig, cfg: DictConfig, n_slots: int | None, datamodule: DataModule | None = None
) -> EvalProtocol:
    """The protocol of scoring with this config, from the datamodule's declarations (not set up)."""
    datamodule = build_datamodule(train_cfg.dataset) if datamodule is None else datamodule
    n_slots = train_cfg.grouper.n_slots if n_slots is None else n_slots  # None: as trained
    return protocol_of(datamodule, n_slots, cfg.masks, cfg.limit_batches)


def score_checkpoint(
    ckpt: Path, train_cfg: DictConfig, cfg: DictConfig, n_slots: int | None
) -> dict[str, Any]:
    """Validate `ckpt` under the eval options; write and return its eval record."""
    datamodule = build_datamodule(train_cfg.dataset)
    protocol = _protocol(train_cfg, cfg, n_slots, datamodule)
    datamodule, module = build_task(train_cfg, "validate", datamodule, ckpt)
    module.eval_seed, module.eval_n_slots, module.eval_masks = cfg.eval_seed, n_slots, cfg.masks
    if cfg.jandf:
        module.jandf = JandF(datamodule.ignore_background, datamodule.ignore_overlaps)
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        logger=False,
        limit_val_batches=cfg.limit_batches,
        enable_progress_bar=False,
    )
    metrics = {
        k: float(v) for k, v in trainer.validate(module, datamodule=datamodule, verbose=False)[0].items()
    }
    record = {
        "ckpt": str(ckpt),
        "final": ckpt.resolve() == (ckpt.parent.parent / LAST_CHECKPOINT).resolve(),  # aggregated
        "n_slots": n_slots,
        "eval_seed": cfg.eval_seed,
        "limit_batches": cfg.limit_batches,
        "protocol": protocol.as_dict(),
        "metrics": metrics,
    }
    out = eval_path(ckpt, protocol)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    return record


def scores_table(records: list[dict[str, Any]]) -> str:
    """What a user of eval.py came for: a Markdown table (one row per value written, the
    registry's metrics first; one column per scored checkpoint and slot count), then each
    column's protocol and file."""
    several_runs = len({r["ckpt"] for r in records}) > 1
    labels = [_label(r, several_runs) for r in records]
    written = {key for r in records for key in r["metrics"]}
    registry = [val_key(name) for name in METRICS if val_key(name) in written]
    rows = ["| value | " + " | ".join(labels) + " |", "|---" * (len(records) + 1) + "|"]
    for key in registry + sorted(written - set(registry)):
        cells = [f"{r['metrics'][key]:.4f}" if key in r["metrics"] else "" for r in records]
        rows.append(f"| {key} | " + " | ".join(cells) + " |")
    for label, r in zip(labels, records, strict=True):
        protocol = EvalProtocol.from_dict(r["protocol"])
        where = eval_path(Path(r["ckpt"]), protocol)
        rows.append(
            f"{label}: {r['ckpt']} (eval_seed={r['eval_seed']}): {protocol.describe()}; wrote {where}"
        )
    return "\n".join(rows)


def _label(record: dict[str, Any], several_runs: bool) -> str:
    """A column's name: the run (`<exp_id>/seed<k>`) when several are scored, and the slot count."""
    slots = "as trained" if record["n_slots"] is None else str(record["n_slots"])
    ckpt = Path(record["ckpt"])
    run = f"{ckpt.parent.parent.parent.name}/{ckpt.parent.parent.name} " if several_runs else ""
    return f"{run}n_slots={slots}"


def _rescore_runs(source: Path, cfg: DictConfig) -> list[dict[str, Any]]:
    """Score the final checkpoint of every completed run below `source` that lacks this protocol."""
    runs, _ = load_local(source)
    completed = [run for run in runs if run.status == "completed"]
    if not completed:
        raise SlotsweepError(f"runs={source}: no completed run (no results.json with status completed)")
    records, skipped = [], 0
    for run in completed:
        run_dir = Path(run.source).parent
        ckpt = run_dir / LAST_CHECKPOINT
        if not ckpt.is_file():
            log.warning(f"{run_dir}: completed but {LAST_CHECKPOINT} is missing; not re-scored")
            continue
        config = run_dir / "config.yaml"  # as the checkpoint's own; older checkpoints lack that
        train_cfg = _train_config(ckpt, config if config.is_file() else None, cfg)
        for n_slots in _slot_counts(cfg):
            if eval_path(ckpt, _protocol(train_cfg, cfg, n_slots)).is_file() and not cfg.force:
                skipped += 1
                continue
            records.append(score_checkpoint(ckpt, train_cfg, cfg, n_slots))
    print(
        f"re-scored {len(records)} checkpoint(s) of {len(completed)} completed run(s) below {source}; "
        f"{skipped} already scored under this protocol (force=true re-scores them)"
    )
    return records


def evaluate(cfg: DictConfig) -> list[dict[str, Any]]:
    """conf/eval.yaml: `ckpt=<file>` scores one checkpoint, `runs=<dir>` re-scores a whole dir."""
    quiet_lightning()
    if (cfg.ckpt is None) == (cfg.runs is None):
        raise SlotsweepError(
            f"ckpt={cfg.ckpt} runs={cfg.runs}: give exactly one, a checkpoint file "
            f"(<run_dir>/{LAST_CHECKPOINT}) or a runs/sweep dir"
        )
    if cfg.runs is not None:
        records = _rescore_runs(Path(cfg.runs), cfg)
    else:
        ckpt = Path(cfg.ckpt)
        train_cfg = _train_config(ckpt, None if cfg.config is None else Path(cfg.config), cfg)
        records = [score_checkpoint(ckpt, train_cfg, cfg, n_slots) for n_slots in _slot_counts(cfg)]
    if records:
        print(scores_table(records))
    return records

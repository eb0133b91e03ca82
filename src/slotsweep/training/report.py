"""The end-of-run mask report: model vs baselines on the same clips, a table and pictures.

Scores the decoder masks (the official ones), the slot-attention masks and the trivial baselines
with the same metric code over the whole validation set, and writes a PNG grid per clip and a GIF.
"""

import json
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import move_data_to_device

from slotsweep.evaluation.baselines import BASELINES
from slotsweep.evaluation.masks import hard_masks, resize_patch_masks
from slotsweep.evaluation.metrics import make_metrics
from slotsweep.evaluation.visualize import MASK_NAMES, clip_grid, overlay, save_gif, save_png
from slotsweep.metric_names import METRICS
from slotsweep.training.module import ObjectCentricModule
from slotsweep.training.pictures import first_clips

__all__ = ["format_table", "mask_report", "show_report", "write_report"]

MODEL_DECODER = f"model: {MASK_NAMES['decoder']}"
MODEL_GROUPING = f"model: {MASK_NAMES['grouping']}"


@torch.no_grad()
def mask_report(
    module: ObjectCentricModule,
    datamodule: L.LightningDataModule,
    directory: Path,
    n_clips: int = 4,
    gif: bool = True,
) -> dict[str, dict[str, float]]:
    """{row name: {metric: value}} for the model and the baselines; pictures go to <directory>/masks/."""
    module.eval()
    datamodule.setup("validate")
    n_slots = module.eval_n_slots or module.model.grouper.n_slots
    flags = (datamodule.ignore_background, datamodule.ignore_overlaps)
    rows = [MODEL_DECODER, MODEL_GROUPING, *BASELINES]  # show_report's order too
    metrics = {row: make_metrics(*flags).to(module.device) for row in rows}
    shown: list[tuple[np.ndarray, ...]] = []
    for batch in datamodule.val_dataloader():
        batch = move_data_to_device(batch, module.device)
        out, decoder_hard = module.predict_masks(batch)
        size = tuple(batch["masks"].shape[-2:])
        predictions = {
            MODEL_DECODER: decoder_hard,
            MODEL_GROUPING: hard_masks(resize_patch_masks(out.grouping_masks, size), dtype=torch.bool),
            **{row: fn(batch["rgb"].cpu(), n_slots).to(module.device) for row, fn in BASELINES.items()},
        }
        for row, pred in predictions.items():
            metrics[row].update(batch["masks"], pred)  # counted once for the row's four metrics
        if len(shown) < n_clips:
            shown += first_clips(batch, out, decoder_hard, module.eval_masks, n_clips - len(shown))
    _write_pictures(shown, Path(directory) / "masks", gif, module.eval_masks)
    return {row: {name: m.compute().item() for name, m in metrics[row].items()} for row in rows}


def _write_pictures(clips: list[tuple[np.ndarray, ...]], directory: Path, gif: bool, masks: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for i, clip in enumerate(clips):
        save_png(clip_grid(*clip, masks=masks), directory / f"clip{i}.png")
    if gif and clips:
        rgb, true, pred, _ = clips[0]
        panels = np.concatenate([rgb, overlay(rgb, true), overlay(rgb, pred)], axis=2)  # (T, H, 3W, 3)
        save_gif(panels.repeat(3, axis=1).repeat(3, axis=2), directory / "clip0.gif")


def format_table(report: dict[str, dict[str, float]]) -> str:
    """Markdown table: one row per mask source, one column per metric."""
    names = list(METRICS)
    lines = ["| masks | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += [
        f"| {row} | " + " | ".join(f"{values[n]:.3f}" for n in names) + " |" for row, values in report.items()
    ]
    return "\n".join(lines)


def write_report(report: dict[str, dict[str, float]], directory: Path) -> str:
    """Write report.md/report.json in the run dir; returns the one-line summary."""
    (directory / "report.md").write_text(format_table(report) + "\n")
    (directory / "report.json").write_text(json.dumps(report, indent=2))
    return _summary(report, directory)


def _summary(report: dict[str, dict[str, float]], directory: Path) -> str:
    model, grid = report[MODEL_DECODER], report["grid"]
    return (
        f"video_fg_ari={model['video_fg_ari']:.2f} video_mbo={model['video_mbo']:.2f} "
        f"(grid baseline {grid['video_fg_ari']:.2f}/{grid['video_mbo']:.2f}) -> {directory}"
    )


def show_report(report: dict[str, dict[str, float]], directory: Path, exp_name: str) -> str:
    """What a run with `visualize` prints at its end, and again when the finished run is shown
    again (from results.json's mask_report, nothing recomputed): the table and the summary line.

    Rows come in mask_report's order (the model, then the baselines) also from a JSON file whose
    keys were sorted."""
    rows = [MODEL_DECODER, MODEL_GROUPING, *BASELINES, *report]
    ordered = {row: report[row] for row in rows if row in report}
    return f"\n{format_table(ordered)}\n\n{exp_name}: {_summary(report, Path(directory))}"

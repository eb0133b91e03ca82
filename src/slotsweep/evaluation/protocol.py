"""The evaluation protocol: how a metric was measured, stamped on every number slotsweep writes.

The same model scores very differently under different protocols (VideoSAUR on YT-VIS: 39.5 FG-ARI
on 6-frame chunks, 28.9 on whole videos), so results.json, eval JSONs, W&B and aggregate tables all
carry an :class:`EvalProtocol`, built here and nowhere else (:func:`protocol_of`). Aggregation
refuses to put two protocols in one column, and published numbers (conf/baselines/) appear only
beside the same protocol.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from slotsweep.contracts import DataModule
from slotsweep.errors import SlotsweepError

__all__ = ["MASK_SOURCES", "MATCHING", "METRIC_VERSION", "EvalProtocol", "protocol_of"]

# Bump when a change to the metric code changes any value for the same masks: re-evaluation
# (src/eval.py runs=...) re-scores the runs scored under an older version.
METRIC_VERSION = 2
# Which of the model's masks are scored: the decoder's (the reference's, videosaur.md §6) or slot
# attention's.
MASK_SOURCES = ("decoder", "grouping")
# mBO picks each object's best slot (slots may be shared); mIoU matches one-to-one (Hungarian).
MATCHING = "mbo: best overlap; miou, jandf: hungarian"


@dataclass(frozen=True)
class EvalProtocol:
    """Everything that changes a metric's value besides the model and its weights."""

    dataset: str  # movi_c, movi_e, ytvis2021, coco, shapes, ...: the data, not the config option
    split: str
    frames: str  # "whole videos", "chunks of 6 frames" (each scored as a video) or "images"
    mask_size: int  # metric resolution, pixels per side
    masks: str  # one of MASK_SOURCES
    background: str  # "channel 0 dropped" (MOVi, shapes) or "no background channel"
    overlaps: str  # "pixels left out" (COCO) or "none allowed"
    matching: str
    n_slots: int  # slots at evaluation
    metric_version: int
    # the numerics of the forward passes scored (slotsweep.numerics label): 32-true, 32-true+tf32,
    # bf16-mixed. Records written before it existed were all 32-true.
    precision: str = "32-true"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EvalProtocol:
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})

    def key(self) -> str:
        """8 hex digits naming this protocol (eval JSON file names). Plain fp32 hashes as before the
        precision field existed, so the fp32 scores already on disk keep their names."""
        stamped = self.as_dict()
        if stamped["precision"] == "32-true":
            del stamped["precision"]
        return hashlib.sha256(json.dumps(stamped, sort_keys=True).encode()).hexdigest()[:8]

    def describe(self) -> str:
        """One line for table headers and logs."""
        return (
            f"{self.dataset} {self.split}, {self.frames}, {self.mask_size} px masks, {self.masks} "
            f"masks, background: {self.background}, overlaps: {self.overlaps}, matching: "
            f"{self.matching}, {self.n_slots} slots, metric v{self.metric_version}"
            + ("" if self.precision == "32-true" else f", {self.precision}")
        )

    def differences(self, other: EvalProtocol) -> dict[str, tuple[Any, Any]]:
        """{field: (self's value, other's value)} where the two differ."""
        mine, theirs = self.as_dict(), other.as_dict()
        return {name: (mine[name], theirs[name]) for name in mine if mine[name] != theirs[name]}


def protocol_of(
    data: DataModule,
    n_slots: int,
    masks: str = "decoder",
    limit_batches: int | float | None = None,
    precision: str = "32-true",
) -> EvalProtocol:
    """The protocol of validating on a datamodule: its declared facts (contracts.DataModule) decide
    the data, the frames, the mask size and the mask conventions.

    Args:
        data: the datamodule (built; it need not be set up).
        n_slots: slots at evaluation.
        masks: which masks are scored, one of MASK_SOURCES.
        limit_batches: Lightning's limit_val_batches: a count or fraction of the validation
            batches; None or 1.0 = all.
        precision: the numerics label of the validation's forward passes (slotsweep.numerics).
    """
    if masks not in MASK_SOURCES:
        raise SlotsweepError(f"masks={masks} is not a mask source; choose from {list(MASK_SOURCES)}")
    split = "validation"
    everything = limit_batches is None or (isinstance(limit_batches, float) and limit_batches == 1.0)
    if not everything:  # a subset scores other numbers
        unit = "of the batches" if isinstance(limit_batches, float) else f"batches of {data.val_batch_size}"
        split += f" (first {limit_batches} {unit})"
    return EvalProtocol(
        dataset=data.dataset_name,
        split=split,
        frames=data.val_frames,
        mask_size=int(data.mask_size),
        masks=masks,
        background="channel 0 dropped" if data.ignore_background else "no background channel",
        overlaps="pixels left out" if data.ignore_overlaps else "none allowed",
        matching=MATCHING,
        n_slots=int(n_slots),
        metric_version=METRIC_VERSION,
        precision=precision,
    )

"""MOVi-C / MOVi-E from TensorFlow Datasets to the reference's shards (videosaur.md §5).

The reference exports `tfds.load("movi_{c,e}/128x128:1.0.0", data_dir="gs://kubric-public/tfds")`
at 128x128 (the transform upsamples to 224): train with the video only, validation with the
instance ids as well. Output: `<out>/<variant>-{train,validation}-%06d.tar`, 32 videos each, with
`video.npy` (24, 128, 128, 3) uint8 and, for validation, `segmentations.npy` (24, 128, 128, 1)
uint8 (0 = background). The reference also stores `forward_flow.npy`; nothing here reads it, so it
is not exported.

Reading TFDS needs the `movi` extra (tensorflow-cpu, tensorflow-datasets) and access to the
public kubric bucket; `movi_samples` turns any iterable of TFDS-style examples into samples.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from slotsweep.data.shards import write_shards
from slotsweep.errors import SlotsweepError

__all__ = ["SPLITS", "VARIANTS", "convert_movi", "movi_samples"]

log = logging.getLogger(__name__)

VARIANTS = ("movi_c", "movi_e")
SPLITS = ("train", "validation")
PER_SHARD = 32
TFDS_DIR = "gs://kubric-public/tfds"
INSTALL_MOVI = "pip install 'slotsweep[movi]' (tensorflow-cpu, tensorflow-datasets)"


def movi_samples(examples: Iterable[dict[str, Any]], with_masks: bool) -> Iterator[dict]:
    """Shard samples of TFDS MOVi examples ({"video": (T, H, W, 3), "segmentations": (T, H, W, 1)})."""
    for index, example in enumerate(examples):
        sample = {"__key__": f"{index:06d}", "video.npy": np.asarray(example["video"], np.uint8)}
        if with_masks:
            sample["segmentations.npy"] = np.asarray(example["segmentations"], np.uint8)
        yield sample


def _tfds_examples(variant: str, split: str, tfds_dir: str, resolution: int) -> Iterable[dict]:
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise SlotsweepError(f"exporting MOVi from TFDS needs {INSTALL_MOVI}") from error
    dataset = tfds.load(f"{variant}/{resolution}x{resolution}:1.0.0", data_dir=tfds_dir, split=split)
    return tfds.as_numpy(dataset)


def convert_movi(
    variant: str,
    out: str | Path,
    splits: tuple[str, ...] = SPLITS,
    tfds_dir: str = TFDS_DIR,
    resolution: int = 128,
    limit: int | None = None,
) -> dict[str, list[Path]]:
    """Export MOVi splits from TFDS to shards; see the module docstring.

    Args:
        variant: "movi_c" or "movi_e".
        out: output folder, e.g. <data_dir>/movi_c.
        tfds_dir: TFDS data_dir holding the dataset (default: the public kubric bucket).
        resolution: the TFDS config's frame side (the reference: 128).
        limit: export only the first `limit` videos of each split.
    """
    if variant not in VARIANTS:
        raise SlotsweepError(f"--variant {variant!r} is invalid: choose from {VARIANTS}")
    written = {}
    for split in splits:
        if split not in SPLITS:
            raise SlotsweepError(f"--splits {split!r} is invalid: choose from {SPLITS}")
        examples = _tfds_examples(variant, split, tfds_dir, resolution)
        if limit is not None:
            examples = itertools.islice(examples, limit)
        samples = movi_samples(examples, with_masks=split != "train")
        written[split] = write_shards(samples, str(Path(out) / f"{variant}-{split}-%06d.tar"), PER_SHARD)
        log.info("%s %s: %d shards", variant, split, len(written[split]))
    return written

"""COCO 2017 from its official layout to the reference's shards (videosaur.md §5).

Input: `<src>/annotations/instances_{train,val}2017.json` and the images `<src>/{train,val}2017/`.
Images are kept at their size, in the JSON file's order (COCO.getImgIds()); crowd annotations
(`iscrowd: 1`) are removed, as the reference does.

Output: `<out>/coco-train-%06d.tar` (`image.npy` (H, W, 3) uint8) and `<out>/coco-validation-%06d.tar`
(plus `segmentations.npy` (N, H, W) uint8: instance i's mask x its category id, or (1, H, W) zeros
for an image without annotation), 128 images per shard. Validation masks are mostly polygons, so
they need pycocotools (the `coco` extra).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from slotsweep.data.annotation_masks import annotation_mask
from slotsweep.data.converters.index_files import read_index
from slotsweep.data.shards import write_shards
from slotsweep.errors import SlotsweepError

__all__ = ["SPLITS", "coco_samples", "convert_coco"]

log = logging.getLogger(__name__)

SPLITS = {"train": "train2017", "validation": "val2017"}  # shard split name -> COCO folder name
PER_SHARD = 128


def _image_masks(image: dict, annotations: list[dict]) -> np.ndarray:
    """(N, H, W) uint8: each non-crowd instance's mask x category id; (1, H, W) zeros if none."""
    H, W = image["height"], image["width"]
    instances = [a for a in annotations if not a.get("iscrowd", 0)]
    if not instances:
        return np.zeros((1, H, W), np.uint8)
    masks = np.zeros((len(instances), H, W), np.uint8)
    for i, ann in enumerate(instances):
        where = f"image {image['id']}, annotation {ann['id']}"
        masks[i] = annotation_mask(ann["segmentation"], H, W, where) * ann["category_id"]
    return masks


def coco_samples(
    image_dir: Path, images: list[dict], annotations: dict[int, list[dict]], with_masks: bool
) -> Iterator[dict]:
    """Shard samples of the given images, in order."""
    for image in images:
        path = image_dir / image["file_name"]
        try:
            with Image.open(path) as file:
                pixels = np.asarray(file.convert("RGB"))  # a few COCO images are greyscale
        except OSError as error:
            raise SlotsweepError(f"cannot read COCO image {path} ({error})") from error
        sample = {"__key__": f"{image['id']:012d}", "image.npy": pixels}
        if with_masks:
            sample["segmentations.npy"] = _image_masks(image, annotations.get(image["id"], []))
        yield sample


def convert_coco(
    src: str | Path, out: str | Path, splits: tuple[str, ...] = tuple(SPLITS), limit: int | None = None
) -> dict[str, list[Path]]:
    """Write the shards of the given splits ("train", "validation"); see the module docstring.

    Args:
        src: the COCO 2017 root (annotations/, train2017/, val2017/).
        out: output folder, e.g. <data_dir>/coco.
        limit: convert only the first `limit` images of each split (a quick look).
    Returns:
        {split: shard paths}.
    """
    src, out = Path(src), Path(out)
    written = {}
    for split in splits:
        if split not in SPLITS:
            raise SlotsweepError(f"--splits {split!r} is invalid: choose from {list(SPLITS)}")
        folder = SPLITS[split]
        index = src / "annotations" / f"instances_{folder}.json"
        if not index.is_file():
            raise SlotsweepError(
                f"{index} not found: --src must be the COCO 2017 root (annotations/, {folder}/), "
                "see docs/datasets.md"
            )
        data = read_index(index, ("images", "annotations"), f"COCO 2017 instances_{folder}.json")
        annotations: dict[int, list[dict]] = {}
        for ann in data["annotations"]:
            annotations.setdefault(ann["image_id"], []).append(ann)
        images = data["images"][:limit] if limit is not None else data["images"]
        samples = coco_samples(src / folder, images, annotations, with_masks=split == "validation")
        written[split] = write_shards(samples, str(out / f"coco-{split}-%06d.tar"), PER_SHARD)
        log.info("coco %s: %d images in %d shards", split, len(images), len(written[split]))
    return written

"""Masks of COCO-format annotations (COCO 2017 `segmentation`, YT-VIS 2021 `segmentations[t]`).

An annotation mask is a polygon list, an uncompressed RLE ({"counts": [int, ...], "size": [h, w]})
or a compressed RLE ({"counts": "string", ...}). pycocotools (the `coco` extra) decodes all three
exactly as the reference's converters did; without it, RLEs are decoded here (the format is small
and exact) and polygons raise an error naming the extra, since rasterising them differently from
pycocotools would change the masks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slotsweep.errors import SlotsweepError

__all__ = ["annotation_mask", "decode_rle", "rle_counts"]

INSTALL_COCO = "pip install 'slotsweep[coco]' (pycocotools)"


def rle_counts(counts: str | bytes) -> list[int]:
    """Run lengths of a compressed COCO RLE string (pycocotools' rleFrString).

    Each count is a little-endian base-32 number in characters from 48 ('0'), 5 bits per
    character, bit 0x20 set while more characters follow and bit 0x10 the sign of the last one;
    from the third count on, the value is stored as a difference to the count two places before.
    """
    data = counts.encode() if isinstance(counts, str) else counts
    values: list[int] = []
    p = 0
    while p < len(data):
        x, shift, more = 0, 0, True
        while more:
            c = data[p] - 48
            x |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            p += 1
            shift += 5
            if not more and c & 0x10:
                x |= -1 << shift  # sign-extend
        if len(values) > 2:
            x += values[-2]
        values.append(x)
    return values


def decode_rle(counts: list[int], height: int, width: int) -> np.ndarray:
    """(H, W) uint8 mask of run lengths that alternate 0s and 1s in column-major order, 0s first."""
    if sum(counts) != height * width or min(counts, default=0) < 0:
        raise ValueError(f"RLE counts sum to {sum(counts)}, not {height}x{width} = {height * width}")
    values = np.arange(len(counts)) % 2  # 0, 1, 0, 1, ...
    flat = np.repeat(values.astype(np.uint8), counts)
    return flat.reshape(width, height).T.copy()  # column-major (Fortran) order


def _pycocotools_mask() -> Any:
    try:
        from pycocotools import mask
    except ImportError:
        return None
    return mask


def annotation_mask(segmentation: Any, height: int, width: int, where: str) -> np.ndarray:
    """(H, W) uint8 0/1 mask of one annotation, decoded as pycocotools' annToMask does.

    Args:
        segmentation: polygons [[x0, y0, x1, y1, ...], ...] or an RLE dict.
        height, width: image size (polygons carry none).
        where: the annotation, for error messages.
    """
    coco_mask = _pycocotools_mask()
    is_rle = isinstance(segmentation, dict)
    if coco_mask is not None:
        if not is_rle:  # polygons: one RLE each, merged
            rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation["counts"], list):  # uncompressed RLE
            rle = coco_mask.frPyObjects(segmentation, height, width)
        else:
            rle = segmentation
        return coco_mask.decode(rle)
    if not is_rle:
        raise SlotsweepError(f"{where} is a polygon: decoding polygons needs {INSTALL_COCO}")
    h, w = segmentation.get("size", (height, width))
    counts = segmentation["counts"]
    return decode_rle(counts if isinstance(counts, list) else rle_counts(counts), h, w)

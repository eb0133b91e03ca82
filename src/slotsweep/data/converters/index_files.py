"""The JSON index of an official release (YT-VIS instances.json, COCO instances_*.json), checked
on reading: a file cut short or of another format is one message naming the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from slotsweep.errors import SlotsweepError

__all__ = ["read_index"]


def read_index(path: Path, keys: tuple[str, ...], release: str) -> dict[str, Any]:
    """`path` parsed, with the top-level `keys` present; `release` names what it should be."""
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SlotsweepError(
            f"{path} is not valid JSON ({e}): the file is cut short or damaged; download {release} again"
        ) from e
    missing = [key for key in keys if not isinstance(data, dict) or key not in data]
    if missing:
        raise SlotsweepError(f"{path} lacks {missing}: it is not the {release} index (see docs/datasets.md)")
    return data

"""Published baselines as data (conf/baselines/*.yaml): numbers, their protocols and sources.

A published row goes beside a user's column only where every protocol field it states equals the
column's protocol (slotsweep.evaluation.protocol), so a 6-frame-chunk number never sits beside whole videos.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from slotsweep.errors import SlotsweepError

__all__ = ["BASELINES_DIR", "Published", "load_published"]

BASELINES_DIR = Path(__file__).resolve().parents[3] / "conf" / "baselines"
_FIELDS = ("name", "source", "protocol", "metrics")


@dataclass(frozen=True)
class Published:
    name: str  # the method, e.g. "VideoSAUR (DINO B/8)"
    source: str  # paper or README the numbers come from
    protocol: dict[str, Any]  # the EvalProtocol fields the paper states
    metrics: dict[str, float]  # {"val/video_fg_ari": 0.648, ...}

    def matches(self, protocol: dict[str, Any]) -> bool:
        """Every field this entry states has the same value in `protocol`."""
        return all(protocol.get(key) == value for key, value in self.protocol.items())


def load_published(directory: Path = BASELINES_DIR) -> list[Published]:
    """Every entry of every YAML file in `directory` ([] if it does not exist)."""
    entries = []
    for path in sorted(Path(directory).glob("*.yaml")):
        for i, entry in enumerate(yaml.safe_load(path.read_text()) or []):
            missing = [key for key in _FIELDS if key not in entry]
            if missing:
                raise SlotsweepError(
                    f"{path} entry {i}: missing {missing}; see conf/baselines/published.yaml"
                )
            entries.append(Published(**{key: entry[key] for key in _FIELDS}))
    return entries

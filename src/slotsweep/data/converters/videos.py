"""The reference's shards to a video folder: mp4 clips (decord reads them) with lossless masks.

The folder is what `dataset=video_folder` reads (video_files.py): `<key>.mp4` and, for samples that
have masks, `<key>.masks.npz` beside it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from slotsweep.data.layouts import SampleLayout
from slotsweep.data.shards import read_samples
from slotsweep.data.video_files import MASKS_SUFFIX, write_masks, write_video

__all__ = ["shards_to_videos"]

log = logging.getLogger(__name__)


def shards_to_videos(
    shards: list[Path], layout: SampleLayout, out: str | Path, fps: float = 10.0, crf: int = 18
) -> list[Path]:
    """Write every sample of the shards as <out>/<key>.mp4 (+ <key>.masks.npz if it has masks).

    Returns the video paths. Point `dataset.root` at the folder holding the train videos, with the
    validation ones in its `validation/` subfolder (python src/convert.py videos does both).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for sample in read_samples(shards, (layout.frames_key,), optional=(layout.masks_key,)):
        frames = layout.to_frames(sample[layout.frames_key])
        path = out / f"{sample['__key__']}.mp4"
        write_video(path, frames, fps=fps, crf=crf)
        if layout.masks_key in sample:
            where = f"sample {sample['__key__']} of {sample['__url__']}"
            masks = layout.to_masks(sample[layout.masks_key], None, where)
            write_masks(path.with_name(path.stem + MASKS_SUFFIX), masks, layout.ignore_background)
        written.append(path)
    log.info("wrote %d videos to %s", len(written), out)
    return written

"""YouTube-VIS 2021 from its official layout to the reference's shards (videosaur.md §5).

Input: the official *train* split (the val/test splits have no public masks), i.e.
`<src>/JPEGImages/<video>/<frame>.jpg` and `<src>/instances.json` with `videos` (id, file_names,
height, width) and `annotations` (video_id, category_id, segmentations: one RLE/polygon or null per
frame). As the reference, the last `n_val` videos in the file's order (YTVOS.getVidIds()) are
validation and the others train; frames and masks are resized so that the short side is `resize`
(320, or 518 for DINOv2) with `resize_mode` nearest-exact for the frames too ([Q] the reference's
default).

Output: `<out>/ytvis-train-%06d.tar` (32 videos each, `video.npy` (T, H, W, 3) uint8) and
`<out>/ytvis-validation-%06d.tar` (10 each, plus `segmentations.npy` (T, H, W, N) uint8: instance
i's mask x its category id, or one zero channel when a video has no annotation).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from slotsweep.data.annotation_masks import annotation_mask
from slotsweep.data.converters.index_files import read_index
from slotsweep.data.shards import write_shards
from slotsweep.data.video_transforms import short_side_size
from slotsweep.errors import SlotsweepError

__all__ = ["RESIZE_MODES", "convert_ytvis", "resize_short_side_uint8", "ytvis_samples"]

log = logging.getLogger(__name__)

RESIZE_MODES = ("nearest-exact", "nearest", "bilinear", "bicubic")
TRAIN_PER_SHARD = 32
VAL_PER_SHARD = 10


def resize_short_side_uint8(x: np.ndarray, size: int | None, mode: str) -> np.ndarray:
    """Resize (T, H, W, C) uint8 so that the short side is `size` (None: unchanged).

    The long side becomes int(size * long / short), as torchvision's Resize(int).
    """
    if size is None:
        return x
    H, W = x.shape[1:3]
    new = short_side_size(H, W, size)
    if new == (H, W):
        return x
    t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)  # (T, C, H, W)
    if mode.startswith("nearest"):
        out = F.interpolate(t, size=new, mode=mode)  # uint8 in, uint8 out, no new values
    else:
        out = F.interpolate(t.float(), size=new, mode=mode, align_corners=False).round_().clamp_(0, 255)
    return out.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _load_frames(src: Path, file_names: list[str], where: str) -> np.ndarray:
    frames = []
    for name in file_names:
        path = src / "JPEGImages" / name
        try:
            with Image.open(path) as image:
                frames.append(np.asarray(image.convert("RGB")))
        except OSError as error:
            raise SlotsweepError(f"{where}: cannot read frame {path} ({error})") from error
    return np.stack(frames)  # (T, H, W, 3)


def _video_masks(video: dict, annotations: list[dict], where: str) -> np.ndarray:
    """(T, H, W, N) uint8: instance i's mask x category id (zeros where it is not visible)."""
    T, H, W = len(video["file_names"]), video["height"], video["width"]
    if not annotations:
        return np.zeros((T, H, W, 1), np.uint8)
    masks = np.zeros((T, H, W, len(annotations)), np.uint8)
    for i, ann in enumerate(annotations):
        for t, segmentation in enumerate(ann["segmentations"]):
            if segmentation is not None:  # null: the object is not visible in frame t
                m = annotation_mask(segmentation, H, W, f"{where}, annotation {ann['id']}, frame {t}")
                masks[t, :, :, i] = m * ann["category_id"]
    return masks


def ytvis_samples(
    src: Path,
    videos: list[dict],
    annotations: dict[int, list[dict]],
    with_masks: bool,
    resize: int | None,
    resize_mode: str,
) -> Iterator[dict]:
    """Shard samples of the given videos, in order."""
    for video in videos:
        name = Path(video["file_names"][0]).parent.name
        where = f"video {video['id']} ({name})"
        frames = _load_frames(src, video["file_names"], where)
        sample = {"__key__": name, "video.npy": resize_short_side_uint8(frames, resize, resize_mode)}
        if with_masks:
            masks = _video_masks(video, annotations.get(video["id"], []), where)
            sample["segmentations.npy"] = resize_short_side_uint8(masks, resize, "nearest-exact")
        yield sample


def convert_ytvis(
    src: str | Path,
    out: str | Path,
    resize: int | None = 320,
    resize_mode: str = "nearest-exact",
    n_val: int = 300,
    limit: int | None = None,
) -> dict[str, list[Path]]:
    """Write the train and validation shards of YT-VIS 2021 (see the module docstring).

    Args:
        src: the official train folder (instances.json, JPEGImages/).
        out: output folder, e.g. <data_dir>/ytvis2021_resized.
        resize: short side in pixels, None to keep the original size.
        resize_mode: interpolation of the frames, one of RESIZE_MODES (masks: nearest-exact).
        n_val: the last n_val videos are validation.
        limit: convert only the first `limit` videos of each split (a quick look).
    Returns:
        {"train": shard paths, "validation": shard paths}.
    """
    src, out = Path(src), Path(out)
    if resize_mode not in RESIZE_MODES:
        raise SlotsweepError(f"--resize-mode {resize_mode!r} is invalid: choose from {RESIZE_MODES}")
    index = src / "instances.json"
    if not index.is_file():
        raise SlotsweepError(
            f"{index} not found: --src must be the YouTube-VIS 2021 train folder (instances.json, "
            "JPEGImages/), see docs/datasets.md"
        )
    data = read_index(index, ("videos", "annotations"), "YouTube-VIS 2021 train instances.json")
    videos = data["videos"]
    if not 0 <= n_val <= len(videos):
        raise SlotsweepError(f"--val-videos {n_val} is invalid: {index} has {len(videos)} videos")
    annotations: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        annotations.setdefault(ann["video_id"], []).append(ann)
    splits = {"train": videos[: len(videos) - n_val], "validation": videos[len(videos) - n_val :]}
    written = {}
    for split, split_videos in splits.items():
        split_videos = split_videos[:limit] if limit is not None else split_videos
        samples = ytvis_samples(src, split_videos, annotations, split == "validation", resize, resize_mode)
        per_shard = TRAIN_PER_SHARD if split == "train" else VAL_PER_SHARD
        written[split] = write_shards(samples, str(out / f"ytvis-{split}-%06d.tar"), per_shard)
        log.info("ytvis %s: %d videos in %d shards", split, len(split_videos), len(written[split]))
    return written

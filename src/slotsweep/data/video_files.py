"""A folder of video files (mp4, ...) decoded with decord, with lossless instance masks beside them.

Layout of `root` (your own videos work as they are):

    <root>/*.mp4                          training clips (any length; masks not needed)
    <root>/validation/<name>.mp4          validation clips ...
    <root>/validation/<name>.masks.npz    ... and their masks, one file per clip

A masks file holds either `ids` (T, H, W) uint8, one instance id per pixel (0 = background or
unlabelled), or `masks` (T, N, H, W) bool, one channel per instance (overlaps allowed); optional
`background` (bool) says whether id 0 / channel 0 is a background segment (MOVi) rather than
unlabelled pixels. Masks have the frames' size. Without a validation folder, or a clip without a
masks file, there is nothing to score: training runs, and no metric is computed.

Unreadable or corrupt videos are named in an error at setup, or skipped and counted with
`skip_corrupt: true`. `converters.videos.shards_to_videos` writes this layout from the reference's shards.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import decord
import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from slotsweep.cache import ClipSource, ClipViews, FeatureStore
from slotsweep.contracts import val_frames
from slotsweep.data import cache_sources
from slotsweep.data.arguments import check, check_positive_ints
from slotsweep.data.shards import VAL_PROTOCOLS
from slotsweep.data.streams import ValidationStream, chunk_starts
from slotsweep.data.video_transforms import ClipTransform, collate_clips
from slotsweep.errors import SlotsweepError

__all__ = [
    "VideoClip",
    "VideoFolderDataModule",
    "read_frames",
    "read_masks",
    "scan_videos",
    "write_masks",
    "write_video",
]

log = logging.getLogger(__name__)

MASKS_SUFFIX = ".masks.npz"
VAL_SUBDIR = "validation"


def write_video(path: str | Path, frames: np.ndarray, fps: float = 10.0, crf: int = 18) -> None:
    """Encode (T, H, W, 3) uint8 frames as H.264 in 4:4:4 chroma (any frame size; decord reads it).

    crf: x264 quality, 0 = lossless in YUV (the RGB round trip still rounds), 18 = visually lossless.
    """
    _, H, W, _ = frames.shape
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = W, H
        stream.pix_fmt = "yuv444p"  # 4:2:0 would need even sides and blur colour edges
        stream.options = {"crf": str(crf)}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), "rgb24")))
        container.mux(stream.encode())  # flush


def write_masks(path: str | Path, masks: np.ndarray, background: bool) -> None:
    """Store (T, N, H, W) bool instance masks losslessly: as ids when no pixel has two instances.

    With background=True, channel 0 is the background segment and becomes id 0; otherwise channel
    i becomes id i + 1 and id 0 means unlabelled.
    """
    masks = np.asarray(masks, bool)
    offset = 0 if background else 1
    if masks.sum(axis=1).max(initial=0) <= 1 and masks.shape[1] + offset <= 256:  # ids fit in uint8
        ids = np.where(masks.any(axis=1), masks.argmax(axis=1) + offset, 0).astype(np.uint8)
        np.savez_compressed(path, ids=ids, background=background)
    else:
        np.savez_compressed(path, masks=masks, background=background)


def read_masks(path: Path, n_channels: int, background: bool) -> np.ndarray:
    """(T, K, H, W) bool masks of a masks file, K = n_channels (padded with empty channels).

    background: the dataset's convention (dataset.ignore_background); a file that says otherwise is
    an error, since its channel 0 would be scored the wrong way.
    """
    try:
        with np.load(path) as data:
            stored = dict(data)
    except (OSError, ValueError) as error:
        raise SlotsweepError(f"masks file {path} is not a readable .npz ({error})") from error
    if "background" in stored and bool(stored["background"]) != background:
        raise SlotsweepError(
            f"masks file {path} says background={bool(stored['background'])} but "
            f"dataset.ignore_background={background}; set it to {bool(stored['background'])}"
        )
    if "ids" in stored:
        ids = stored["ids"]
        offset = 0 if background else 1
        n = int(ids.max(initial=0)) + 1 - offset  # channels in use
    elif "masks" in stored:
        n = stored["masks"].shape[1]
    else:
        raise SlotsweepError(f"masks file {path} has neither `ids` (T, H, W) nor `masks` (T, N, H, W)")
    if n > n_channels:
        raise SlotsweepError(
            f"masks file {path} has {n} instance channels, more than dataset.n_mask_channels={n_channels}; "
            f"raise it to >= {n}"
        )
    if "ids" in stored:
        return ids[:, None] == (np.arange(n_channels) + offset)[None, :, None, None]  # (T, K, H, W)
    masks = stored["masks"].astype(bool)
    T, _, H, W = masks.shape
    return np.concatenate([masks, np.zeros((T, n_channels - n, H, W), bool)], axis=1)


def _reader(path: Path) -> decord.VideoReader:
    return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)


def read_frames(path: Path, indices: list[int]) -> np.ndarray:
    """(len(indices), H, W, 3) uint8 frames of a video file, by random access."""
    try:
        return _reader(path).get_batch(indices).asnumpy()
    except Exception as error:  # noqa: BLE001 - decord raises RuntimeError or its own DECORDError
        raise SlotsweepError(
            f"cannot decode frames {indices[0]}..{indices[-1]} of {path}: {error}"
        ) from error


@dataclass(frozen=True)
class VideoClip:
    """One readable video file: its path, frame count and masks file (None if it has none)."""

    path: Path
    n_frames: int
    masks: Path | None


def scan_videos(folder: Path, extensions: tuple[str, ...], skip_corrupt: bool) -> list[VideoClip]:
    """The videos directly in `folder`, sorted by name, each opened and its last frame decoded.

    Raises SlotsweepError naming the first unreadable file, or skips unreadable files and logs how
    many when skip_corrupt is true.
    """
    clips, skipped = [], []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in extensions and p.is_file()):
        try:
            reader = _reader(path)
            n_frames = len(reader)
            last = reader[n_frames - 1]  # a truncated file often opens but cannot reach its end
            if last.shape[-1] != 3:  # decord mis-strides a few tiny widths (4..48 px): 3 x W bytes
                raise RuntimeError(f"decord decodes frames of width {last.shape[1]} as {tuple(last.shape)}")
        except Exception as error:  # noqa: BLE001 - decord raises RuntimeError or its own DECORDError
            if not skip_corrupt:
                raise SlotsweepError(
                    f"video {path} is unreadable ({str(error).splitlines()[0]}); remove or re-encode "
                    "it, or set dataset.skip_corrupt=true to skip such files"
                ) from error
            skipped.append(path)
            continue
        masks = path.with_name(path.stem + MASKS_SUFFIX)
        clips.append(VideoClip(path, n_frames, masks if masks.is_file() else None))
    if skipped:
        log.warning(
            "skipped %d unreadable videos in %s (dataset.skip_corrupt=true), e.g. %s",
            len(skipped),
            folder,
            skipped[0],
        )
    return clips


class TrainVideos(Dataset):
    """Map-style train set: item i is one random aligned chunk of video i, freshly transformed,
    or with `features` (the feature cache of these clips, in this order) its features and keys
    in the view the same random draws pick."""

    def __init__(
        self,
        clips: list[VideoClip],
        clip_frames: int,
        transform: ClipTransform,
        features: FeatureStore | None = None,
    ) -> None:
        self.clips, self.clip_frames, self.transform = clips, clip_frames, transform
        self.features = features

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        rng = random.Random(int(torch.randint(2**62, ()).item()))  # torch is seeded per worker
        clip = self.clips[index]
        start = rng.choice(chunk_starts(clip.n_frames, self.clip_frames))
        if self.features is not None:
            frames = slice(start, start + self.clip_frames)
            return cache_sources.cached_train_sample(self.features, self.transform, index, frames, rng)
        frames = read_frames(clip.path, list(range(start, start + self.clip_frames)))
        return self.transform.train(frames, rng)


class ValVideos:
    """Reads one validation video with its masks: the whole video or every aligned chunk of it.

    Args:
        clips: the validation videos (with masks), in order: `features` holds them in this order.
        transform, n_mask_channels, background: as VideoFolderDataModule's.
        chunk_frames: frames per chunk, or None for whole videos.
        features: the feature cache of these clips: samples hold {"features", "keys"} instead of "video".
    """

    def __init__(
        self,
        clips: list[VideoClip],
        transform: ClipTransform,
        n_mask_channels: int,
        background: bool,
        chunk_frames: int | None,
        features: FeatureStore | None = None,
    ) -> None:
        self.transform, self.n_mask_channels, self.background = transform, n_mask_channels, background
        self.chunk_frames, self.features = chunk_frames, features
        self.store_index = {clip.path: index for index, clip in enumerate(clips)}

    def starts(self, clip: VideoClip) -> range:
        """First frames of the clip's samples: one (whole video) or one per chunk."""
        return chunk_starts(clip.n_frames, self.chunk_frames or clip.n_frames)

    def __call__(self, clip: VideoClip) -> Iterator[dict[str, Tensor]]:
        """The clip's samples {"video", "rgb", "masks"} in order, one per `starts(clip)`."""
        frames = read_frames(clip.path, list(range(clip.n_frames)))
        masks = read_masks(clip.masks, self.n_mask_channels, self.background)
        if masks.shape[0] != frames.shape[0] or masks.shape[2:] != frames.shape[1:3]:
            raise SlotsweepError(
                f"masks file {clip.masks} has {masks.shape[0]} frames of {masks.shape[2:]}, but "
                f"{clip.path} has {frames.shape[0]} of {frames.shape[1:3]}: they must match"
            )
        length = self.chunk_frames or clip.n_frames
        for start in self.starts(clip):
            sample = self.transform.val(frames[start : start + length], masks[start : start + length])
            if self.features is not None:
                frames_slice = slice(start, start + length)
                sample = cache_sources.cached_val_sample(
                    sample, self.features, self.store_index[clip.path], frames_slice
                )
            yield sample


class VideoFolderDataModule(L.LightningDataModule):
    """Videos from a folder (see the module docstring); args are conf/dataset/video_folder.yaml.

    Batches as ShardDataModule's: train {"video": (B, train_clip_frames, 3, S, S)}; validation adds
    {"masks": (B, T, K, M, M) bool, "rgb": (B, T, S, S, 3) uint8, "index": (B,) int64} for clips
    that have masks, each once over all DDP ranks (streams.ValidationStream).

    Args:
        root: the folder of training videos; validation videos are in <root>/validation/.
        extensions: video file suffixes to read.
        n_mask_channels: K, mask channels per frame (background included when ignore_background).
        ignore_background: mask id 0 is a background segment that metrics drop (MOVi-style);
            false when id 0 means unlabelled pixels (YT-VIS-style, most own data).
        ignore_overlaps: instances may overlap (masks stored as channels).
        input_size, mask_size, train_clip_frames, val_protocol, val_chunk_frames, hflip,
        train_crops, batch_size, val_batch_size, num_workers: as ShardDataModule's.
        skip_corrupt: skip unreadable videos (counted in the log) instead of stopping.
    """

    def __init__(
        self,
        root: str,
        extensions: list[str],
        n_mask_channels: int,
        ignore_background: bool,
        ignore_overlaps: bool,
        input_size: int,
        mask_size: int,
        train_clip_frames: int,
        val_protocol: str,
        val_chunk_frames: int,
        hflip: bool,
        train_crops: int | None,
        batch_size: int,
        val_batch_size: int,
        num_workers: int,
        skip_corrupt: bool,
    ) -> None:
        super().__init__()
        check(val_protocol in VAL_PROTOCOLS, "val_protocol", val_protocol, f"choose from {VAL_PROTOCOLS}")
        check_positive_ints(
            dict(
                n_mask_channels=n_mask_channels,
                input_size=input_size,
                mask_size=mask_size,
                train_clip_frames=train_clip_frames,
                val_chunk_frames=val_chunk_frames,
                batch_size=batch_size,
                val_batch_size=val_batch_size,
            )
        )
        check(isinstance(num_workers, int) and num_workers >= 0, "num_workers", num_workers, "must be >= 0")
        self.root = Path(root)
        self.extensions = tuple(e.lower() for e in extensions)
        self.n_mask_channels = n_mask_channels
        self.ignore_background, self.ignore_overlaps = ignore_background, ignore_overlaps
        check(train_crops is None or train_crops >= 1, "train_crops", train_crops, "must be >= 1 or null")
        self.transform = ClipTransform(input_size, mask_size, hflip, train_crops)
        self.train_clip_frames = train_clip_frames
        self.val_chunk_frames = val_chunk_frames if val_protocol == "chunks" else None
        self.batch_size, self.val_batch_size = batch_size, val_batch_size
        self.num_workers, self.skip_corrupt = num_workers, skip_corrupt
        # the facts of contracts.DataModule
        self.dataset_name = f"video_folder:{self.root.name}"
        self.val_frames = val_frames(self.val_chunk_frames)
        self.mask_size = mask_size
        self.val_batch_keys = ("video", "masks", "rgb", "index")
        self.train_clips: list[VideoClip] = []
        self.val_clips: list[VideoClip] = []
        self.feature_stores: dict[str, FeatureStore] = {}  # set by slotsweep.cache

    def setup(self, stage: str | None = None) -> None:
        if not self.root.is_dir():
            raise SlotsweepError(
                f"dataset.root={self.root} is not a folder: point it at your videos (paths.data_dir / "
                "env SLOTSWEEP_DATA_DIR for the default), or make one from shards: "
                "python src/convert.py videos --help"
            )
        if stage in (None, "fit"):
            found = scan_videos(self.root, self.extensions, self.skip_corrupt)
            self.train_clips = [c for c in found if c.n_frames >= self.train_clip_frames]
            if not self.train_clips:
                raise SlotsweepError(
                    f"dataset.root={self.root} has no video ({'/'.join(self.extensions)}) of at least "
                    f"dataset.train_clip_frames={self.train_clip_frames} frames"
                )
            if len(self.train_clips) < len(found):
                log.warning(
                    "%d videos shorter than %d frames are not used for training",
                    len(found) - len(self.train_clips),
                    self.train_clip_frames,
                )
        val_dir = self.root / VAL_SUBDIR
        found = scan_videos(val_dir, self.extensions, self.skip_corrupt) if val_dir.is_dir() else []
        self.val_clips = [c for c in found if c.masks is not None]
        if not self.val_clips:
            log.warning("no validation videos with masks in %s: training only, no metrics", val_dir)
        elif len(self.val_clips) < len(found):
            log.warning(
                "%d validation videos have no %s file and are not scored",
                len(found) - len(self.val_clips),
                MASKS_SUFFIX,
            )

    def feature_cache_sources(self, stage: str | None = None) -> dict[str, ClipSource]:
        """The clips `stage` reads (as found by `setup`), as the feature cache encodes them."""
        splits = []
        if stage in (None, "fit"):
            splits.append(("train", self.train_clips, True))
            cache_sources.check_finite_views(
                self.transform, *read_frames(self.train_clips[0].path, [0]).shape[1:3]
            )
        splits += [("val", self.val_clips, False)] if self.val_clips else []
        sources = {}
        for split, clips, train in splits:
            identity = {
                "reader": "video_folder",
                "videos": cache_sources.files_identity([clip.path for clip in clips], self.root),
                **cache_sources.views_identity(self.transform, train),
            }
            n_views = self.transform.n_train_views if train else 1
            n_frames = sum(clip.n_frames for clip in clips)
            sources[split] = ClipSource(identity, self._clip_views(clips, train), n_views, n_frames)
        return sources

    def _clip_views(self, clips: list[VideoClip], train: bool) -> Iterator[ClipViews]:
        for clip in clips:
            frames = read_frames(clip.path, list(range(clip.n_frames)))
            yield cache_sources.clip_views(frames, self.transform, train, {"video": clip.path.name})

    def use_feature_cache(self, stores: dict[str, FeatureStore]) -> None:
        """Read encoder outputs from `stores` ({split: store}) instead of decoding frames."""
        self.feature_stores = dict(stores)

    def _loader(self, dataset: Dataset, **kwargs) -> DataLoader:
        return DataLoader(
            dataset,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        clips = TrainVideos(
            self.train_clips, self.train_clip_frames, self.transform, self.feature_stores.get("train")
        )
        return self._loader(
            clips, batch_size=self.batch_size, shuffle=True, drop_last=True, collate_fn=collate_clips
        )

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_clips:
            return []  # Lightning skips validation
        read = ValVideos(
            self.val_clips,
            self.transform,
            self.n_mask_channels,
            self.ignore_background,
            self.val_chunk_frames,
            self.feature_stores.get("val"),
        )
        counts = [len(read.starts(clip)) for clip in self.val_clips]
        return self._loader(
            ValidationStream(self.val_clips, counts, read, self.val_batch_size), batch_size=None
        )

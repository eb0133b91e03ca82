"""`shapes`: procedurally generated videos of moving, occluding sprites with exact instance masks.

Every clip is drawn from its own random stream, seeded by (dataset seed, split, clip index), so a clip
does not depend on how many clips are generated, in which order, or by how many processes. A clip has
n_objects_min..n_objects_max sprites (7 shapes, 5 textures, distinct hues) that move at constant
velocity, bounce off the frame borders and rotate, drawn back to front over a noisy background. The
instance mask holds, per pixel, the id of the front-most object (1..N, in depth order) or 0 for the
background, so it is exactly the set of pixels each object coloured.

Generated splits are cached as .npy files under `<data_dir>/shapes/<hash of the generator params>/`
and memory-mapped afterwards; changing any generator parameter changes the hash, so a stale cache is
never read.
"""

from __future__ import annotations

import colorsys
import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from slotsweep.cache import ClipSource, ClipViews, FeatureStore
from slotsweep.contracts import val_frames
from slotsweep.data.arguments import check, is_int
from slotsweep.data.streams import map_stream
from slotsweep.data.transforms import IMAGENET_MEAN, IMAGENET_STD, frames_to_tensor
from slotsweep.errors import SlotsweepError

__all__ = [
    "SHAPES",
    "TEXTURES",
    "ShapesClip",
    "ShapesClips",
    "ShapesDataModule",
    "ShapesParams",
    "generate_clip",
    "cached_split",
    "generate_split",
]

log = logging.getLogger(__name__)

# Bump when the generator changes what it draws, so that caches made by older code get a new hash.
_FORMAT_VERSION = 1
_SPLIT_CODES = {"train": 0, "val": 1}

SHAPES = ("circle", "ellipse", "square", "rhombus", "triangle", "star", "cross")
TEXTURES = ("solid", "stripes", "checker", "gradient", "noise")

# Objects get hues from a wheel of this many slots, one slot each, so two objects in a clip differ by
# at least 360/12 - 2*jitter degrees of hue; this also caps n_objects_max.
_N_HUES = 12
_HUE_JITTER = 0.15  # fraction of a slot
# A layout where some object shows less than this fraction of its area in some frame is redrawn, so
# every ground-truth object is visible (a metric cannot score an object nobody can see) while partial
# occlusion stays common.
_MIN_VISIBLE_FRACTION = 0.2
_MAX_LAYOUT_ATTEMPTS = 200
_MIN_RADIUS_PX = 2.0  # smaller sprites rasterise to a few pixels and lose their shape


@dataclasses.dataclass(frozen=True)
class ShapesParams:
    """Everything that decides the pixels of a clip; its hash names the cache directory.

    Args:
        resolution: frame side H = W in pixels.
        n_frames: frames per stored clip.
        n_objects_min: fewest objects in a clip (>= 1).
        n_objects_max: most objects in a clip (<= 12); the count is uniform in [min, max].
        object_size_min: smallest sprite radius, as a fraction of the frame side.
        object_size_max: largest sprite radius, as a fraction of the frame side (< 0.5).
        max_speed: largest speed, in frame sides per frame; speeds are uniform in [max/4, max].
        max_angular_speed: largest rotation speed in radians per frame.
        background_noise: amplitude of the static background texture, in [0, 1] intensity units.
        pixel_noise: std of the per-frame Gaussian noise on every pixel, in [0, 1] intensity units.
        seed: dataset seed (not the training seed: every training run sees the same data).
    """

    resolution: int
    n_frames: int
    n_objects_min: int
    n_objects_max: int
    object_size_min: float
    object_size_max: float
    max_speed: float
    max_angular_speed: float
    background_noise: float
    pixel_noise: float
    seed: int

    def __post_init__(self) -> None:
        for key in ("resolution", "n_frames", "n_objects_min", "n_objects_max", "seed"):
            check(is_int(getattr(self, key)), key, getattr(self, key), "must be an integer")
        check(self.resolution > 0, "resolution", self.resolution, "must be > 0 (pixels)")
        check(self.n_frames >= 1, "n_frames", self.n_frames, "must be >= 1")
        check(self.n_objects_min >= 1, "n_objects_min", self.n_objects_min, "must be >= 1")
        check(
            self.n_objects_min <= self.n_objects_max <= _N_HUES,
            "n_objects_max",
            self.n_objects_max,
            f"must be in [dataset.n_objects_min={self.n_objects_min}, {_N_HUES}]",
        )
        check(
            0 < self.object_size_max < 0.5,
            "object_size_max",
            self.object_size_max,
            "must be in (0, 0.5) (sprite radius / frame side)",
        )
        check(
            0 < self.object_size_min <= self.object_size_max,
            "object_size_min",
            self.object_size_min,
            f"must be in (0, dataset.object_size_max={self.object_size_max}]",
        )
        check(
            self.object_size_min * self.resolution >= _MIN_RADIUS_PX,
            "object_size_min",
            self.object_size_min,
            f"gives a radius of {self.object_size_min * self.resolution:.2f} px at "
            f"dataset.resolution={self.resolution}; raise it to >= {_MIN_RADIUS_PX} px",
        )
        for key in ("max_speed", "max_angular_speed", "background_noise", "pixel_noise"):
            check(getattr(self, key) >= 0, key, getattr(self, key), "must be >= 0")
        check(self.seed >= 0, "seed", self.seed, "must be >= 0")

    def digest(self) -> str:
        """Short hash of the parameters and the generator version: the cache directory name."""
        spec = {"format_version": _FORMAT_VERSION, **dataclasses.asdict(self)}
        blob = json.dumps(spec, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


class ShapesClip(NamedTuple):
    """One generated clip.

    frames: (T, H, W, 3) uint8. masks: (T, H, W) uint8, 0 = background, object ids 1..N back to
    front. visible_fraction: (N, T) float, visible area / full area of each object per frame.
    """

    frames: np.ndarray
    masks: np.ndarray
    visible_fraction: np.ndarray


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether points (u, v) in object coordinates (units of the radius) lie in the shape.

    Every shape fits in the unit disc, so the radius bounds the sprite at any rotation.
    """
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "ellipse":
        return u * u + (v / 0.55) ** 2 <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.7
    if shape == "rhombus":
        return np.abs(u) + np.abs(v) / 0.6 <= 1.0
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
    theta = np.arctan2(v, u)
    rho = np.hypot(u, v)
    if shape == "triangle":  # inside iff the projection on the nearest edge normal is <= apothem
        sector = 2 * np.pi / 3
        phi = np.mod(theta, sector) - sector / 2
        return rho * np.cos(phi) <= np.cos(np.pi / 3)
    if shape == "star":  # 5 tips: the radius falls linearly (in angle) from 1 at a tip to 0.45
        sector = 2 * np.pi / 5
        to_tip = np.abs(np.mod(theta, sector) - sector / 2) / (sector / 2)  # 1 at a tip, 0 between
        return rho <= 0.45 + 0.55 * to_tip
    raise ValueError(f"unknown shape {shape!r}; choose from {SHAPES}")


def _texture(texture: str, u: np.ndarray, v: np.ndarray, radius: float, rng: np.random.Generator):
    """Blend weight in [0, 1] between an object's two shades, fixed to the object (moves with it).

    u, v: object coordinates of some pixels, in units of the radius, any shape. Returns the same shape.
    """
    # Pattern cells at least 2.5 px wide, so small sprites show a pattern rather than aliasing.
    cell = max(rng.uniform(0.35, 0.6), 2.5 / radius)
    if texture == "solid":
        return np.zeros_like(u)
    if texture == "stripes":
        return np.mod(np.floor(u / cell + rng.uniform()), 2)
    if texture == "checker":
        return np.mod(np.floor(u / cell + rng.uniform()) + np.floor(v / cell + rng.uniform()), 2)
    if texture == "gradient":
        return np.clip((u + 1) / 2, 0, 1)
    if texture == "noise":  # random blocks on a 4x4 grid over the sprite's bounding square
        grid = rng.uniform(size=(4, 4)).astype(np.float32)
        iu = np.clip(((u + 1) * 2).astype(np.int64), 0, 3)
        iv = np.clip(((v + 1) * 2).astype(np.int64), 0, 3)
        return grid[iv, iu]
    raise ValueError(f"unknown texture {texture!r}; choose from {TEXTURES}")


def _bounce(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Fold free motion x into [lo, hi] by reflecting at the borders (a triangle wave)."""
    span = hi - lo
    m = np.mod(x - lo, 2 * span)
    return lo + span - np.abs(m - span)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int = 4) -> np.ndarray:
    """(size, size) bilinear upsampling of a (cells+1)^2 Gaussian grid: blotches about size/cells."""
    x = (np.arange(size) + 0.5) / size * cells
    i0 = np.minimum(x.astype(np.int64), cells - 1)
    w = x - i0
    interp = np.zeros((size, cells + 1))
    interp[np.arange(size), i0] = 1 - w
    interp[np.arange(size), i0 + 1] = w
    return interp @ rng.standard_normal((cells + 1, cells + 1)) @ interp.T


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


class _Layout(NamedTuple):
    """Where the N objects of a clip are: shape index (N,), radius (N,) px, centre (N, T, 2) px as
    (x, y), and rotation angle (N, T) radians."""

    shape: np.ndarray
    radius: np.ndarray
    centre: np.ndarray
    angle: np.ndarray


def _sample_layout(rng: np.random.Generator, params: ShapesParams, n: int) -> _Layout:
    """Constant velocity and spin per object; bounces keep each sprite wholly inside the frame."""
    R, t = params.resolution, np.arange(params.n_frames)
    radius = rng.uniform(params.object_size_min, params.object_size_max, n) * R
    shape = rng.integers(len(SHAPES), size=n)
    speed = rng.uniform(0.25, 1.0, n) * params.max_speed * R
    heading = rng.uniform(0, 2 * np.pi, n)
    velocity = np.stack([np.cos(heading), np.sin(heading)], -1) * speed[:, None]  # (N, 2)
    lo, hi = radius[:, None, None], R - radius[:, None, None]  # (N, 1, 1)
    start = rng.uniform(lo[:, :, 0], hi[:, :, 0], (n, 2))
    centre = _bounce(start[:, None] + velocity[:, None] * t[None, :, None], lo, hi)  # (N, T, 2)
    spin = rng.uniform(-1, 1, n) * params.max_angular_speed
    angle = rng.uniform(0, 2 * np.pi, n)[:, None] + np.outer(spin, t)  # (N, T)
    return _Layout(shape, radius, centre, angle)


def _rasterise(layout: _Layout, R: int) -> tuple[np.ndarray, list, np.ndarray]:
    """Draw the objects back to front into an id mask.

    Returns:
        masks (T, H, W) uint8 (front-most id per pixel, 0 = background); per object its (u, v)
        coordinates, each (T, H, W) in units of its radius; visible fraction (N, T).
    """
    N, T = layout.angle.shape
    coords = np.arange(R, dtype=np.float32) + 0.5  # pixel centres
    masks = np.zeros((T, R, R), np.uint8)
    uv, full_area = [], []
    for k in range(N):  # a later object covers the earlier ones
        centre = layout.centre[k].astype(np.float32)
        dx = coords[None, None, :] - centre[:, 0, None, None]  # (T, 1, W)
        dy = coords[None, :, None] - centre[:, 1, None, None]  # (T, H, 1)
        cos = np.cos(layout.angle[k]).astype(np.float32)[:, None, None]
        sin = np.sin(layout.angle[k]).astype(np.float32)[:, None, None]
        u = (cos * dx + sin * dy) / layout.radius[k]  # (T, H, W)
        v = (cos * dy - sin * dx) / layout.radius[k]
        inside = _inside(SHAPES[layout.shape[k]], u, v)
        np.copyto(masks, np.uint8(k + 1), where=inside)
        uv.append((u, v))
        full_area.append(np.count_nonzero(inside, axis=(1, 2)))
    # One bincount over (frame, id) pairs counts every object's visible pixels in every frame.
    pairs = masks.reshape(T, -1) + (np.arange(T) * (N + 1))[:, None]
    visible = np.bincount(pairs.ravel(), minlength=T * (N + 1)).reshape(T, N + 1)[:, 1:].T
    return masks, uv, visible / np.maximum(np.stack(full_area), 1)


def _paint(
    rng: np.random.Generator, params: ShapesParams, masks: np.ndarray, uv: list, radius: np.ndarray
) -> np.ndarray:
    """Colour a rasterised clip: background, then each object's textured visible pixels, then noise.

    Returns frames (T, H, W, 3) uint8.
    """
    T, R, _ = masks.shape
    # A dull background keeps the saturated sprites distinguishable from it at any noise level.
    bg = _hsv(rng.uniform(), rng.uniform(0.05, 0.3), rng.uniform(0.25, 0.55))
    texture = _smooth_noise(rng, R) + 0.5 * rng.standard_normal((R, R))  # static over the clip
    frames = np.empty((T, R, R, 3), np.float32)
    frames[:] = bg + params.background_noise * texture[..., None].astype(np.float32)
    hue_slots = rng.permutation(_N_HUES)[: len(uv)]
    for k, (u, v) in enumerate(uv):
        hue = (hue_slots[k] + rng.uniform(-_HUE_JITTER, _HUE_JITTER)) / _N_HUES
        light = _hsv(hue, rng.uniform(0.65, 1.0), rng.uniform(0.7, 1.0))
        dark = light * rng.uniform(0.35, 0.55)  # same hue and saturation, darker
        visible = masks == k + 1  # (T, H, W); only these pixels need a colour
        texture_name = TEXTURES[rng.integers(len(TEXTURES))]
        weight = _texture(texture_name, u[visible], v[visible], radius[k], rng)  # (V,)
        frames[visible] = light + weight[:, None] * (dark - light)  # (V, 3)
    if params.pixel_noise > 0:
        frames += params.pixel_noise * rng.standard_normal(frames.shape, dtype=np.float32)
    return np.clip(np.rint(frames * 255), 0, 255).astype(np.uint8)


def generate_clip(rng: np.random.Generator, params: ShapesParams) -> ShapesClip:
    """Draw one clip from `rng`: a layout where every object stays visible, then its colours."""
    n = int(rng.integers(params.n_objects_min, params.n_objects_max + 1))
    # Only the layout is redrawn, not n: rejecting crowded clips would bias the object count down.
    for _ in range(_MAX_LAYOUT_ATTEMPTS):
        layout = _sample_layout(rng, params, n)
        masks, uv, visible_fraction = _rasterise(layout, params.resolution)
        if (visible_fraction >= _MIN_VISIBLE_FRACTION).all():
            frames = _paint(rng, params, masks, uv, layout.radius)
            return ShapesClip(frames, masks, visible_fraction)
    raise SlotsweepError(
        f"could not place {n} objects so that each stays >= {_MIN_VISIBLE_FRACTION:.0%} visible "
        f"in {_MAX_LAYOUT_ATTEMPTS} attempts: lower dataset.n_objects_max={params.n_objects_max} "
        f"or dataset.object_size_max={params.object_size_max}"
    )


def generate_split(params: ShapesParams, split: str, n_clips: int) -> tuple[np.ndarray, np.ndarray]:
    """Generate clips 0..n_clips-1 of a split.

    Returns:
        frames (N, T, H, W, 3) uint8 and masks (N, T, H, W) uint8 (0 = background).
    """
    if split not in _SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; choose from {list(_SPLIT_CODES)}")
    R, T = params.resolution, params.n_frames
    frames = np.empty((n_clips, T, R, R, 3), np.uint8)
    masks = np.empty((n_clips, T, R, R), np.uint8)
    for i in range(n_clips):
        # One stream per clip: clip i is the same whatever n_clips is or whoever generates it.
        rng = np.random.default_rng([params.seed, _SPLIT_CODES[split], i])
        frames[i], masks[i], _ = generate_clip(rng, params)
    return frames, masks


def _save_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write via a temporary file in the same directory, then rename, so no reader sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached_split(params: ShapesParams, split: str, n_clips: int, data_dir: str | Path) -> tuple[Path, Path]:
    """Paths of a split's .npy files in the cache, generating and writing them first if missing.

    Returns:
        the frames file, (N, T, H, W, 3) uint8, and the masks file, (N, T, H, W) uint8.
    """
    root = Path(data_dir) / "shapes" / params.digest()
    frames_path, masks_path = root / f"{split}-{n_clips}_frames.npy", root / f"{split}-{n_clips}_masks.npy"
    if frames_path.exists() and masks_path.exists():
        return frames_path, masks_path
    start = time.perf_counter()
    frames, masks = generate_split(params, split, n_clips)
    root.mkdir(parents=True, exist_ok=True)
    # Two processes may generate at once: both write identical bytes, and each rename is atomic.
    spec = json.dumps(dataclasses.asdict(params), indent=2, sort_keys=True).encode()
    _save_atomic(root / "params.json", lambda f: f.write(spec))
    _save_atomic(frames_path, lambda f: np.save(f, frames))
    _save_atomic(masks_path, lambda f: np.save(f, masks))
    elapsed = time.perf_counter() - start
    log.info("generated %d shapes %s clips in %.1fs into %s", n_clips, split, elapsed, root)
    return frames_path, masks_path


class ShapesClips(Dataset):
    """The clips of one cached split, opened lazily so that worker processes map the file themselves.

    Args:
        frames_path: .npy file of frames (N, T, H, W, 3) uint8.
        masks_path: .npy file of masks (N, T, H, W) uint8.
        window: frames per sample, a random contiguous window; None for the whole clip.
        hflip: flip a sample horizontally with probability 0.5 (all its frames together).
        n_mask_channels: K, to return one-hot masks (T, K, H, W) and the uint8 frames
            (validation); None for the video only.
        features: cached encoder outputs of these clips (slotsweep.cache): samples then hold
            `features` and `keys` (t, P, D) float16 of the same frames and flip instead of `video`.
    Random draws use torch's generator, which Lightning/torch seed per worker from the global seed;
    they are the same with and without `features`, so both give the same samples.
    """

    def __init__(
        self,
        frames_path: Path,
        masks_path: Path,
        window: int | None = None,
        hflip: bool = False,
        n_mask_channels: int | None = None,
        features: FeatureStore | None = None,
        input_size: int | None = None,
    ) -> None:
        self.frames_path, self.masks_path = frames_path, masks_path
        self.input_size = input_size
        self.window, self.hflip, self.n_mask_channels = window, hflip, n_mask_channels
        self.features = features
        self._frames, self._masks = self._open()
        self._len = len(self._frames)

    def _open(self) -> tuple[np.ndarray, np.ndarray]:
        try:
            frames = np.load(self.frames_path, mmap_mode="r")
            masks = np.load(self.masks_path, mmap_mode="r")
        except ValueError as err:
            raise SlotsweepError(
                f"corrupt cache file in {self.frames_path.parent}: {err}; delete that directory "
                "to regenerate it"
            ) from err
        if frames.shape[:-1] != masks.shape:
            raise SlotsweepError(
                f"{self.frames_path} {frames.shape} and {self.masks_path} {masks.shape} do not "
                "match; delete that directory to regenerate it"
            )
        return frames, masks

    def _resize(self, video: Tensor) -> Tensor:
        """(T, 3, H, W) -> (T, 3, S, S) at the encoder's input size; masks and rgb keep H x W.

        Bilinear weights are convex, so resizing normalised frames equals normalising resized ones.
        """
        if self.input_size is None or self.input_size == video.shape[-1]:
            return video
        return F.interpolate(video, size=(self.input_size,) * 2, mode="bilinear", antialias=True)

    def __getstate__(self) -> dict:
        # Send paths, not array contents, to spawned workers; each maps the files itself.
        return {**self.__dict__, "_frames": None, "_masks": None}

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self._frames is None:
            self._frames, self._masks = self._open()
        frames, masks = self._frames[index], self._masks[index]  # (T, H, W, 3), (T, H, W)
        window = slice(None)
        if self.window is not None:
            start = int(torch.randint(0, len(frames) - self.window + 1, ()))
            window = slice(start, start + self.window)
            frames, masks = frames[window], masks[window]
        flipped = self.hflip and bool(torch.rand(()) < 0.5)
        if flipped:
            frames, masks = frames[:, :, ::-1], masks[:, :, ::-1]
        if self.features is None:
            sample = {"video": self._resize(frames_to_tensor(frames))}  # (T, 3, S, S)
        else:
            sample = self.features.read(index, window, int(flipped))  # features, keys: (T, P, D)
        if self.n_mask_channels is not None:
            ids = torch.from_numpy(np.array(masks)).long()  # (T, H, W)
            one_hot = F.one_hot(ids, self.n_mask_channels)  # (T, H, W, K)
            sample["masks"] = one_hot.permute(0, 3, 1, 2).bool()  # (T, K, H, W)
            sample["rgb"] = torch.from_numpy(np.array(frames))  # (T, H, W, 3)
        return sample


def _clip_views(clips: ShapesClips, hflip: bool) -> Iterator[ClipViews]:
    """Each whole clip's views for the feature cache: (V, T, 3, S, S), the flip second."""
    for index in range(len(clips)):
        video = clips[index]["video"]  # (T, 3, S, S)
        views = torch.stack([video, video.flip(-1)]) if hflip else video[None]
        yield ClipViews(views, {"clip": index})


class ShapesDataModule(L.LightningDataModule):
    """The `shapes` dataset as Lightning loaders; the constructor args are conf/dataset/shapes.yaml.

    Train batches: {"video": (B, train_clip_frames, 3, H, W) float32, ImageNet-normalised}.
    Val batches add {"masks": (B, T, K, H, W) bool with K = n_objects_max + 1 and channel 0 the
    background, "rgb": (B, T, H, W, 3) uint8, "index": (B,) int64} over full clips of T = n_frames
    frames, every val clip exactly once over all DDP ranks (streams.ValidationStream). Generator
    args are documented on `ShapesParams`. After `use_feature_cache` (slotsweep.cache,
    `cache=true`) batches hold the frozen encoder's outputs {"features", "keys": (B, T, P, D)
    float16} of the same frames instead of "video".

    Args:
        data_dir: data root; the cache lives under <data_dir>/shapes/.
        n_train_clips: clips in the train split.
        n_val_clips: clips in the val split.
        train_clip_frames: frames per train sample (<= n_frames).
        batch_size: train batch size (<= n_train_clips; the last partial batch is dropped).
        val_batch_size: validation batch size.
        num_workers: DataLoader worker processes (0 = load in the main process).
        hflip: train augmentation, a horizontal flip of a whole sample with probability 0.5.
    """

    # the facts of contracts.DataModule (mask_size is the resolution, a property)
    dataset_name = "shapes"
    val_frames = val_frames()  # whole clips of n_frames
    val_batch_keys = ("video", "masks", "rgb", "index")
    ignore_background = True  # channel 0 of the val masks is the background, MOVi style
    ignore_overlaps = False  # each pixel belongs to exactly one channel

    def __init__(
        self,
        data_dir: str,
        n_frames: int,
        resolution: int,
        n_objects_min: int,
        n_objects_max: int,
        n_train_clips: int,
        n_val_clips: int,
        seed: int,
        train_clip_frames: int,
        batch_size: int,
        val_batch_size: int,
        num_workers: int,
        hflip: bool,
        input_size: int | None,
        object_size_min: float,
        object_size_max: float,
        max_speed: float,
        max_angular_speed: float,
        background_noise: float,
        pixel_noise: float,
    ) -> None:
        super().__init__()
        self.params = ShapesParams(
            resolution=resolution,
            n_frames=n_frames,
            n_objects_min=n_objects_min,
            n_objects_max=n_objects_max,
            object_size_min=object_size_min,
            object_size_max=object_size_max,
            max_speed=max_speed,
            max_angular_speed=max_angular_speed,
            background_noise=background_noise,
            pixel_noise=pixel_noise,
            seed=seed,
        )
        for key, value in [
            ("n_train_clips", n_train_clips),
            ("n_val_clips", n_val_clips),
            ("train_clip_frames", train_clip_frames),
            ("batch_size", batch_size),
            ("val_batch_size", val_batch_size),
        ]:
            check(is_int(value) and value >= 1, key, value, "must be an integer >= 1")
        check(
            train_clip_frames <= n_frames,
            "train_clip_frames",
            train_clip_frames,
            f"must be <= dataset.n_frames={n_frames}",
        )
        check(
            batch_size <= n_train_clips,
            "batch_size",
            batch_size,
            f"must be <= dataset.n_train_clips={n_train_clips} (partial batches are dropped)",
        )
        check(is_int(num_workers) and num_workers >= 0, "num_workers", num_workers, "must be >= 0")
        check(isinstance(hflip, bool), "hflip", hflip, "must be true or false")
        self.data_dir = Path(data_dir)
        self.n_train_clips, self.n_val_clips = n_train_clips, n_val_clips
        self.train_clip_frames = train_clip_frames
        self.batch_size, self.val_batch_size = batch_size, val_batch_size
        self.num_workers, self.hflip = num_workers, hflip
        check(
            input_size is None or (is_int(input_size) and input_size > 0),
            "input_size",
            input_size,
            "must be > 0 (pixels) or null",
        )
        self.input_size = input_size
        self.train_set: ShapesClips | None = None
        self.val_set: ShapesClips | None = None
        self.feature_stores: dict[str, FeatureStore] = {}  # set by slotsweep.cache

    @property
    def n_frames(self) -> int:
        """Frames per stored clip, i.e. per validation sample."""
        return self.params.n_frames

    @property
    def resolution(self) -> int:
        """Frame side H = W in pixels."""
        return self.params.resolution

    @property
    def mask_size(self) -> int:
        """Validation masks are at the frame resolution."""
        return self.params.resolution

    @property
    def n_mask_channels(self) -> int:
        """K of the validation masks: the background plus n_objects_max objects."""
        return self.params.n_objects_max + 1

    def _split(self, split: str) -> tuple[Path, Path]:
        n_clips = self.n_train_clips if split == "train" else self.n_val_clips
        return cached_split(self.params, split, n_clips, self.data_dir)

    def prepare_data(self) -> None:
        # Lightning calls this on one process per node, so DDP ranks do not all generate.
        for split in _SPLIT_CODES:
            self._split(split)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.train_set = ShapesClips(
                *self._split("train"),
                window=self.train_clip_frames,
                hflip=self.hflip,
                features=self.feature_stores.get("train"),
                input_size=self.input_size,
            )
        self.val_set = ShapesClips(
            *self._split("val"),
            n_mask_channels=self.n_mask_channels,
            features=self.feature_stores.get("val"),
            input_size=self.input_size,
        )

    def feature_cache_sources(self, stage: str | None = None) -> dict[str, ClipSource]:
        """The splits `stage` reads as the feature cache encodes them: whole stored clips,
        normalised, unflipped and (train with hflip) flipped: view 0 plain, view 1 flipped."""
        sources = {}
        splits = [("train", self.hflip)] if stage in (None, "fit") else []
        for split, hflip in [*splits, ("val", False)]:
            n_clips = self.n_train_clips if split == "train" else self.n_val_clips
            identity = {
                "dataset": "shapes",
                "format_version": _FORMAT_VERSION,
                "params": dataclasses.asdict(self.params),
                "n_clips": n_clips,
                "normalisation": {"mean": IMAGENET_MEAN, "std": IMAGENET_STD},
                "input_size": self.input_size,
                "hflip": hflip,
            }
            clips = ShapesClips(*self._split(split), input_size=self.input_size)
            n_frames = n_clips * self.params.n_frames
            sources[split] = ClipSource(identity, _clip_views(clips, hflip), 2 if hflip else 1, n_frames)
        return sources

    def use_feature_cache(self, stores: dict[str, FeatureStore]) -> None:
        """Read encoder outputs from `stores` ({split: store}) instead of decoding frames."""
        self.feature_stores = dict(stores)
        if self.train_set is not None or self.val_set is not None:  # already set up: redo it
            self.setup("fit" if self.train_set is not None else "validate")

    def _loader(self, dataset: ShapesClips | None, **kwargs) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call ShapesDataModule.setup() before asking for a dataloader")
        return DataLoader(
            dataset,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        # Equal train batches; under DDP Lightning gives each rank its own shuffled share.
        return self._loader(self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        val_set = None if self.val_set is None else map_stream(self.val_set, self.val_batch_size)
        return self._loader(val_set, batch_size=None)  # the stream batches itself

"""Run a trained checkpoint on any video (file or folder of frames), chunk by chunk.

Slots carry across chunk borders (the predicted slots of a chunk's last frame start the next
chunk), so the result equals one pass over the whole video while memory stays bounded by the
chunk length. Frames become the model's square input as the user chooses (`RESIZE_MODES`), on the
device the user chooses (`resolve_device`); both are said in the log. The masks come back on the
whole frame, at its own size: the crop is the model's input only. Where the model saw nothing (the
sides a centre crop cuts off) masks.npz holds `OUTSIDE` and the overlay is dimmed.
"""

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from PIL import Image
from torch import Tensor

from slotsweep.build import build_model, checkpoint_config
from slotsweep.data.transforms import frames_to_tensor
from slotsweep.errors import SlotsweepError
from slotsweep.evaluation.masks import patch_grid
from slotsweep.evaluation.visualize import overlay
from slotsweep.models.initializers import check_n_slots
from slotsweep.models.object_centric import ObjectCentricModel

__all__ = [
    "OUTSIDE",
    "RESIZE_MODES",
    "FrameSource",
    "fit_to_square",
    "infer_video",
    "load_checkpoint_model",
    "masks_on_frame",
    "resolve_device",
    "run_inference",
    "view_box",
]

log = logging.getLogger(__name__)

# How a (H, W) frame becomes the model's (S, S) input.
RESIZE_MODES = {
    "short_side_crop": "short side resized to {S}, centred {S}x{S} crop (the reference's inference)",
    "stretch": "whole frame resized to {S}x{S} (aspect ratio not kept)",
}
OUTSIDE = 255  # masks.npz label of the pixels the model's input did not show
_DIM = 0.35  # brightness of those pixels in the overlay
ACCELERATORS = ("auto", "cpu", "gpu")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


class FrameSource:
    """Random-access frames of a video file (decord) or a folder of images, as uint8 (T, H, W, 3)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise SlotsweepError(f"video={self.path} does not exist: give a video file or a folder of frames")
        if self.path.is_dir():
            self.files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.files:
                raise SlotsweepError(f"video={self.path} is a folder without image frames ({IMAGE_SUFFIXES})")
            self.n_frames = len(self.files)
        else:
            import decord

            try:
                self.reader = decord.VideoReader(str(self.path), ctx=decord.cpu(0))
            except (decord.DECORDError, RuntimeError) as e:  # decord raises both for bad files
                raise SlotsweepError(f"video={self.path} cannot be decoded ({str(e).splitlines()[0]})") from e
            self.n_frames = len(self.reader)
        if self.n_frames == 0:
            raise SlotsweepError(f"video={self.path} has no frames")

    def read(self, start: int, stop: int) -> np.ndarray:
        if self.path.is_dir():
            return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in self.files[start:stop]])
        return self.reader.get_batch(list(range(start, stop))).asnumpy()

    def chunks(self, size: int) -> Iterator[np.ndarray]:
        for start in range(0, self.n_frames, size):
            yield self.read(start, min(start + size, self.n_frames))


def view_box(height: int, width: int, mode: str) -> tuple[int, int, int, int]:
    """(top, left, h, w): the part of a (height, width) frame that the model's square input shows
    under RESIZE_MODES[mode] (short_side_crop: the centred full square; stretch: all of it)."""
    _check_resize(mode)
    if mode == "short_side_crop":
        side = min(height, width)
        return (height - side) // 2, (width - side) // 2, side, side
    return 0, 0, height, width


def fit_to_square(frames: np.ndarray, size: int, mode: str) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, size, size, 3) uint8, bilinear, as RESIZE_MODES[mode] says.

    short_side_crop takes the centred full square (side min(H, W)) before resizing, which is the
    same as resizing the short side to `size` and cropping the centre (videosaur.md §7).
    """
    top, left, h, w = view_box(*frames.shape[1:3], mode)
    frames = frames[:, top : top + h, left : left + w]
    images = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # (T, 3, h, w)
    resized = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)
    return resized.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def masks_on_frame(masks: Tensor, height: int, width: int, mode: str) -> Tensor:
    """The model's patch masks on the whole frame: bilinear into view_box, 0 outside it.

    Args:
        masks: (t, S, P) soft masks over the patches of the model's square input.
    Returns:
        (t, S, H, W) with H, W = height, width.
    """
    top, left, h, w = view_box(height, width, mode)
    t, S, P = masks.shape
    grid = masks.reshape(t, S, *patch_grid(P, (1, 1)))  # the model's input is square: so is its grid
    # bilinear as resize_patch_masks, but to the region's own shape (stretch: not square)
    inside = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)  # (t, S, h, w)
    full = inside.new_zeros(t, S, height, width)
    full[..., top : top + h, left : left + w] = inside
    return full


def _check_resize(mode: str) -> None:
    if mode not in RESIZE_MODES:
        raise SlotsweepError(f"resize={mode} is not a resize mode: choose one of {sorted(RESIZE_MODES)}")


def resolve_device(accelerator: str) -> torch.device:
    """auto: the GPU when there is one, else the CPU; gpu: a GPU or an error (never a silent CPU run)."""
    if accelerator not in ACCELERATORS:
        raise SlotsweepError(f"accelerator={accelerator} is not one of {list(ACCELERATORS)}")
    has_gpu = torch.cuda.is_available()
    if accelerator == "gpu" and not has_gpu:
        raise SlotsweepError(
            "accelerator=gpu but torch sees no CUDA GPU (check CUDA_VISIBLE_DEVICES and the driver); "
            "use accelerator=cpu or accelerator=auto"
        )
    return torch.device("cuda" if accelerator != "cpu" and has_gpu else "cpu")


def load_checkpoint_model(
    ckpt: str | Path,
    config: str | Path | None = None,
    allow_pickle: bool = False,
    overrides: Sequence[str] = (),
) -> tuple[ObjectCentricModel, DictConfig]:
    """The model of a training run: weights from `ckpt`, config from it (or from `config`) with
    the dotlist `overrides` (build.checkpoint_config; e.g. encoder.weights=<file> where a frozen
    encoder it left out must be rebuilt from a file that has moved).

    allow_pickle: read a checkpoint that needs arbitrary unpickling (trusted files only).
    """
    cfg = checkpoint_config(ckpt, config, overrides, allow_pickle)
    model, _ = build_model(cfg, ckpt=ckpt)
    return model.eval(), cfg


@torch.no_grad()
def infer_video(
    model: ObjectCentricModel,
    source: FrameSource,
    chunk_size: int = 8,
    n_slots: int | None = None,
    seed: int = 0,
    resize: str = "short_side_crop",
) -> Iterator[tuple[np.ndarray, Tensor]]:
    """Yield (frames (t, H, W, 3) uint8 as read, soft masks (t, n_slots, H, W) on those frames) per
    chunk; the model sees each frame as RESIZE_MODES[resize] says (masks_on_frame maps back)."""
    size = model.encoder.img_size
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    slots = None
    for frames in source.chunks(chunk_size):
        video = frames_to_tensor(fit_to_square(frames, size, resize))[None].to(device)  # (1, t, 3, S, S)
        out = model(video=video, carried_slots=slots, n_slots=n_slots, generator=generator)
        slots = out.slots_predicted[:, -1]  # carried into the next chunk
        yield frames, masks_on_frame(out.decoder_masks[0], *frames.shape[1:3], resize).cpu()


def run_inference(cfg: DictConfig) -> Path:
    """conf/infer.yaml -> <out>/overlay.mp4 (frame | mask overlay) and <out>/masks.npz: `masks`
    (T, H, W) uint8 slot labels on the video's own frames (OUTSIDE where the model saw nothing) and
    `view_box` (top, left, h, w), the part of the frame the model saw."""
    device = resolve_device(cfg.accelerator)  # before the model loads: a missing GPU fails at once
    _check_resize(cfg.resize)
    if cfg.n_slots is not None:
        check_n_slots(cfg.n_slots, "n_slots")
    model, _ = load_checkpoint_model(cfg.ckpt, cfg.config, cfg.allow_pickle, list(cfg.overrides))
    model.to(device)
    source = FrameSource(cfg.video)
    height, width = source.read(0, 1).shape[1:3]
    box = view_box(height, width, cfg.resize)
    how = _how(cfg.resize, model.encoder.img_size, box, height, width)
    log.info(f"infer: {source.n_frames} frames of {width}x{height} on {device}: {how}")
    out_dir = (
        Path(cfg.out) if cfg.out is not None else Path(cfg.video).with_name(Path(cfg.video).stem + "_slots")
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    top, left, h, w = box
    unseen = np.ones((height, width), dtype=bool)
    unseen[top : top + h, left : left + w] = False
    labels = []
    with iio.imopen(out_dir / "overlay.mp4", "w", plugin="pyav") as writer:
        writer.init_video_stream("libx264", fps=cfg.fps)
        chunks = infer_video(model, source, cfg.chunk_size, cfg.n_slots, cfg.seed, cfg.resize)
        for frames, soft in chunks:
            hard = soft.argmax(dim=1).numpy().astype(np.uint8)  # (t, H, W) slot index per pixel
            hard[:, unseen] = OUTSIDE
            labels.append(hard)
            blended = overlay(frames, soft.numpy())
            blended[:, unseen] = (frames[:, unseen] * _DIM).astype(np.uint8)
            panels = np.concatenate([frames, blended], axis=2)  # (t, H, 2W, 3)
            for panel in panels:
                writer.write_frame(_even(panel))
    np.savez_compressed(out_dir / "masks.npz", masks=np.concatenate(labels), view_box=np.array(box))
    return out_dir


def _how(resize: str, size: int, box: tuple[int, int, int, int], height: int, width: int) -> str:
    """The log's account of what the model saw and where the masks are."""
    how = f"{RESIZE_MODES[resize].format(S=size)} (resize={resize})"
    top, left, h, w = box
    if (h, w) == (height, width):
        return f"{how}; masks on the whole frame"
    return (
        f"{how}; masks on the whole {width}x{height} frame: the model saw x {left}-{left + w}, "
        f"y {top}-{top + h}, elsewhere masks.npz holds {OUTSIDE} and the overlay is dimmed "
        "(resize=stretch shows the model all of it)"
    )


def _even(panel: np.ndarray) -> np.ndarray:
    """(h, w, 3) padded by edge pixels to even sides: H.264's 4:2:0 video needs them."""
    h, w = panel.shape[:2]
    return np.pad(panel, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")

"""Run a trained checkpoint on any video (file or folder of frames), chunk by chunk.

Slots carry across chunk borders (the predicted slots of a chunk's last frame start the next
chunk), so the result equals one pass over the whole video while memory stays bounded by the
chunk length.
"""

from collections.abc import Iterator
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import Tensor

from slotsweep.checkpoints import load_model_weights
from slotsweep.data.transforms import frames_to_tensor
from slotsweep.errors import SlotsweepError
from slotsweep.masks import resize_patch_masks
from slotsweep.models.object_centric import ObjectCentricModel
from slotsweep.visualize import overlay

__all__ = ["FrameSource", "infer_video", "load_checkpoint_model", "run_inference"]

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


def square_resize(frames: np.ndarray, size: int) -> np.ndarray:
    """Centred full square crop, then bilinear resize to size x size: (T, H, W, 3) uint8 -> same."""
    T, H, W, _ = frames.shape
    side = min(H, W)
    top, left = (H - side) // 2, (W - side) // 2
    crop = torch.from_numpy(np.ascontiguousarray(frames[:, top : top + side, left : left + side]))
    resized = F.interpolate(
        crop.permute(0, 3, 1, 2).float(), size=(size, size), mode="bilinear", antialias=True
    )
    return resized.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def load_checkpoint_model(
    ckpt: str | Path, config: str | Path | None = None, allow_pickle: bool = False
) -> tuple[ObjectCentricModel, DictConfig]:
    """The model of a training run, weights from `ckpt`, config from the run's config.yaml.

    allow_pickle: read a checkpoint that needs arbitrary unpickling (trusted files only).
    """
    from slotsweep.training import build_model  # training imports Lightning; keep this module light

    ckpt = Path(ckpt)
    config = Path(config) if config is not None else ckpt.parent.parent / "config.yaml"
    if not ckpt.is_file():
        raise SlotsweepError(
            f"ckpt={ckpt} does not exist: give a checkpoint, e.g. <run_dir>/checkpoints/last.ckpt"
        )
    if not config.is_file():
        raise SlotsweepError(f"config={config} does not exist: pass config=<the run's config.yaml>")
    cfg = OmegaConf.load(config)
    cfg.encoder.pretrained, cfg.encoder.weights = False, None  # the checkpoint holds the encoder too
    cfg.load_weights, cfg.allow_pickle = None, allow_pickle
    model, _ = build_model(cfg)
    load_model_weights(model, ckpt, "ckpt", allow_pickle)
    return model.eval(), cfg


@torch.no_grad()
def infer_video(
    model: ObjectCentricModel,
    source: FrameSource,
    chunk_size: int = 8,
    n_slots: int | None = None,
    seed: int = 0,
) -> Iterator[tuple[np.ndarray, Tensor]]:
    """Yield (frames (t, S, S, 3) uint8 as fed to the model, soft masks (t, n_slots, S, S)) per chunk."""
    size = model.encoder.img_size
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    slots = None
    for frames in source.chunks(chunk_size):
        frames = square_resize(frames, size)
        video = frames_to_tensor(frames)[None].to(device)  # (1, t, 3, S, S)
        out = model(video=video, initial_slots=slots, n_slots=n_slots, generator=generator)
        slots = out.slots_predicted[:, -1]  # carried into the next chunk
        yield frames, resize_patch_masks(out.decoder_masks, (size, size))[0].cpu()


def run_inference(cfg: DictConfig) -> Path:
    """conf/infer.yaml -> <out>/overlay.mp4 (frame | mask overlay) and <out>/masks.npz (T, S, S) labels."""
    model, _ = load_checkpoint_model(cfg.ckpt, cfg.config, cfg.allow_pickle)
    if cfg.n_slots is not None and cfg.n_slots < 1:
        raise SlotsweepError(f"n_slots={cfg.n_slots} must be >= 1")
    source = FrameSource(cfg.video)
    out_dir = (
        Path(cfg.out) if cfg.out is not None else Path(cfg.video).with_name(Path(cfg.video).stem + "_slots")
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = []
    with iio.imopen(out_dir / "overlay.mp4", "w", plugin="pyav") as writer:
        writer.init_video_stream("libx264", fps=cfg.fps)
        for frames, soft in infer_video(model, source, cfg.chunk_size, cfg.n_slots, cfg.seed):
            hard = soft.argmax(dim=1).numpy().astype(np.uint8)  # (t, S, S) slot index per pixel
            labels.append(hard)
            panels = np.concatenate([frames, overlay(frames, soft.numpy())], axis=2)  # (t, S, 2S, 3)
            for panel in panels:
                writer.write_frame(panel)
    np.savez_compressed(out_dir / "masks.npz", masks=np.concatenate(labels))
    return out_dir

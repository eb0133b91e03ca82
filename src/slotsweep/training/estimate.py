"""What a training run will cost, before it runs: `python src/estimate.py <train.py overrides> [gpu=h100]`.

FLOPs are counted by `torch.utils.flop_counter` on the real modules of the composed config, built
on the meta device (shapes only: no weights, no data, no hub access; seconds on a laptop): the
frozen encoder's forward on one clip, and the trainable parts' forward + backward from its
features, both scaled to the batch. Bytes per step follow from the shapes: stored uint8 frames
through the loader, float16 features and keys through the feature cache. Time is FLOPs over a
device's peak times an efficiency (conf/estimate/devices.yaml: datasheet peaks, efficiencies
estimated without a GPU unless the file says measured), or the host copies when the cache is read
faster than that. Split sizes come from the dataset YAML's `_split_sizes_` declaration, so the
official datasets need nothing on disk.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from slotsweep.build import build_model
from slotsweep.contracts import EncoderOutput
from slotsweep.errors import SlotsweepError
from slotsweep.losses import channel_layout
from slotsweep.runs.experiment import SPLIT_SIZES_DECLARATION, total_batch_size

__all__ = ["DEVICES_FILE", "Forecast", "count_flops", "forecast", "load_devices", "precision_format"]

DEVICES_FILE = Path(__file__).resolve().parents[3] / "conf" / "estimate" / "devices.yaml"
FORMATS = ("fp32", "tf32", "bf16")
_CACHE_BYTES = 2  # float16 features and keys


def load_devices(path: Path = DEVICES_FILE) -> dict[str, Any]:
    """The device table: {name: {name, tflops, efficiency, host_gb_s}, loader_ms_per_megapixel_read}."""
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def precision_format(precision: str, device: str) -> str:
    """The number format a `trainer.precision` runs its matmuls in on `device`: fp32, tf32 or bf16.

    32-true is strict fp32, as the reference trained ("tf32" is listed beside it to show what TF32
    matmuls would give); 16/bf16 settings run on the tensor cores at the bf16 rate; auto is bf16
    on a GPU and fp32 on the CPU.
    """
    precision = str(precision)
    if precision == "auto":
        return "fp32" if device == "cpu" else "bf16"
    if precision.startswith(("bf16", "16")):
        return "fp32" if device == "cpu" else "bf16"
    if precision.startswith(("32", "64")):
        return "fp32"
    raise SlotsweepError(
        f"trainer.precision={precision} is not one estimate knows: use 32-true, bf16-mixed or auto"
    )


def _meta_model(cfg: DictConfig):
    """The config's model and losses on the meta device, random-init semantics (no weights read)."""
    cfg = cfg.copy()
    with open_dict(cfg):
        if "pretrained" in cfg.encoder:
            cfg.encoder.pretrained = False
        if "weights" in cfg.encoder:
            cfg.encoder.weights = None
        cfg.load_weights = None
    with torch.device("meta"):
        model, losses = build_model(cfg)
    # Fake CPU tensors: shapes without storage, but on a device autocast knows (the losses' guard).
    with FakeTensorMode(allow_non_fake_inputs=True):
        return model.to_empty(device="cpu"), {k: v.to_empty(device="cpu") for k, v in losses.items()}


def _cpu_attention(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_attention_backward(grad_shape, query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_shape, query_shape, key_shape, value_shape)


# The counter knows the GPU attention kernels; on (fake) CPU tensors SDPA runs these instead.
_CPU_KERNELS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward,
}


def _flops(fn) -> int:
    with FlopCounterMode(display=False, custom_mapping=_CPU_KERNELS) as counter:
        fn()
    return counter.get_total_flops()


@dataclass(frozen=True)
class Flops:
    """FLOPs counted on the real modules at one clip of `frames` frames."""

    encoder_per_frame: int  # frozen encoder forward, per frame
    trainable_per_clip: int  # everything after the encoder, forward + backward, per clip
    trainable_forward_per_clip: int  # the same, forward only (validation)
    frames: int  # frames of the counted clip
    n_patches: int  # P
    feat_dim: int  # D of the features and keys
    input_size: int  # side of the square model input in pixels (the encoder's img_size)


def count_flops(cfg: DictConfig) -> Flops:
    """Count the config's model at batch 1, clip length dataset.train_clip_frames, on meta tensors."""
    model, losses = _meta_model(cfg)
    T, S = cfg.dataset.train_clip_frames, model.encoder.img_size
    with FakeTensorMode(allow_non_fake_inputs=True):
        video = torch.empty(1, T, 3, S, S)
    with torch.no_grad():
        encoder = _flops(lambda: model.encode(video))
        features = model.encode(video)
    split = channel_layout(losses, model.encoder)

    def trainable(backward: bool) -> None:
        out = model(features=EncoderOutput(features.features, features.keys))
        predictions = out.reconstruction.split(split, dim=-1)
        total = sum(loss.weight * loss(p, out) for loss, p in zip(losses.values(), predictions, strict=True))
        if backward:
            total.backward()

    forward = _flops(lambda: trainable(False))  # (grad mode on: the counter's module hooks need it)
    return Flops(
        encoder_per_frame=encoder // T,
        trainable_per_clip=_flops(lambda: trainable(True)),
        trainable_forward_per_clip=forward,
        frames=T,
        input_size=S,
        n_patches=model.encoder.n_patches,
        feat_dim=model.encoder.feat_dim,
    )


def _split_sizes(dataset: DictConfig) -> dict[str, dict[str, int]] | None:
    sizes = dataset.get(SPLIT_SIZES_DECLARATION)
    if sizes is None:
        return None
    sizes = OmegaConf.to_container(sizes, resolve=True)
    for split in ("train", "val"):
        entry = sizes.get(split, {}) if isinstance(sizes, dict) else {}
        keys = ("videos", "frames_per_video", "height", "width")
        if not all(isinstance(entry.get(k), int | float) and entry.get(k) > 0 for k in keys):
            raise SlotsweepError(
                f"dataset.{SPLIT_SIZES_DECLARATION}.{split}={entry} must give {list(keys)} > 0 "
                "(videos in the split, their mean length, stored frame height and width)"
            )
    return sizes


@dataclass(frozen=True)
class Forecast:
    """One config's forecast; `asdict` is `format=json`'s object."""

    experiment: str
    device: str
    device_name: str
    precision: str  # the number format the config trains in on that device
    max_steps: int
    clips_per_step: int
    frames_per_step: int
    encoder_gflops_per_frame: float
    encoder_flops_per_step: float  # 0 with cache=true (the cache build is counted apart)
    trainable_flops_per_step: float
    loader_bytes_per_step: int  # stored uint8 frames
    loader_float32_bytes_per_step: int  # the same batch resized to float32 input (the CPU-transform path)
    cache_bytes_per_step: int  # float16 features + keys, what cache=true reads instead
    step_seconds: dict[str, float]  # per number format
    gpu_hours: dict[str, float]  # max_steps + validations, per number format
    validation_seconds: float  # one whole validation, at the config's format
    cache_build_hours: float | None  # encoding every train and val view once (cache=true)
    cache_bytes: dict[str, int] | None  # feature cache size per split, views included
    cache_views: dict[str, int]
    loader_frames_per_s: float  # what the device consumes at the config's format
    loader_cores: float | None  # CPU cores the loader needs to keep up (uint8 path, this machine's cores)
    loader_workers: int  # dataset.num_workers: what the config gives it (docs/datasets.md, loader budget)
    split_sizes: dict[str, dict[str, int]] | None
    assumptions: list[str]


def forecast(
    cfg: DictConfig, device: str = "h100", flops: Flops | None = None, devices: dict[str, Any] | None = None
) -> Forecast:
    """The forecast of a composed train config on `device`, a key of `devices` (default: the table
    of conf/estimate/devices.yaml); `flops` when already counted."""
    devices = devices or load_devices()
    names = [k for k, v in devices.items() if isinstance(v, dict)]
    if device not in names:
        raise SlotsweepError(f"gpu={device} is not a device of {DEVICES_FILE.name}: choose from {names}")
    spec = devices[device]
    flops = flops or count_flops(cfg)
    data = cfg.dataset
    B, T = total_batch_size(cfg), data.train_clip_frames
    frames = B * T
    cached = bool(cfg.cache)
    encoder_step = 0 if cached else flops.encoder_per_frame * frames
    trainable_step = flops.trainable_per_clip * B
    sizes = _split_sizes(data)
    # without declared split sizes, frames are taken as stored at the model's input size
    stored = (sizes["train"]["height"], sizes["train"]["width"]) if sizes else (flops.input_size,) * 2
    S = flops.n_patches, flops.feat_dim
    per_frame_cache = 2 * S[0] * S[1] * _CACHE_BYTES  # features and keys
    cache_step = frames * per_frame_cache
    fmt = precision_format(cfg.trainer.precision, device)

    def seconds(flop_count: float, number_format: str) -> float:
        rate = spec["tflops"][number_format] * 1e12 * spec["efficiency"][number_format]
        return flop_count / rate

    host_s = cache_step / (spec["host_gb_s"] * 1e9) if cached else 0.0
    step = {f: max(seconds(encoder_step + trainable_step, f), host_s) for f in FORMATS}
    n_val = cfg.trainer.max_steps // cfg.trainer.val_check_interval if cfg.trainer.val_check_interval else 0
    val_frames = sizes["val"]["videos"] * sizes["val"]["frames_per_video"] if sizes else 0
    val_flops = val_frames * (flops.encoder_per_frame + flops.trainable_forward_per_clip / flops.frames)
    views = {"train": (data.get("train_crops") or 1) * (2 if data.get("hflip") else 1), "val": 1}
    hours = {f: (cfg.trainer.max_steps * step[f] + n_val * seconds(val_flops, f)) / 3600 for f in FORMATS}
    cache_bytes = build_hours = None
    if sizes:
        split_frames = {s: sizes[s]["videos"] * sizes[s]["frames_per_video"] for s in ("train", "val")}
        cache_bytes = {s: int(split_frames[s] * views[s] * per_frame_cache) for s in split_frames}
        encoded = sum(split_frames[s] * views[s] for s in split_frames) * flops.encoder_per_frame
        build_hours = seconds(encoded, fmt) / 3600
    frames_per_s = frames / step[fmt]
    # A worker reads a visited video's whole tar member to take one clip of it: its CPU cost goes
    # with the stored megapixels read per frame used, the video's frames over the clip's.
    read = stored[0] * stored[1] / 1e6 * (sizes["train"]["frames_per_video"] / T if sizes else 1)
    loader_cores = None if cached else frames_per_s * devices["loader_ms_per_megapixel_read"] * read / 1e3
    assumptions = [
        f"{spec['name']}: datasheet peaks {spec['tflops']} TFLOP/s x efficiency {spec['efficiency']}"
        + (" (measured on this machine)" if device == "cpu" else " (estimated without a GPU)"),
        "FLOPs counted on the real modules (fake tensors), batch 1 scaled linearly",
        f"loader: {devices['loader_ms_per_megapixel_read']} CPU ms per stored megapixel read (this machine)",
    ]
    if not sizes:
        assumptions.append(
            f"dataset.{SPLIT_SIZES_DECLARATION} not declared: no validation, cache size or loader cores"
        )
    return Forecast(
        experiment=str(cfg.exp_name),
        device=device,
        device_name=spec["name"],
        precision=fmt,
        max_steps=int(cfg.trainer.max_steps),
        clips_per_step=B,
        frames_per_step=frames,
        encoder_gflops_per_frame=flops.encoder_per_frame / 1e9,
        encoder_flops_per_step=float(encoder_step),
        trainable_flops_per_step=float(trainable_step),
        loader_bytes_per_step=frames * stored[0] * stored[1] * 3,
        loader_float32_bytes_per_step=frames * 3 * flops.input_size**2 * 4,
        cache_bytes_per_step=cache_step,
        step_seconds=step,
        gpu_hours=hours,
        validation_seconds=seconds(val_flops, fmt),
        cache_build_hours=build_hours,
        cache_bytes=cache_bytes,
        cache_views=views,
        loader_frames_per_s=frames_per_s,
        loader_cores=loader_cores,
        loader_workers=int(data.get("num_workers") or 0),  # a datamodule may have no such key
        split_sizes=sizes,
        assumptions=assumptions,
    )


def _size(n: float) -> str:
    """Bytes in decimal units: 24.0 MB, 1.1 TB."""
    exponent = min(int(math.log10(max(n, 1)) // 3), 4)
    return f"{n / 1000**exponent:.1f} {('B', 'KB', 'MB', 'GB', 'TB')[exponent]}"


def _cached_note(f: Forecast) -> str:
    return " (cache=true: read from the feature cache)" if f.encoder_flops_per_step == 0 else ""


def render_text(f: Forecast) -> str:
    """The forecast as the lines `src/estimate.py` prints."""
    lines = [
        f"forecast: {f.experiment} on {f.device_name} (estimate, not a measurement)",
        f"  step: {f.clips_per_step} clips x {f.frames_per_step // f.clips_per_step} frames = "
        f"{f.frames_per_step} frames",
        f"  frozen encoder: {f.encoder_gflops_per_frame:.1f} GFLOP/frame, "
        f"{f.encoder_flops_per_step / 1e12:.2f} TFLOP/step{_cached_note(f)}",
        f"  trainable parts (forward + backward): {f.trainable_flops_per_step / 1e12:.2f} TFLOP/step",
        f"  loader: {_size(f.loader_bytes_per_step)}/step of uint8 frames "
        f"({_size(f.loader_float32_bytes_per_step)} as float32 input); feature cache: "
        f"{_size(f.cache_bytes_per_step)}/step",
    ]
    for fmt in FORMATS:
        mark = "  <- trainer.precision" if fmt == f.precision else ""
        lines.append(
            f"  {fmt}: {f.step_seconds[fmt]:.3f} s/step, {f.gpu_hours[fmt]:.1f} device-hours for "
            f"{f.max_steps} steps (validations included){mark}"
        )
    if f.loader_cores is not None:
        lines.append(
            f"  loader: {f.loader_frames_per_s:.0f} frames/s consumed -> {math.ceil(f.loader_cores)} CPU "
            f"cores ({f.loader_cores:.1f}); dataset.num_workers={f.loader_workers}"
        )
    if f.cache_bytes is not None:
        lines.append(
            f"  feature cache: train {_size(f.cache_bytes['train'])} ({f.cache_views['train']} views), "
            f"val {_size(f.cache_bytes['val'])}; build {f.cache_build_hours:.2f} device-hours"
        )
    lines += [f"  assumes: {a}" for a in f.assumptions]
    return "\n".join(lines)


def as_json(f: Forecast) -> dict[str, Any]:
    return asdict(f)

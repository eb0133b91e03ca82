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
import os
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from slotsweep.build import build_model
from slotsweep.contracts import EncoderOutput
from slotsweep.errors import SlotsweepError
from slotsweep.losses import channel_layout
from slotsweep.runs.experiment import SPLIT_SIZES_DECLARATION, total_batch_size

__all__ = [
    "DEVICES_FILE",
    "Forecast",
    "Memory",
    "PoolPlan",
    "check_pool_fits",
    "count_flops",
    "count_memory",
    "forecast",
    "largest_pool",
    "load_devices",
    "pool_bytes",
    "pool_plan",
    "precision_format",
    "usable_bytes",
]

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


def _training_loss(model, losses, features: EncoderOutput) -> Tensor:
    """The trainable parts' forward from the encoder's output, and the losses' weighted sum."""
    out = model(features=EncoderOutput(features.features, features.keys))
    predictions = out.reconstruction.split(channel_layout(losses, model.encoder), dim=-1)
    return sum(loss.weight * loss(p, out) for loss, p in zip(losses.values(), predictions, strict=True))


def count_flops(cfg: DictConfig) -> Flops:
    """Count the config's model at batch 1, clip length dataset.train_clip_frames, on meta tensors."""
    model, losses = _meta_model(cfg)
    T, S = cfg.dataset.train_clip_frames, model.encoder.img_size
    with FakeTensorMode(allow_non_fake_inputs=True):
        video = torch.empty(1, T, 3, S, S)
    with torch.no_grad():
        encoder = _flops(lambda: model.encode(video))
        features = model.encode(video)

    def trainable(backward: bool) -> None:
        total = _training_loss(model, losses, features)
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


class _LiveBytes(TorchDispatchMode):
    """Counts the bytes of the tensors that operators create while it is active, and their peak.

    A new storage is counted when an operator returns it and uncounted when it is freed (the
    tensors on fake storages are freed as real ones would be: when autograd releases what it saved
    for backward, when the last reference goes). Views and in-place results share an input's
    storage and count nothing; tensors made before (weights, the batch) are counted by the caller.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._counted: set[int] = set()

    def _release(self, key: int, nbytes: int) -> None:
        self._counted.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage()._cdata for t in tree_leaves((args, kwargs)) if isinstance(t, Tensor)}
        for tensor in tree_leaves(out):
            if not isinstance(tensor, Tensor):
                continue
            storage = tensor.untyped_storage()
            key = storage._cdata
            if key in inputs or key in self._counted:
                continue
            self._counted.add(key)
            self.live += storage.nbytes()
            weakref.finalize(storage, self._release, key, storage.nbytes())
        self.peak = max(self.peak, self.live)
        return out


def _bytes(tensors) -> int:
    return sum(t.untyped_storage().nbytes() for t in {id(t): t for t in tensors}.values())


@dataclass(frozen=True)
class Memory:
    """Device bytes of one training step of a config, counted on fake tensors at its batch (per
    device) and number format: each tensor an operator creates is counted from its creation until
    autograd or Python frees it (`_LiveBytes`)."""

    encoder_weights: int  # the frozen encoder's parameters and buffers
    batch: int  # the clips as the model reads them: (B, T, 3, S, S) float32
    encoder_output: int  # features and keys, held while the trainable parts step on them
    encoder_working: int  # the encoder forward's peak beyond its output (no gradients)
    head_state: int  # trainable parameters, their gradients and the optimizer's states
    head_working: int  # a step's peak beyond head_state: activations saved for backward, gradients in flight
    trainable_parameters: int  # count, not bytes


def count_memory(cfg: DictConfig, number_format: str) -> Memory:
    """Count a training step of the config at dataset.batch_size x train_clip_frames, on meta
    weights and fake tensors (seconds): the encoder forward, then the trainable parts' forward
    (under bf16 autocast for `bf16`), backward and Adam step, as ObjectCentricModule trains.

    The trainable parts take two steps: the first makes the gradients and Adam's states, which a
    head keeps from step to step (head_state); the second is counted on top of them
    (head_working). It accumulates into the kept gradients rather than freeing them first, so what
    it counts is what a step needs beyond them, wherever its peak falls (forward, backward or Adam).
    """
    model, losses = _meta_model(cfg)
    B, T, S = cfg.dataset.batch_size, cfg.dataset.train_clip_frames, model.encoder.img_size
    with FakeTensorMode(allow_non_fake_inputs=True):
        video = torch.empty(B, T, 3, S, S)

    def autocast():  # the CPU's autocast stands in for the GPU's: the same operators run in bf16
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=number_format == "bf16")

    encoder = _LiveBytes()
    with torch.no_grad(), autocast(), encoder:
        features = model.encode(video)
    trainable = [p for m in (model, *losses.values()) for p in m.parameters() if p.requires_grad]
    optimizer, _ = instantiate(cfg.optim).build(trainable, B)

    def step() -> None:
        with autocast():
            total = _training_loss(model, losses, features)
        total.backward()  # outside autocast, as Lightning's precision plugin runs it
        del total
        optimizer.step()

    step()
    optimizer.zero_grad(set_to_none=False)
    head = _LiveBytes()
    with head:
        step()
    state = [t for s in optimizer.state.values() for t in s.values() if isinstance(t, Tensor)]
    head_state = _bytes(trainable) + _bytes(p.grad for p in trainable) + _bytes(state)
    frozen = [*model.encoder.parameters(), *model.encoder.buffers()]
    return Memory(
        encoder_weights=_bytes(frozen),
        batch=_bytes([video]),
        encoder_output=encoder.live,
        encoder_working=encoder.peak - encoder.live,
        head_state=head_state,
        head_working=head.peak,
        trainable_parameters=sum(p.numel() for p in trainable),
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


def _seconds(spec: dict[str, Any], flop_count: float, number_format: str) -> float:
    """Seconds `flop_count` FLOPs take on a device of the table at `number_format`."""
    return flop_count / (spec["tflops"][number_format] * 1e12 * spec["efficiency"][number_format])


def _device_spec(device: str, devices: dict[str, Any]) -> dict[str, Any]:
    names = [k for k, v in devices.items() if isinstance(v, dict)]
    if device not in names:
        raise SlotsweepError(f"gpu={device} is not a device of {DEVICES_FILE.name}: choose from {names}")
    return devices[device]


def forecast(
    cfg: DictConfig, device: str = "h100", flops: Flops | None = None, devices: dict[str, Any] | None = None
) -> Forecast:
    """The forecast of a composed train config on `device`, a key of `devices` (default: the table
    of conf/estimate/devices.yaml); `flops` when already counted."""
    devices = devices or load_devices()
    spec = _device_spec(device, devices)
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
        return _seconds(spec, flop_count, number_format)

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


@dataclass(frozen=True)
class PoolPlan:
    """A pool of `pool_size` heads of one config on one device; `asdict` is `format=json`'s `pool`.

    Memory: the heads step one after another (training/pool.py), so what one head keeps between
    steps (its weights, gradients and Adam states) is paid per head, and what a step needs while it
    runs (the activations saved for backward) once, like the encoder and its output.
    """

    device: str
    device_name: str
    precision: str
    pool_size: int
    memory: Memory  # what the shared and per-head bytes are made of
    shared_bytes: int  # encoder weights + batch + features and keys + the largest step's working memory
    head_bytes: int  # per head: trainable weights, gradients and optimizer states
    pool_bytes: int  # shared_bytes + pool_size x head_bytes
    device_total_bytes: int  # the device's memory (devices.yaml memory_gb)
    device_bytes: int  # what a pool plans into: the total less devices.yaml's memory_headroom
    largest_pool: int  # the most heads with shared_bytes + heads x head_bytes <= device_bytes
    pool_near_limit: int  # the fewest heads reaching 90% of gain_limit (at most largest_pool)
    encoder_step_seconds: float  # the frozen encoder's forward on one batch, once per pool step
    head_step_seconds: float  # one head's forward from the features, backward and update
    pool_step_seconds: float  # encoder once + pool_size x head
    gain: float  # the pool's trial-steps per second over the same trials run solo one after another
    gain_limit: float  # the gain of an unbounded pool: solo step / head step
    assumptions: list[str]


def pool_bytes(memory: Memory, pool_size: int) -> tuple[int, int, int]:
    """(shared, per head, total) device bytes of a pool of `pool_size` heads."""
    working = max(memory.encoder_working, memory.head_working)
    shared = memory.encoder_weights + memory.batch + memory.encoder_output + working
    return shared, memory.head_state, shared + pool_size * memory.head_state


def largest_pool(memory: Memory, available_bytes: float) -> int:
    """The most heads whose pool fits `available_bytes` (0: not even one)."""
    shared, head, _ = pool_bytes(memory, 0)
    return max(int((available_bytes - shared) // head), 0)


def usable_bytes(total_bytes: float, devices: dict[str, Any] | None = None) -> int:
    """What a pool may plan into of `total_bytes` free device memory (the headroom taken off)."""
    devices = devices or load_devices()
    return int(total_bytes * (1 - devices["memory_headroom"]))


def _check_pool_size(pool_size: int) -> None:
    if not isinstance(pool_size, int) or isinstance(pool_size, bool) or pool_size < 1:
        raise SlotsweepError(f"pool_size={pool_size} must be an integer >= 1 (the heads of one pool)")


def _device_memory(spec: dict[str, Any]) -> float:
    """Bytes of device memory: the table's, or this machine's RAM for the CPU entry (memory_gb: null)."""
    if spec.get("memory_gb") is not None:
        return spec["memory_gb"] * 1e9
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def pool_plan(
    cfg: DictConfig,
    device: str = "h100",
    pool_size: int = 1,
    flops: Flops | None = None,
    memory: Memory | None = None,
    devices: dict[str, Any] | None = None,
) -> PoolPlan:
    """The memory and time of a pool of `pool_size` heads of `cfg` on `device` (a key of the device
    table), and the largest pool that fits it; `flops` and `memory` when already counted."""
    _check_pool_size(pool_size)
    devices = devices or load_devices()
    spec = _device_spec(device, devices)
    fmt = precision_format(cfg.trainer.precision, device)
    flops = flops or count_flops(cfg)
    memory = memory or count_memory(cfg, fmt)
    B, T = cfg.dataset.batch_size, cfg.dataset.train_clip_frames
    encoder_s = 0.0 if cfg.cache else _seconds(spec, flops.encoder_per_frame * B * T, fmt)
    head_s = _seconds(spec, flops.trainable_per_clip * B, fmt)
    shared, head, total = pool_bytes(memory, pool_size)
    total_device = _device_memory(spec)
    device_bytes = usable_bytes(total_device, devices)
    fits = largest_pool(memory, device_bytes)
    return PoolPlan(
        device=device,
        device_name=spec["name"],
        precision=fmt,
        pool_size=pool_size,
        memory=memory,
        shared_bytes=shared,
        head_bytes=head,
        pool_bytes=total,
        device_total_bytes=int(total_device),
        device_bytes=device_bytes,
        largest_pool=fits,
        # K h / (e + K h) >= 0.9: the gain of K heads is 90% of the unbounded pool's
        pool_near_limit=max(min(math.ceil(9 * encoder_s / head_s), fits), 1),
        encoder_step_seconds=encoder_s,
        head_step_seconds=head_s,
        pool_step_seconds=encoder_s + pool_size * head_s,
        gain=pool_size * (encoder_s + head_s) / (encoder_s + pool_size * head_s),
        gain_limit=(encoder_s + head_s) / head_s,
        assumptions=[
            "memory counted on fake tensors: every tensor an operator creates, from its creation until "
            "it is freed; not counted: the CUDA context, cuBLAS/cuDNN workspaces and the allocator's "
            f"fragmentation (the {devices['memory_headroom']:.0%} headroom), validation (no gradients)",
            "the heads step one after another: one step's activations at a time, each head's weights, "
            "gradients and Adam states all the time",
            "time: FLOPs over the device's rate; the loader and Python's per-step overhead are left out "
            "(both shared by a pool's heads, so measured gains run a little above this)",
            "an estimate until measured on the device (benchmarks/bench_pools.py measures a CPU)",
        ]
        + (["cache=true: no encoder runs, so a pool gains nothing"] if cfg.cache else []),
    )


def check_pool_fits(
    cfg: DictConfig, device: str | float, pool_size: int, precision: str | None = None
) -> Memory:
    """Raise SlotsweepError (one line naming hydra.sweeper.pool_size) unless a pool of `pool_size`
    heads of `cfg` fits `device`: a device of the table, or the GiB free on it (on CUDA,
    torch.cuda.mem_get_info()[0] / 2**30). `precision` is the run's resolved trainer.precision
    (default: the config's). Counts on fake tensors: seconds, nothing read from disk.
    """
    _check_pool_size(pool_size)
    devices = load_devices()
    if isinstance(device, str):
        free = _device_memory(_device_spec(device, devices))
        where = f"gpu={device} has"
    else:
        free = float(device) * 2**30
        where = "the device has free"
    fmt = precision_format(precision or cfg.trainer.precision, device if isinstance(device, str) else "cuda")
    memory = count_memory(cfg, fmt)
    shared, head, total = pool_bytes(memory, pool_size)
    available = usable_bytes(free, devices)
    if total > available:
        fits = largest_pool(memory, available)
        advice = (
            f"the largest pool that fits is {fits}: set hydra.sweeper.pool_size={fits}"
            if fits
            else "not even one head fits: lower dataset.batch_size"
        )
        raise SlotsweepError(
            f"hydra.sweeper.pool_size={pool_size} needs {_size(total)} of device memory "
            f"({_size(shared)} shared + {pool_size} heads x {_size(head)}, {fmt}, estimated) but "
            f"{where} {_size(free)}, of which a pool plans into {_size(available)}; {advice}"
        )
    return memory


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


def render_pool_text(plan: PoolPlan) -> str:
    """The pool block `src/estimate.py ... pool_size=K` prints under the forecast."""
    m = plan.memory
    working = max(m.encoder_working, m.head_working)
    return "\n".join(
        [
            f"pool of {plan.pool_size} heads on {plan.device_name}, {plan.precision} "
            "(estimate, not a measurement):",
            f"  memory shared by the heads: {_size(plan.shared_bytes)} (encoder weights "
            f"{_size(m.encoder_weights)}, batch {_size(m.batch)}, features and keys "
            f"{_size(m.encoder_output)}, working memory of one step {_size(working)})",
            f"  memory per head: {_size(plan.head_bytes)} ({m.trainable_parameters / 1e6:.1f}M trainable "
            "parameters: weights, gradients, Adam states)",
            f"  pool: {_size(plan.pool_bytes)} of the {_size(plan.device_bytes)} it may use "
            f"({_size(plan.device_total_bytes)} less the headroom)",
            f"  time: encoder {plan.encoder_step_seconds:.3f} s once + {plan.head_step_seconds:.3f} s per "
            f"head = {plan.pool_step_seconds:.3f} s per pool step; {plan.gain:.2f}x the trial-steps/s of "
            f"{plan.pool_size} solo runs (an unbounded pool: {plan.gain_limit:.2f}x)",
            f"  largest pool that fits: hydra.sweeper.pool_size={plan.largest_pool}; "
            f"{plan.pool_near_limit} heads already give 90% of the most gain",
            *(f"  assumes: {a}" for a in plan.assumptions),
        ]
    )


def as_json(f: Forecast | PoolPlan) -> dict[str, Any]:
    return asdict(f)

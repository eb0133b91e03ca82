"""What decides a GPU run of the MOVi-C preset, measured beside `src/estimate.py`'s forecast.

Run on a CUDA machine: `.venv/bin/python benchmarks/bench_gpu.py` (about 5 min on one H100;
`--rounds`, `--steps`). Without CUDA it refuses with one line (exit 2); `--device cpu --small` runs
every code path at a tiny size on the CPU (ViT-B/8 at 32 px, batch 2), to check the script where no
GPU is lent. Never part of CI.

On reference-format MOVi-C shards written to a temp dir (`tests/real_formats.py`), with
`experiment=videosaur/movi_c` as shipped (batch 128 x 4 frames, ViT-B/8 at 224, random weights):

- the training step (the module's `on_after_batch_transfer` + `training_step`, backward, gradient
  clipping, Adam and the schedule) in strict fp32, TF32, bf16 autocast and bf16 + `torch.compile`,
  with the encoder in the loop and from the feature cache (`cache=true`); batches are preloaded in
  host memory and copied to the device each step, so the loader does not enter these rows;
- the train loader alone at the preset's `dataset.num_workers`, in frames/s;
- one validation batch: making it on the CPU (the val stream in this process) and scoring it;
- one checkpoint save (state dict without the frozen encoder, and optimizer state: what a run's
  checkpoint holds).

Rows are timed in alternating rounds (every row once per round, so all see the same machine state);
each cell is the median over rounds with the min-max spread. Beside each row: what
`slotsweep.training.estimate` forecasts for this device (an estimate). On a GPU the table is written
to benchmarks/results/gpu.md.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from _common import REPO, compose_train, write_table
from lightning.fabric.utilities.apply_func import move_data_to_device
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from slotsweep import numerics
from slotsweep.models.weights import leave_out_frozen
from slotsweep.training import estimate, task

# The steps run the module's training_step without a Trainer (rows alternate within one process):
# Lightning's note that self.log() then has nowhere to log is expected.
warnings.filterwarnings("ignore", message=".*self.log\\(\\)` but the `self.trainer` reference.*")

sys.path.insert(0, str(REPO / "tests"))
from real_formats import write_movi_shards  # noqa: E402  (the reference's MOVi shard format)

PRESET = "videosaur/movi_c"
# train / validation videos of the fixture shards (24 frames at 128 px each, the real format)
FULL_VIDEOS, SMALL_VIDEOS = (32, 16), (4, 2)
SMALL = [  # every path at a size a 2-core CPU runs in minutes
    "encoder.img_size=32",
    "dataset.mask_size=32",
    "dataset.batch_size=2",
    "dataset.val_batch_size=2",
    "dataset.shuffle_size=4",
    "dataset.num_workers=1",
]
# Each step row: (Lightning precision, fp32 matmuls on TF32, torch.compile).
VARIANTS = {
    "fp32 (strict)": ("32-true", False, False),
    "TF32": ("32-true", True, False),
    "bf16": ("bf16-mixed", False, False),
    "bf16 + compile": ("bf16-mixed", False, True),
}
ESTIMATE_FORMAT = {"fp32 (strict)": "fp32", "TF32": "tf32", "bf16": "bf16", "bf16 + compile": "bf16"}
DEVICE_KEYS = {"H100": "h100", "H200": "h200", "A100": "a100", "L40S": "l40s"}  # conf/estimate/devices.yaml


@dataclass
class Row:
    """One timed thing: `run` does one round of it and returns the work done (steps, frames or 1)."""

    name: str
    run: Callable[[], float]
    unit: str  # "s/step", "frames/s" or "s"
    estimate: str = "-"
    seconds: list[float] = field(default_factory=list)  # one per round
    work: float = 1.0
    first_s: float | None = None  # the untimed first round (workers start, autotuning, compile)
    peak_gib: float | None = None

    def time(self, device: torch.device) -> None:
        """One timed round (the device's queue drained before and after)."""
        _synchronize(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        self.work = self.run()
        _synchronize(device)
        self.seconds.append(time.perf_counter() - start)
        if device.type == "cuda":
            self.peak_gib = max(self.peak_gib or 0.0, torch.cuda.max_memory_allocated(device) / 2**30)

    def warm_up(self) -> None:
        start = time.perf_counter()
        self.run()
        self.first_s = time.perf_counter() - start

    def cell(self) -> str:
        """Median (min-max) over the rounds, per step, per round, or as a rate."""
        rate = self.unit == "frames/s"
        values = [self.work / s if rate else s / self.work for s in self.seconds]
        digits = 0 if rate else 3
        return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # GPU work is asynchronous: count it in the round that issued it


def _config(data_dir: Path, n_videos: tuple[int, int], device: str, small: bool, cache: bool) -> DictConfig:
    last_train, last_val = (n // 2 - 1 for n in n_videos)  # two videos per shard
    return compose_train(
        f"experiment={PRESET}",
        "encoder.pretrained=false",  # random weights: the same FLOPs, no download
        f"dataset.train_shards='movi_c/movi_c-train-{{000000..{last_train:06d}}}.tar'",  # quoted: braces
        f"dataset.val_shards='movi_c/movi_c-validation-{{000000..{last_val:06d}}}.tar'",
        f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
        f"cache={str(cache).lower()}",
        f"paths.features_dir={data_dir / 'features'}",
        *(SMALL if small else []),
        data_dir=data_dir,
    )


class Stepper:
    """Training steps of one built module (the task's datamodule and LightningModule, its optimizer
    and schedule) on train batches preloaded in host memory, at the numerics a row asks for."""

    def __init__(self, cfg: DictConfig, device: torch.device, compiled: bool, n_batches: int = 2) -> None:
        self.datamodule, self.module = task.build_task(cfg)  # cache=true: finds or builds the cache
        self.module.to(device)
        if compiled:
            self.module.model.compile_parts()
        optimizers = self.module.configure_optimizers()
        self.optimizer, self.schedule = optimizers["optimizer"], optimizers["lr_scheduler"]["scheduler"]
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        self.clip = cfg.trainer.gradient_clip_val
        self.device = device
        batches = iter(self.datamodule.train_dataloader())
        self.batches = [next(batches) for _ in range(n_batches)]
        self.index = 0

    def steps(self, n: int, resolved: numerics.Numerics) -> float:
        """`n` training steps at `resolved` numerics (Lightning's bf16-mixed: autocast around the
        forward and the losses, backward outside); returns n."""
        numerics.apply(resolved)  # TF32 and cudnn flags of this row: the rows alternate
        bf16 = resolved.precision == "bf16-mixed"
        for _ in range(n):
            batch = self.batches[self.index % len(self.batches)]
            self.index += 1
            batch = self.module.on_after_batch_transfer(move_data_to_device(batch, self.device), 0)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = self.module.training_step(batch, self.index)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.schedule.step()
        return n

    def save(self, path: Path) -> float:
        """What a Lightning checkpoint mostly holds: the state dict without the frozen encoder (a run
        rebuilds it from its source, as training/module.py saves) and the optimizer state."""
        state = self.module.state_dict()
        leave_out_frozen(state, self.module.model, "model.")
        torch.save({"state_dict": state, "optimizer_states": [self.optimizer.state_dict()]}, path)
        return 1.0


def _step_rows(
    steppers: dict[bool, tuple[Stepper, Stepper]], forecasts: dict[bool, estimate.Forecast], steps: int
) -> list[Row]:
    rows = []
    for cache, (eager, compiled) in steppers.items():
        source = "cached features" if cache else "encoder in the loop"
        for name, (precision, tf32, is_compiled) in VARIANTS.items():
            stepper = compiled if is_compiled else eager
            resolved = numerics.Numerics(
                precision, tf32 and stepper.device.type == "cuda", stepper.device.type
            )
            forecast = forecasts[cache].step_seconds[ESTIMATE_FORMAT[name]]
            run = functools.partial(stepper.steps, steps, resolved)
            rows.append(Row(f"train step, {source}, {name}", run, "s/step", f"{forecast:.3f}"))
    return rows


def _validation_rows(stepper: Stepper, forecast: estimate.Forecast) -> list[Row]:
    """Making one validation batch on the CPU (in this process, so its CPU time is what is
    measured), and scoring it on the device at the run's precision (auto: bf16 on a GPU)."""
    module, device = stepper.module, stepper.device
    stream = stepper.datamodule.val_dataloader().dataset  # the val stream, read in this process
    made: dict[str, dict] = {}

    def make() -> float:
        made["batch"] = next(iter(DataLoader(stream, batch_size=None)))
        return 1.0

    def score() -> float:
        batch = module.on_after_batch_transfer(move_data_to_device(made["batch"], device), 0)
        with (
            torch.no_grad(),
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"),
        ):
            module.validation_step(batch, 0)
        return 1.0

    make()
    frames = made["batch"]["masks"].shape[:2].numel()
    sizes = forecast.split_sizes
    val_frames = sizes["val"]["videos"] * sizes["val"]["frames_per_video"] if sizes else frames
    precision = "bf16" if device.type == "cuda" else "fp32"
    return [
        Row(f"validation batch made on the CPU ({frames} frames)", make, "s"),
        Row(
            f"validation batch scored ({precision})",
            score,
            "s",
            f"{forecast.validation_seconds * frames / val_frames:.3f}",
        ),
    ]


def _loader_row(stepper: Stepper, forecast: estimate.Forecast) -> Row:
    """The train loader alone at the config's workers; timed after the other rows, never between
    them: its workers would fill their prefetch queue while the others run, and the next round would
    read that queue instead of loading."""
    workers = stepper.datamodule.num_workers
    loader = iter(stepper.datamodule.train_dataloader())
    per_round = max(2, 2 * workers)

    def take() -> float:
        return float(sum(next(loader)["frames"].shape[:2].numel() for _ in range(per_round)))

    cores = "" if forecast.loader_cores is None else f" ({forecast.loader_cores:.1f} cores)"
    consumed = f"{forecast.loader_frames_per_s:.0f} consumed{cores}"
    return Row(f"train loader alone, {workers} workers", take, "frames/s", consumed)


def _device_key(device: torch.device) -> str:
    """The conf/estimate/devices.yaml entry of this device (an unknown GPU is forecast as an H100)."""
    if device.type == "cpu":
        return "cpu"
    name = torch.cuda.get_device_name(device)
    return next((key for word, key in DEVICE_KEYS.items() if word in name), "h100")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--small", action="store_true", help="tiny sizes: a CPU check of the script")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed rounds")
    parser.add_argument("--steps", type=int, default=5, help="training steps per step row and round")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "error: bench_gpu needs CUDA (torch.cuda.is_available() is False); "
            "--device cpu --small checks the script on a CPU",
            file=sys.stderr,
        )
        return 2
    device = torch.device(args.device)
    n_videos = SMALL_VIDEOS if args.small else FULL_VIDEOS
    with tempfile.TemporaryDirectory(prefix="slotsweep-bench-gpu-") as tmp:
        data_dir = Path(tmp)
        write_movi_shards(data_dir, n_train=n_videos[0], n_val=n_videos[1], per_shard=2)
        configs = {
            cache: _config(data_dir, n_videos, args.device, args.small, cache) for cache in (False, True)
        }
        flops = estimate.count_flops(configs[False])  # the same model: counted once
        key = _device_key(device)
        forecasts = {cache: estimate.forecast(cfg, key, flops=flops) for cache, cfg in configs.items()}
        steppers = {
            cache: (Stepper(cfg, device, compiled=False), Stepper(cfg, device, compiled=True))
            for cache, cfg in configs.items()
        }
        in_loop = steppers[False][0]
        rows = [
            *_step_rows(steppers, forecasts, args.steps),
            *_validation_rows(in_loop, forecasts[False]),
            Row(
                "checkpoint save (torch.save, local disk)",
                functools.partial(in_loop.save, data_dir / "b.ckpt"),
                "s",
            ),
        ]
        for row in rows:  # untimed: kernels autotune, compile runs
            row.warm_up()
        for _ in range(args.rounds):  # alternating: every row once per round
            for row in rows:
                row.time(device)
        loader = _loader_row(in_loop, forecasts[False])
        loader.warm_up()  # the workers start and fill their queue
        for _ in range(args.rounds):
            loader.time(device)
        rows.append(loader)
        table = _table(rows, forecasts[False], configs[False], device, args)
    print(table)
    if device.type == "cuda":
        print(f"\nwritten to {write_table('gpu', table)}")
    else:
        print("\n(a CPU check of the script: nothing written to benchmarks/results/)")
    return 0


def _table(
    rows: list[Row],
    forecast: estimate.Forecast,
    cfg: DictConfig,
    device: torch.device,
    args: argparse.Namespace,
) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    clips, frames = forecast.clips_per_step, forecast.frames_per_step // forecast.clips_per_step
    lines = [
        f"# {name}: {PRESET} training step, loader, validation and checkpoint, measured vs estimated",
        "",
        f"`experiment={PRESET}`{' --small' if args.small else ''}: batch {clips} x {frames} frames, random "
        f"ViT-B/8 at {cfg.encoder.img_size} px, on reference-format MOVi-C shards. Median (min-max) of "
        f"{args.rounds} alternating rounds, {args.steps} steps per step row and round, after one "
        "untimed round (its seconds: first round, compile included); the loader is timed after the "
        "other rows. Estimate: `src/estimate.py` for "
        f"{forecast.device_name}, an ESTIMATE from counted FLOPs and datasheet peaks.",
        "",
        "| what | measured | unit | estimate | first round (s) | peak GiB |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        peak = "-" if row.peak_gib is None else f"{row.peak_gib:.1f}"
        lines.append(
            f"| {row.name} | {row.cell()} | {row.unit} | {row.estimate} | {row.first_s:.1f} | {peak} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

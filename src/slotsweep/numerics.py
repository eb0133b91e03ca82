"""A run's numerics: the precision it trains at on the device it gets, TF32, and the local guard
that keeps fp32 where reduced precision would move a result.

`trainer.precision: auto` (the default) resolves to `bf16-mixed` on a CUDA GPU with native bf16
(Ampere or newer) and to `32-true` elsewhere (the CPU demo, the tests and their fixtures). fp32 runs on
a GPU use TF32 matmuls and convolutions and cudnn's autotuner, as the reference's `--use-optimizations`
does; `strict_fp32=true` turns TF32 off, the reference's plain fp32. The resolved precision (its
`label`) enters the experiment id, the evaluation protocol and results.json.

A run that asked for GPUs (`trainer.accelerator=gpu`, a launcher with `gpus_per_node`, or a SLURM job
with GPUs) never trains on the CPU: when CUDA is unusable, it stops with the torch build's and the
driver's CUDA versions. torch is imported inside the functions: the experiment id of a run with
trainer.accelerator=cpu (src/train.py checks it before the heavy imports) needs none of it.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from slotsweep.errors import SlotsweepError

__all__ = [
    "AUTO",
    "GPU_LAUNCHER_KEYS",
    "CudaState",
    "Numerics",
    "apply",
    "cuda_state",
    "exact_fp32",
    "gpu_request",
    "resolve",
]

AUTO = "auto"
_FP32 = ("32-true", "32")
_GPU_ACCELERATORS = ("gpu", "cuda")
GPU_LAUNCHER_KEYS = ("gpus_per_node", "gpus_per_task")  # hydra.launcher keys that ask for GPUs
# Variables through which SLURM hands a job its GPUs, with the values that mean none: counts, and
# device lists (CUDA_VISIBLE_DEVICES only inside a SLURM job: elsewhere users set it to hide GPUs as
# often as to choose them).
_SLURM_GPU_VARIABLES = {
    **dict.fromkeys(
        ("SLURM_GPUS_ON_NODE", "SLURM_GPUS", "SLURM_GPUS_PER_NODE", "SLURM_GPUS_PER_TASK"), ("", "0")
    ),
    **dict.fromkeys(("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "CUDA_VISIBLE_DEVICES"), ("", "-1", "NoDevFiles")),
}


@dataclass(frozen=True)
class Numerics:
    """How a run computes, resolved for the device it trains on.

    Args:
        precision: Lightning's `trainer.precision` ("32-true", "bf16-mixed", ...), never "auto".
        tf32: float32 matmuls and convolutions on TF32 tensor cores (CUDA fp32 runs, not strict_fp32).
        device: "cuda" or "cpu", the device the precision was resolved for.
    """

    precision: str
    tf32: bool
    device: str

    @property
    def label(self) -> str:
        """What results.json, the protocol and the experiment id record: `32-true` (strict fp32, and
        every CPU run), `32-true+tf32`, `bf16-mixed`, or another precision the user set."""
        return self.precision + ("+tf32" if self.tf32 else "")


@dataclass(frozen=True)
class CudaState:
    """What this process's torch can do with CUDA, and why not when it cannot."""

    usable: bool
    bf16: bool  # native bf16 (compute capability 8.0 or newer)
    torch_build: str  # e.g. "torch 2.14.1+cu130 (CUDA 13.0)" or "torch 2.14.1+cpu (a CPU-only build)"
    driver_cuda: str | None  # the newest CUDA the NVIDIA driver supports, e.g. "12.4"; None: no driver


def gpu_request(
    accelerator: str, launcher: Mapping[str, Any] | None, environ: Mapping[str, str]
) -> str | None:
    """Why this run must train on GPUs (the setting, as a user would type it), or None.

    Args:
        accelerator: trainer.accelerator.
        launcher: the Hydra launcher's config (hydra.launcher), None outside a Hydra job.
        environ: the process environment (a SLURM job's GPU allocation).
    """
    if str(accelerator) in _GPU_ACCELERATORS:
        return f"trainer.accelerator={accelerator}"
    for key in GPU_LAUNCHER_KEYS:
        value = (launcher or {}).get(key)
        if isinstance(value, int) and value > 0:
            return f"hydra.launcher.{key}={value}"
    if "SLURM_JOB_ID" in environ:
        for name, none in _SLURM_GPU_VARIABLES.items():
            if environ.get(name, "") not in none:
                return f"the SLURM job's GPUs ({name}={environ[name]})"
    return None


def _driver_cuda() -> str | None:
    """The newest CUDA version the installed NVIDIA driver supports (libcuda's cuDriverGetVersion,
    which needs no GPU context), or None when no driver library loads."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int()
    if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return None
    return f"{version.value // 1000}.{version.value % 1000 // 10}"


@functools.lru_cache(maxsize=1)
def cuda_state() -> CudaState:
    """This process's CUDA, probed once (the experiment id asks several times)."""
    import torch

    cuda = torch.version.cuda
    build = f"torch {torch.__version__} " + (f"(CUDA {cuda})" if cuda else "(a CPU-only build)")
    usable = cuda is not None and torch.cuda.is_available() and torch.cuda.device_count() > 0
    bf16 = usable and torch.cuda.is_bf16_supported(including_emulation=False)
    return CudaState(usable, bf16, build, _driver_cuda())


def _unusable(asked: str, state: CudaState) -> SlotsweepError:
    if state.driver_cuda is None:
        driver = "no NVIDIA driver was found (libcuda.so.1 does not load)"
        fix = "run on a node with an NVIDIA GPU and driver"
    else:
        driver = f"the NVIDIA driver supports CUDA up to {state.driver_cuda}"
        fix = (
            f"install a torch build for CUDA {state.driver_cuda} or older "
            "(pip install torch --index-url https://download.pytorch.org/whl/cuXYZ, see "
            "https://pytorch.org/get-started/locally/) or update the driver"
        )
    return SlotsweepError(
        f"{asked} asks for a GPU but CUDA is unusable here: {state.torch_build}, {driver}. "
        f"Fix: {fix}; or train on the CPU with trainer.accelerator=cpu"
    )


def _hydra_launcher() -> Mapping[str, Any] | None:
    """hydra.launcher of the Hydra job this process runs, None outside one."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().launcher if HydraConfig.initialized() else None


def resolve(cfg: DictConfig, launcher: Mapping[str, Any] | None = None, assume_gpu: bool = False) -> Numerics:
    """The numerics `cfg` trains with here (trainer.precision, trainer.accelerator, strict_fp32).

    Args:
        cfg: a training config.
        launcher: hydra.launcher of the job; None: this process's Hydra job's, if any.
        assume_gpu: a sweep resolving its jobs' ids where they do not run (a login node): a job that
            asks for GPUs is taken to get a CUDA GPU with bf16, without probing this machine.
    Raises:
        SlotsweepError: GPUs were asked for and CUDA is unusable; strict_fp32 with a reduced precision.
    """
    trainer, strict = cfg.trainer, bool(cfg.strict_fp32)
    precision = str(trainer.precision)
    if strict and precision not in (AUTO, *_FP32):
        raise SlotsweepError(
            f"strict_fp32=true asks for the reference's plain fp32 but trainer.precision={precision}: "
            "set trainer.precision=auto (or 32-true), or strict_fp32=false"
        )
    asked = gpu_request(
        trainer.accelerator, launcher if launcher is not None else _hydra_launcher(), os.environ
    )
    if str(trainer.accelerator) == "cpu":
        on_gpu = bf16 = False
    elif asked is not None and assume_gpu:
        on_gpu = bf16 = True
    else:
        state = cuda_state()
        if asked is not None and not state.usable:
            raise _unusable(asked, state)
        on_gpu, bf16 = state.usable, state.bf16
    if precision == AUTO:
        precision = "bf16-mixed" if on_gpu and bf16 and not strict else "32-true"
    return Numerics(
        precision, tf32=on_gpu and precision in _FP32 and not strict, device="cuda" if on_gpu else "cpu"
    )


def apply(numerics: Numerics) -> None:
    """Set this process's TF32 and cudnn autotuner flags for `numerics` (GPU runs only)."""
    import torch

    if numerics.device != "cuda":
        return
    # the legacy switches, not torch.backends.*.fp32_precision: Lightning reads the legacy getter, which
    # raises once the two APIs were mixed (torch 2.14)
    torch.set_float32_matmul_precision("high" if numerics.tf32 else "highest")
    torch.backends.cudnn.allow_tf32 = numerics.tf32  # torch's default is True: strict turns it off
    torch.backends.cudnn.benchmark = True  # fixed input shapes: the autotuned kernels are reused


@contextlib.contextmanager
def exact_fp32(device_type: str) -> Iterator[None]:
    """A region computed in plain fp32 whatever the run's precision: autocast off, and on CUDA no
    TF32 (its 10-bit mantissa is ~1% on a cosine divided by a small temperature)."""
    import torch

    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        with torch.autocast(device_type, enabled=False):
            yield
    finally:
        torch.set_float32_matmul_precision(before)

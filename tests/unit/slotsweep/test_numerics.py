"""trainer.precision=auto, TF32 and the fp32 guard (slotsweep.numerics), and the GPU-asked check.

This machine has no usable CUDA: the GPU cases replace the probe (`cuda_state`) by what a GPU node's
torch would report; everything else is the real code.
"""

import re
from collections.abc import Callable

import pytest
import torch
from omegaconf import DictConfig

from slotsweep import numerics
from slotsweep.errors import SlotsweepError
from slotsweep.numerics import CudaState, Numerics
from slotsweep.runs import experiment

H100 = CudaState(usable=True, bf16=True, torch_build="torch 2.x (CUDA 13.0)", driver_cuda="13.0")
V100 = CudaState(usable=True, bf16=False, torch_build="torch 2.x (CUDA 13.0)", driver_cuda="13.0")
OLD_DRIVER = CudaState(
    usable=False, bf16=False, torch_build="torch 2.x+cu130 (CUDA 13.0)", driver_cuda="12.4"
)


@pytest.fixture
def on(monkeypatch: pytest.MonkeyPatch) -> Callable[[CudaState], None]:
    """Make this process's CUDA probe report `state`."""

    def set_state(state: CudaState) -> None:
        monkeypatch.setattr(numerics, "cuda_state", lambda: state)

    return set_state


@pytest.fixture(autouse=True)
def _no_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SLURM_JOB_ID", *numerics._SLURM_GPU_VARIABLES):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("state", "overrides", "label"),
    [
        (H100, [], "bf16-mixed"),
        (V100, [], "32-true+tf32"),  # no native bf16: fp32 on TF32 tensor cores
        (H100, ["strict_fp32=true"], "32-true"),  # the reference's plain fp32
        (H100, ["trainer.precision=32-true"], "32-true+tf32"),
        (H100, ["trainer.precision=16-mixed"], "16-mixed"),  # what the user set, as set
        (H100, ["trainer.accelerator=cpu"], "32-true"),
    ],
)
def test_auto_resolves_per_device(compose_train, on, state, overrides, label):
    on(state)
    cfg = compose_train("trainer.accelerator=auto", *overrides)
    assert numerics.resolve(cfg).label == label


def test_cpu_runs_train_in_plain_fp32_with_their_previous_exp_id(compose_train: Callable[..., DictConfig]):
    """On this CPU, auto is 32-true (the tests' fixtures are fp32), and the id is the one the config
    had when it said 32-true: strict_fp32 and compile do not enter a CPU run's id."""
    cfg = compose_train("trainer.accelerator=auto")
    assert numerics.resolve(cfg) == Numerics("32-true", tf32=False, device="cpu")
    assert experiment.identity(cfg)["trainer"]["precision"] == "32-true"
    same = [
        compose_train("trainer.accelerator=auto", *o)
        for o in (["trainer.precision=32-true"], ["strict_fp32=true"], ["compile=true"])
    ]
    assert {experiment.experiment_id(c) for c in same} == {experiment.experiment_id(cfg)}


def test_gpu_exp_ids_name_the_resolved_precision(compose_train: Callable[..., DictConfig], on):
    on(H100)
    ids = {
        experiment.experiment_id(compose_train("trainer.accelerator=auto", *o))
        for o in ([], ["strict_fp32=true"], ["trainer.precision=32-true"])
    }
    assert len(ids) == 3  # bf16-mixed, 32-true, 32-true+tf32


def test_a_sweep_resolves_a_gpu_launchers_jobs_as_gpu_jobs(compose_train: Callable[..., DictConfig]):
    """The sweeper computes its jobs' run dirs on a node without a GPU: the job's launcher decides."""
    cfg = compose_train("trainer.accelerator=auto")
    assert numerics.resolve(cfg, {"gpus_per_node": 1}, assume_gpu=True).label == "bf16-mixed"
    assert numerics.resolve(cfg, {"gpus_per_node": None}, assume_gpu=True).label == "32-true"


@pytest.mark.parametrize(
    ("accelerator", "launcher", "environ", "asked"),
    [
        ("gpu", None, {}, "trainer.accelerator=gpu"),
        ("auto", {"gpus_per_node": 2}, {}, "hydra.launcher.gpus_per_node=2"),
        (
            "auto",
            None,
            {"SLURM_JOB_ID": "1", "SLURM_JOB_GPUS": "0,1"},
            "the SLURM job's GPUs (SLURM_JOB_GPUS=0,1)",
        ),
        (
            "auto",
            None,
            {"SLURM_JOB_ID": "1", "CUDA_VISIBLE_DEVICES": "0"},
            "the SLURM job's GPUs (CUDA_VISIBLE_DEVICES=0)",
        ),
        ("auto", None, {"CUDA_VISIBLE_DEVICES": "0"}, None),  # outside SLURM: a user's choice, no request
        ("auto", {"gpus_per_node": None}, {"SLURM_JOB_ID": "1"}, None),
        ("auto", None, {"SLURM_JOB_ID": "1", "SLURM_GPUS_ON_NODE": "0"}, None),  # a count: none
    ],
)
def test_gpu_request(accelerator, launcher, environ, asked):
    assert numerics.gpu_request(accelerator, launcher, environ) == asked


def test_gpu_asked_with_an_old_driver_names_both_cudas_and_the_fix(compose_train, on):
    on(OLD_DRIVER)
    with pytest.raises(SlotsweepError) as error:
        numerics.resolve(compose_train("trainer.accelerator=gpu"))
    message = str(error.value)
    assert message.startswith("trainer.accelerator=gpu asks for a GPU but CUDA is unusable here")
    assert "(CUDA 13.0)" in message and "supports CUDA up to 12.4" in message
    assert "install a torch build for CUDA 12.4 or older" in message and "trainer.accelerator=cpu" in message


def test_gpu_asked_here_is_refused(compose_train: Callable[..., DictConfig]):
    """The real probe on this machine (no usable CUDA)."""
    if numerics.cuda_state().usable:
        pytest.skip("this machine's torch can use CUDA")
    with pytest.raises(SlotsweepError, match=re.escape(f"CUDA is unusable here: torch {torch.__version__}")):
        numerics.resolve(compose_train("trainer.accelerator=gpu"))


def test_strict_fp32_with_a_reduced_precision_is_refused(compose_train: Callable[..., DictConfig]):
    with pytest.raises(SlotsweepError, match="strict_fp32=true .* trainer.precision=bf16-mixed"):
        numerics.resolve(compose_train("strict_fp32=true", "trainer.precision=bf16-mixed"))


@pytest.fixture
def _restore_flags():
    saved = (
        torch.get_float32_matmul_precision(),
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.benchmark,
    )
    yield
    torch.set_float32_matmul_precision(saved[0])
    torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved[1:]


@pytest.mark.usefixtures("_restore_flags")
@pytest.mark.parametrize(("tf32", "matmul"), [(True, "high"), (False, "highest")])
def test_apply_sets_tf32_on_gpu_runs_only(tf32: bool, matmul: str):
    numerics.apply(Numerics("32-true", tf32=tf32, device="cuda"))
    assert (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32) == (matmul, tf32)
    assert torch.backends.cudnn.benchmark
    torch.set_float32_matmul_precision("medium")
    numerics.apply(Numerics("32-true", tf32=False, device="cpu"))  # a CPU run leaves the flags alone
    assert torch.get_float32_matmul_precision() == "medium"


@pytest.mark.usefixtures("_restore_flags")
def test_exact_fp32_turns_off_autocast_and_tf32_locally():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    torch.set_float32_matmul_precision("high")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (a @ b).dtype == torch.bfloat16
        with numerics.exact_fp32("cpu"):
            assert torch.get_float32_matmul_precision() == "highest"
            assert (a @ b).dtype == torch.float32
            assert torch.allclose(a @ b, (a.double() @ b.double()).float(), rtol=1e-5, atol=1e-5)
        assert (a @ b).dtype == torch.bfloat16  # autocast is back after the block
    assert torch.get_float32_matmul_precision() == "high"

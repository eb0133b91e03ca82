"""Bad input through the real CLI: a non-zero exit, a short message naming key and value, no run dir.

Each case is a real `python src/train.py ...` process (tiny data, runs and data in tmp dirs).
"""

import pytest
import torch

# (overrides, what the last line of stderr must contain: the key and the value)
BAD_VALUES = [
    (["grouper.n_slots=0"], ["grouper.n_slots", "0"]),
    (["loss.timesim.weight=-1"], ["loss.timesim.weight", "-1"]),
    (["loss.timesim.offset=4", "dataset.train_clip_frames=4"], ["loss.timesim.offset", "4"]),
    (["load_weights=/nonexistent.ckpt"], ["load_weights", "/nonexistent.ckpt"]),
    (["encoder.weights=/nonexistent.safetensors"], ["encoder.weights", "/nonexistent.safetensors"]),
]

# Rejected by Hydra while composing, before slotsweep's code runs.
BAD_COMPOSE = [
    (["encoder=nope"], ["encoder", "nope"]),
    (["grouper.n_slot=3"], ["grouper.n_slot"]),
]

MAX_STDERR_LINES = 3  # a short message, not a traceback


def _assert_failed_cleanly(result, expected: list[str], runs_dir) -> list[str]:
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, result.stdout[-2000:]
    assert lines, "no message on stderr"
    assert "Traceback" not in result.stderr, result.stderr
    assert all(word in result.stderr for word in expected), result.stderr
    assert not runs_dir.exists() or not any(runs_dir.iterdir()), f"bad input made {list(runs_dir.rglob('*'))}"
    return lines


@pytest.mark.parametrize(("overrides", "expected"), BAD_VALUES, ids=[" ".join(o) for o, _ in BAD_VALUES])
def test_bad_value_is_one_line(cli, overrides: list[str], expected: list[str]):
    result = cli.run("train.py", *overrides)
    lines = _assert_failed_cleanly(result, expected, cli.runs_dir)
    assert len(lines) <= MAX_STDERR_LINES, result.stderr
    assert lines[-1].startswith("error: ") and all(word in lines[-1] for word in expected), lines[-1]
    assert f"{expected[0]}={expected[1]}" in lines[-1]  # as the user typed it: key=value
    assert result.returncode == 2


@pytest.mark.parametrize(("overrides", "expected"), BAD_COMPOSE, ids=[" ".join(o) for o, _ in BAD_COMPOSE])
def test_bad_compose_fails_before_running(cli, overrides: list[str], expected: list[str]):
    """Compose errors: the key, and the allowed options or the closest existing keys."""
    result = cli.run("train.py", *overrides)
    _assert_failed_cleanly(result, expected, cli.runs_dir)
    assert "Instantiating" not in result.stdout  # nothing was built
    assert (
        "Available options in 'encoder'" in result.stderr or "did you mean grouper.n_slots?" in result.stderr
    )


def test_error_while_building_is_one_line_and_writes_nothing(cli):
    """A bad value found by a constructor (through Hydra's instantiate, which wraps the error) is
    one line too, and it surfaces before the run dir is made."""
    result = cli.run("train.py", "encoder.block=99")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert lines[-1].startswith("error: encoder.block=99 must be in [1, 2]"), result.stderr
    assert len(lines) <= MAX_STDERR_LINES, result.stderr
    assert not cli.runs_dir.exists() or not any(cli.runs_dir.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where torch cannot use CUDA")
@pytest.mark.parametrize(
    ("overrides", "slurm", "asked"),
    [
        (["trainer.accelerator=gpu"], {}, "trainer.accelerator=gpu"),
        (
            ["trainer.accelerator=auto"],
            {"SLURM_JOB_ID": "7", "SLURM_GPUS_ON_NODE": "1"},
            "SLURM_GPUS_ON_NODE=1",
        ),
    ],
    ids=["accelerator=gpu", "a SLURM job with GPUs"],
)
def test_gpu_asked_without_usable_cuda_is_one_line_not_a_cpu_run(cli, overrides, slurm, asked):
    """GPUs asked for and CUDA unusable: the torch build's CUDA and the driver's, and the fix; never
    a silent CPU run. (SLURM variables are cleared by the fixture and set here on purpose.)"""
    result = cli.run("train.py", *overrides, env={**cli.env, **slurm})
    lines = _assert_failed_cleanly(result, [asked], cli.runs_dir)
    assert result.returncode == 2 and len(lines) <= MAX_STDERR_LINES, result.stderr
    error = lines[-1]
    assert error.startswith("error: ") and "CUDA is unusable here" in error, error
    assert f"torch {torch.__version__}" in error and "driver" in error, error
    assert "torch build" in error or "NVIDIA driver" in error, error  # the fix: another build, or a GPU node
    assert "Instantiating" not in result.stdout  # refused before the data or the model were built

"""A SLURM job's trainer must have one device per task, and a local sweep trial one device: a
mismatch is refused before submitting.

No cluster needed: the check runs on the login node, before submitit touches SLURM.
"""

import dataclasses

import pytest

CASES = {
    "grid, tasks": (
        ["hydra.mode=MULTIRUN", "hydra/launcher=slurm_cpu", "hydra.launcher.tasks_per_node=2", "seed=0,1"],
        "error: trainer.devices=1 does not match hydra.launcher.tasks_per_node=2",
        "pass trainer.devices=2",
    ),
    "optuna, gpus and nodes": (
        [
            "hydra.mode=MULTIRUN",
            "+sweep=loss_weights",
            "hydra/launcher=slurm_gpu",
            "trainer=ddp",
            "trainer.devices=4",
        ],
        "error: trainer.devices=4 does not match hydra.launcher.gpus_per_node=1",
        "pass trainer.devices=1 (or change hydra.launcher.gpus_per_node)",
    ),
    "grid, nodes": (
        [
            "-m",
            "hydra/launcher=slurm_gpu",
            "hydra.launcher.gpus_per_node=4",
            "trainer=ddp",
            "trainer.devices=4",
            "trainer.num_nodes=2",
        ],
        "error: trainer.num_nodes=2 does not match hydra.launcher.nodes=1",
        "pass trainer.num_nodes=1 (or change hydra.launcher.nodes)",
    ),
    "optuna, local DDP trial": (
        ["hydra.mode=MULTIRUN", "+sweep=loss_weights", "hydra/launcher=local", "trainer=ddp_cpu"],
        "error: trainer.devices=2 trainer.num_nodes=1 with a local launcher",
        "or hydra/launcher=slurm_cpu|slurm_gpu for one task per device",
    ),
}


@pytest.mark.parametrize(("overrides", "message", "fix"), CASES.values(), ids=CASES.keys())
def test_trainer_that_does_not_match_the_tasks_is_refused_before_submitting(
    cli, overrides: list[str], message: str, fix: str
):
    # Nothing trains: no trainer=debug (it would clash with trainer=ddp), a multirun by hydra.mode
    # (a `-m` after cli's arguments is not parsed).
    result = dataclasses.replace(cli, train_args=[]).run("train.py", *overrides)

    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith(message) and fix in line
    assert not list(cli.runs_dir.rglob(".submitit")) and not list(
        cli.runs_dir.rglob("*.ckpt")
    )  # nothing submitted

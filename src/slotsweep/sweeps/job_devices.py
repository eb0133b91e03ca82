"""How many devices a launched job may train on: one per SLURM task, and one in a local sweep job.

submitit starts `tasks_per_node` tasks on each of `nodes` nodes under `srun`, and Lightning's
SLURMEnvironment takes each task's rank from srun. Lightning then insists that trainer.devices
is the tasks per node and trainer.num_nodes the nodes, but only inside the job, after it has waited
in the queue. `check_slurm_tasks` refuses the mismatch on the login node instead, before anything
is submitted: from the SLURM launcher (hydra_plugins/slotsweep_launcher) and from the Optuna
sweeper. Refused, not fixed up: the device count sets the total batch, hence the learning rate
and the experiment id.

A local Optuna trial runs as a submitit process (sweeps/jobs.py), from which Lightning cannot start
DDP ranks: it re-executes the process's own command line, which is submitit's, not train.py's.
`check_local_devices` refuses such a trial before the study records it.
"""

from omegaconf import DictConfig, OmegaConf

from slotsweep.errors import SlotsweepError
from slotsweep.runs import experiment

__all__ = ["check_local_devices", "check_slurm_tasks", "is_slurm"]


def is_slurm(cfg: DictConfig) -> bool:
    """Whether the job's launcher submits to SLURM (slurm_gpu, slurm_cpu)."""
    return str(cfg.hydra.launcher.get("_target_", "")).endswith("SlurmLauncher")


def check_local_devices(cfg: DictConfig) -> None:
    """Raise when a local sweep job's trainer asks for several processes (devices or nodes > 1).

    Args:
        cfg: a job's composed config with its `hydra` node.
    """
    if is_slurm(cfg):
        return
    # a task without a trainer (a toy objective, a custom app) runs in one process anyway
    devices = OmegaConf.select(cfg, "trainer.devices", default=1)
    nodes = OmegaConf.select(cfg, "trainer.num_nodes", default=1)
    if devices == -1 or experiment.device_count(devices) > 1 or nodes > 1:  # -1: every GPU of the node
        raise SlotsweepError(
            f"trainer.devices={devices} trainer.num_nodes={nodes} with a local launcher: a local "
            "sweep trial is one process, and Lightning cannot start DDP ranks from it; pass "
            "trainer.devices=1, or hydra/launcher=slurm_cpu|slurm_gpu for one task per device"
        )


def check_slurm_tasks(cfg: DictConfig) -> None:
    """Raise when a job's trainer does not have one device per SLURM task.

    Args:
        cfg: a job's composed config with its `hydra` node (the launcher's settings).
    """
    launcher = cfg.hydra.launcher
    if not is_slurm(cfg):
        return
    # slurm_gpu's tasks follow its GPUs: there the knob to change is gpus_per_node.
    per_gpu = launcher.gpus_per_node is not None and launcher.gpus_per_node == launcher.tasks_per_node
    tasks_key = "hydra.launcher.gpus_per_node" if per_gpu else "hydra.launcher.tasks_per_node"
    pairs = [
        ("trainer.devices", cfg.trainer.devices, tasks_key, launcher.tasks_per_node),
        ("trainer.num_nodes", cfg.trainer.num_nodes, "hydra.launcher.nodes", launcher.nodes),
    ]
    for trainer_key, value, launcher_key, tasks in pairs:
        if value != tasks:  # also "auto" or a device list: under srun one task is one device
            raise SlotsweepError(
                f"{trainer_key}={value} does not match {launcher_key}={tasks}: SLURM runs one "
                f"training process per task, so pass {trainer_key}={tasks} (or change {launcher_key})"
            )

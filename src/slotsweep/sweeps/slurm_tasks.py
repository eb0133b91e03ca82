"""SLURM jobs of several tasks: one task per device, and a trainer that says the same.

submitit starts `tasks_per_node` tasks on each of `nodes` nodes under `srun`, and Lightning's
SLURMEnvironment takes each task's rank from srun. Lightning then insists that trainer.devices
is the tasks per node and trainer.num_nodes the nodes, but only inside the job, after it has waited
in the queue. `check_slurm_tasks` refuses the mismatch on the login node instead, before anything
is submitted: from the SLURM launcher (hydra_plugins/slotsweep_launcher) and from the Optuna
sweeper. Refused, not fixed up: the device count sets the total batch, hence the learning rate
and the experiment id.
"""

from omegaconf import DictConfig

from slotsweep.errors import SlotsweepError

__all__ = ["check_slurm_tasks"]


def check_slurm_tasks(cfg: DictConfig) -> None:
    """Raise when a job's trainer does not have one device per SLURM task.

    Args:
        cfg: a job's composed config with its `hydra` node (the launcher's settings).
    """
    launcher = cfg.hydra.launcher
    if not str(launcher.get("_target_", "")).endswith("SlurmLauncher"):
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

"""hydra/launcher=slurm_gpu|slurm_cpu: hydra-submitit-launcher's SLURM launcher, checked first.

Hydra only instantiates launchers defined under `hydra_plugins`. Before a Hydra-grid batch is
submitted, every job's config must give the trainer one device per SLURM task
(slotsweep.sweeps.job_devices.py); a mismatch is one `error:` line, not jobs that fail on the nodes.
"""

from collections.abc import Sequence

from hydra.core.utils import JobReturn

from hydra_plugins.hydra_submitit_launcher import submitit_launcher

__all__ = ["SlurmLauncher"]


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """The submitit SLURM launcher that checks every job's tasks before submitting any."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from slotsweep.sweeps.job_devices import check_slurm_tasks

        assert self.hydra_context is not None and self.config is not None
        for overrides in job_overrides:
            check_slurm_tasks(
                self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            )
        return super().launch(job_overrides, initial_job_idx)

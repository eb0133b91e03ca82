"""hydra/launcher=slurm_gpu|slurm_cpu: hydra-submitit-launcher's SLURM launcher, checked first
and followed job by job.

Hydra only instantiates launchers defined under `hydra_plugins`. Before a Hydra-grid batch is
submitted, every job's config must give the trainer one device per SLURM task
(slotsweep.sweeps.job_devices.py); a mismatch is one `error:` line, not jobs that fail on the nodes.
Once submitted, the grid is followed by slotsweep.sweeps.grid_jobs: a line per job as it ends
and a summary, without submitit's sacct polling.
"""

from collections.abc import Sequence
from typing import Any
from unittest import mock

from hydra.core.utils import JobReturn

from hydra_plugins.hydra_submitit_launcher import submitit_launcher

__all__ = ["SlurmLauncher"]


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """The submitit SLURM launcher that checks every job's tasks before submitting any."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        from slotsweep.sweeps.grid_jobs import follow_jobs
        from slotsweep.sweeps.job_devices import check_slurm_tasks

        assert self.hydra_context is not None and self.config is not None
        for overrides in job_overrides:
            check_slurm_tasks(
                self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            )
        # The parent's launch submits the array with map_array and then waits with submitit's
        # sacct polling; following the jobs right after map_array means that wait finds every
        # result at once. The parent offers no other place between submitting and waiting.
        map_array = submitit.AutoExecutor.map_array

        def map_and_follow(executor: Any, *args: Any, **kwargs: Any) -> list[Any]:
            jobs = map_array(executor, *args, **kwargs)
            follow_jobs(jobs, job_overrides, initial_job_idx)
            return jobs

        with mock.patch.object(submitit.AutoExecutor, "map_array", map_and_follow):
            return super().launch(job_overrides, initial_job_idx)

"""One Hydra job per (trial, seed), submitted, polled, cancelled and adopted one at a time.

The sweeper's scheduler needs what Hydra's `Launcher.launch` does not give: submit a job and go on,
ask whether it has ended, stop it, and find it again by id after the sweeper itself was killed.
Both backends go through submitit and run the job as hydra-submitit-launcher does (the launcher
object is the pickled callable), so a SLURM job gets exactly the `hydra/launcher=slurm_gpu|slurm_cpu`
settings, and is requeued by submitit on timeout or preemption:

- `SlurmJobs`: the configured submitit launcher's executor; `squeue` tells which jobs still live
  (the test cluster has no `sacct`, which submitit would ask).
- `LocalJobs`: submitit's local executor, one subprocess per job (`hydra/launcher=local`, the
  default). A job is its process id, so a relaunched sweeper adopts the processes of a killed one
  (checked to be that job's submitit controller, not another process that took the id). Each job
  gets its job slot's share of the machine's GPUs and cores (sweeps/local_shares.py); submitit's own
  local executor would give it none of the GPUs (CUDA_VISIBLE_DEVICES="" unless told a count).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Protocol
from unittest import mock

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn
from omegaconf import OmegaConf

from slotsweep.sweeps import local_shares
from slotsweep.training.job_cores import SLOT_ENV

__all__ = ["Jobs", "LocalJobs", "SlurmJobs", "make_jobs", "squeue_states"]

FOLDER_PATTERN = ".submitit/%j"  # below the sweep dir: one folder of logs and pickles per job
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # submitit's local default (2 min) would kill any real training


class Jobs(Protocol):
    """Submits Hydra jobs and follows them by id (a SLURM job id or a process id)."""

    kind: str  # "slurm" or "local": stored with the ids, a relaunch adopts only its own kind

    def submit(self, overrides: list[str], job_num: int) -> str:
        """Start the task with these sweep overrides; return the job's id."""

    def states(self, job_ids: list[str]) -> dict[str, str]:
        """{id: "pending" (not started: queued, or requeued), "running" or "ended"} for these ids."""

    def result(self, job_id: str) -> JobReturn:
        """The ended job's JobReturn; raises when the job died without one."""

    def cancel(self, job_id: str) -> None:
        """Stop the job now (scancel, or SIGTERM to the process)."""

    def measured_cpu_seconds(self, job_id: str) -> float | None:
        """CPU-seconds of an ended job's whole process tree as the OS counted them when it was
        reaped (what the job's own count misses: the launcher's wrapper process, the job's exit
        after results.json); None where that is not known (SLURM, a job adopted from a killed
        sweeper)."""


class _SubmititJobs:
    """What both backends share: submit through an executor, results from submitit's pickles."""

    kind = "abstract"

    def __init__(self, executor: Any, launcher: Any, folder: Path) -> None:
        self.executor = executor
        self.launcher = launcher  # a hydra-submitit launcher, set up: the pickled job callable
        self.folder = folder  # submitit's folder pattern, ending in %j

    def submit(self, overrides: list[str], job_num: int) -> str:
        state = Singleton.get_state()
        job = self.executor.submit(
            self.launcher, list(overrides), "hydra.sweep.dir", job_num, f"job_id_for_{job_num}", state
        )
        self._submitted(job)
        return str(job.job_id)

    def _submitted(self, job: Any) -> None:
        """Hook for what a backend keeps of a job it started."""

    def measured_cpu_seconds(self, job_id: str) -> float | None:
        return None

    def paths(self, job_id: str) -> Any:
        from submitit.core.utils import JobPaths

        return JobPaths(self.folder, job_id=job_id, task_id=0)

    def result(self, job_id: str, wait_s: float = 15) -> JobReturn:
        from submitit.core.utils import pickle_load

        paths = self.paths(job_id)
        deadline = time.monotonic() + wait_s  # a shared disk may show the file a little late
        while not paths.result_pickle.exists() and time.monotonic() < deadline:
            time.sleep(1)
        if not paths.result_pickle.exists():
            raise RuntimeError(
                f"job {job_id} ended without a result (cancelled or killed); log: {paths.stderr}"
            )
        outcome, value = pickle_load(paths.result_pickle)
        if outcome != "success":  # submitit's own failure (not the task's): value is the traceback
            raise RuntimeError(f"job {job_id} failed in submitit: {value.strip().splitlines()[-1]}")
        return value


def squeue_states(job_ids: list[str]) -> dict[str, str]:
    """{id: squeue state code (PD, R, CG, ...)} of the ids SLURM still lists (not ended); one row
    per array element, pending ones too (`--array`), so `<array id>_<k>` ids are found."""
    if not job_ids:
        return {}
    out = subprocess.run(
        ["squeue", "--noheader", "--array", "--format=%i %t", f"--jobs={','.join(job_ids)}"],
        capture_output=True,
        text=True,
    )
    # squeue fails on ids it has forgotten (long ended) when it knows none of the others.
    rows = [line.split() for line in out.stdout.splitlines()] if out.returncode == 0 else []
    return {row[0]: row[1] for row in rows if len(row) == 2}


class SlurmJobs(_SubmititJobs):
    kind = "slurm"

    def states(self, job_ids: list[str]) -> dict[str, str]:
        listed = squeue_states(job_ids)
        states = {}
        for job_id in job_ids:
            # A job that wrote its result is done even while squeue still shows it completing.
            if job_id not in listed or self.paths(job_id).result_pickle.exists():
                states[job_id] = "ended"
            else:
                states[job_id] = "pending" if listed[job_id] == "PD" else "running"
        return states

    def cancel(self, job_id: str) -> None:
        subprocess.run(["scancel", job_id], check=False, capture_output=True)


def _local_executor(folder: Path) -> Any:
    """submitit's LocalExecutor, but its next job starts with the `environment` that is set on it."""
    import submitit  # here, not at the top: `train.py --help` and single runs never load it
    from submitit.local import local

    class SlotExecutor(submitit.LocalExecutor):
        environment: tuple[str, dict[str, str]] = ("", {})  # (CUDA_VISIBLE_DEVICES, other variables)

        def _submit_command(self, command: str) -> Any:
            cuda_devices, others = self.environment
            # start_controller passes a copy of os.environ to the controller, which its task inherits;
            # patch.dict puts the variables in for the copy and takes them out again
            with mock.patch.dict(os.environ, others):
                process = local.start_controller(
                    folder=self.folder,
                    command=command,
                    cuda_devices=cuda_devices,
                    timeout_min=self.parameters["timeout_min"],
                    signal_delay_s=self.parameters.get("signal_delay_s", 30),
                    stderr_to_stdout=self.parameters.get("stderr_to_stdout", False),
                )
            return local.LocalJob(folder=self.folder, job_id=str(process.pid), process=process)

    executor = SlotExecutor(folder=folder)
    executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN)
    return executor


class LocalJobs(_SubmititJobs):
    kind = "local"

    def __init__(
        self, executor: Any, launcher: Any, folder: Path, n_slots: int = 1, split: bool = True
    ) -> None:
        super().__init__(executor, launcher, folder)
        self.processes: dict[str, subprocess.Popen] = {}  # the jobs this sweeper started
        self.slots: dict[str, int] = {}  # their job slots (sweeps/local_shares.py)
        self.measured: dict[str, float] = {}  # CPU-seconds of the ended ones, from their reaping
        self.n_slots = n_slots  # n_jobs trials x their seeds: the jobs in flight at once
        self.split = split  # hydra.sweeper.split_local_devices

    def submit(self, overrides: list[str], job_num: int) -> str:
        taken = self._slots_taken()
        slot = next(k for k in range(len(taken) + 1) if k not in taken)  # the lowest free one
        self.executor.environment = local_shares.job_environment(slot, self.n_slots, self.split)
        job_id = super().submit(overrides, job_num)
        self.slots[job_id] = slot
        return job_id

    def _slots_taken(self) -> set[int]:
        """The slots of this folder's live jobs: ours, and those adopted from a killed sweeper."""
        taken = {self.slots[i] for i, process in self.processes.items() if process.poll() is None}
        if not Path("/proc/self").is_dir():  # no procfs: adopted jobs' slots are not known
            return taken
        prefix = f"{SLOT_ENV}=".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or entry.name in self.processes or not self._is_job(int(entry.name)):
                continue
            try:  # the environment its controller was started with
                variables = (entry / "environ").read_bytes().split(b"\0")
            except OSError:  # ended meanwhile
                continue
            taken |= {int(v[len(prefix) :]) for v in variables if v.startswith(prefix)}
        return taken

    def _submitted(self, job: Any) -> None:
        self.processes[str(job.job_id)] = job._process

    def states(self, job_ids: list[str]) -> dict[str, str]:
        states = {}  # a subprocess starts at once: never pending
        for job_id in job_ids:
            # Our own child: reaped here. A killed sweeper's: reparented, reaped by init.
            process = self.processes.get(job_id)
            alive = self._running(job_id, process) if process is not None else self._is_job(int(job_id))
            states[job_id] = "running" if alive else "ended"
        return states

    def _running(self, job_id: str, process: subprocess.Popen) -> bool:
        """Whether our child job still runs; once it has ended, reap it with wait4, whose resource
        usage covers its whole process tree (the controller and the task it waited for)."""
        if process.returncode is not None:
            return False
        try:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        except ChildProcessError:  # reaped already (by Popen): its usage is gone
            return process.poll() is None
        if pid == 0:
            return True
        process.returncode = os.waitstatus_to_exitcode(status)
        self.measured[job_id] = usage.ru_utime + usage.ru_stime
        return False

    def measured_cpu_seconds(self, job_id: str) -> float | None:
        return self.measured.get(job_id)

    def cancel(self, job_id: str) -> None:
        # submitit's local controller forwards SIGTERM to the task, then kills it.
        if job_id in self.processes or self._is_job(int(job_id)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(job_id), signal.SIGTERM)

    def _is_job(self, pid: int) -> bool:
        """Whether `pid` is still a job controller that submitit started for this folder. A killed
        sweeper's job that has ended leaves its pid free, and a relaunch much later may find it
        taken by another process, which it must neither wait for nor signal."""
        if not Path("/proc/self").is_dir():  # no procfs (macOS): the pid's existence is all there is
            return _pid_alive(pid)
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:  # gone (a zombie's cmdline is empty: ended too)
            return False
        return b"submitit.local._local" in args and str(self.folder).encode() in args


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process took the id
        return False
    return True


def make_jobs(launcher: Any, config: Any, hydra_context: Any, task_function: Any) -> Jobs:
    """The backend for the configured `hydra/launcher`: SLURM for the submitit launchers, else local."""
    import submitit

    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher

    sweep_dir = Path(str(config.hydra.sweep.dir))
    # By the launchers' executor name, not isinstance: Hydra's plugin scan executes plugin modules
    # again, so the SlurmLauncher that hydra_plugins.slotsweep_launcher derives from is not the
    # class an import gives here (isinstance said no, and a SLURM sweep ran its jobs locally).
    executor_name = getattr(launcher, "_EXECUTOR", None)
    if executor_name == "slurm":
        # The executor as hydra-submitit-launcher's launch() builds it, from the same settings.
        params = dict(launcher.params)
        folder = Path(params.pop("submitit_folder"))
        executor = submitit.AutoExecutor(
            cluster="slurm", folder=folder, slurm_max_num_timeout=params.pop("max_num_timeout")
        )
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
        return SlurmJobs(executor, launcher, folder)
    if executor_name is not None:
        raise NotImplementedError(
            f"hydra/launcher {type(launcher).__name__}: use slurm_gpu, slurm_cpu or local"
        )
    folder = sweep_dir / FOLDER_PATTERN
    runner = LocalLauncher(submitit_folder=str(folder))
    runner.setup(hydra_context=hydra_context, task_function=task_function, config=config)
    sweeper = config.hydra.sweeper
    # jobs in flight at once: one per trial and seed, or per pool (pool_size trials) and seed
    n_slots = math.ceil(sweeper.n_jobs / sweeper.get("pool_size", 1)) * max(1, len(sweeper.seeds or []))
    return LocalJobs(_local_executor(folder), runner, folder, n_slots, sweeper.split_local_devices)

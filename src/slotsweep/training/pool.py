"""Trial pools: trials of one input stream trained as heads over one frozen-encoder forward.

Trials of a sweep at one seed see the same batches: the data order depends on the seed alone
(task.run seeds again after the model is built, and the training slot draws come from each
module's own generator, ObjectCentricModule.train_seed). Their frozen encoder therefore computes
the same features once per trial. A pool builds one module per trial (a *head*: grouper,
predictor, decoder, losses, optimizer, schedule, clipping and init of that trial's config), lets
the heads share one encoder whose forward remembers its last input (`SharedEncoder`), and trains
them in one process: per batch the encoder runs once and each head takes its step on those features.

Heads come and go one by one. The sweeper hands a trial to a running pool as a ticket
(runs/pool_queue.py); the pool takes waiting tickets at its *join points*, the steps at which it
validates (multiples of trainer.val_check_interval), so a head that joins at stream position S
validates at S + V, S + 2V, ... as a solo run validates at V, 2V, .... Its config gets
`stream_start_step=S`: a solo run of that config starts the seed's data stream at S too
(training/exact_resume.py) and trains trainer.max_steps steps, so the head's results equal that
solo run's, and its exp_id says where it started (S=0 leaves the id as it was). A head ends at its
own trainer.max_steps, when the sweeper prunes it (stop_request, read at validation) or on a
NaN/error (that head only); its run dir gets its results at once and its memory is freed. Joining
needs V to divide trainer.max_steps (heads then end at validations); otherwise the pool trains the
heads it started with and ends when they end.

Why a LightningModule with manual optimisation, not a plain loop: Lightning drives one module per
Trainer, and the Trainer is where a solo run's numbers come from: the loaders' worker seeding,
the precision plugin (autocast), device placement, the validation cadence, signal handling and the
atomic checkpoint IO. `PoolModule` is that one module and holds the heads as submodules; what a
Trainer does for the module of a solo run (optimizer and schedule steps, gradient clipping, the
NaN check, logging, validation.jsonl, stop requests, results.json) the pool does per head. Lightning
sees one parameterless *clock* optimizer that advances global_step once per batch; the heads'
optimizers live in the pool and in its checkpoint.

Each head's run dir gets what a solo run writes: identity.json, config.yaml, its own logger
(csv/W&B), validation.jsonl, checkpoints/last.ckpt (that head's weights, optimizer and schedule,
the `slotsweep` section eval and infer read) and results.json, plus `pool`: {id, size, head,
ticket, start_step}; no mask pictures (val_pictures is not drawn in a pool). The pool's checkpoint
(<pool dir>/checkpoints/last.ckpt, every checkpoint_every_n_steps) holds every training head: a
killed pool job relaunched (or requeued by SLURM) resumes every head from it, losing at most one
checkpoint interval; a head that joined after that checkpoint joins again at the same step. Device
time is shared: each interval of the pool process's time goes in equal parts to the heads that
trained in it, so the heads' device_seconds add up to the pool's.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.accelerators import CUDAAccelerator
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor, nn

from slotsweep import numerics
from slotsweep.build import build_datamodule
from slotsweep.contracts import EncoderOutput
from slotsweep.data.video_transforms import frames_to_video
from slotsweep.errors import SlotsweepError
from slotsweep.models.weights import leave_out_frozen
from slotsweep.runs import experiment
from slotsweep.runs.checkpoint_files import LAST_CHECKPOINT, SafeCheckpointIO, resume_checkpoint
from slotsweep.runs.lock import RunDirLock, claim_run_dir
from slotsweep.runs.pool_queue import PoolQueue
from slotsweep.runs.trial_files import append_report, clear_stop_request, stop_requested
from slotsweep.training import tracking
from slotsweep.training.callbacks import VerifiedCheckpoint
from slotsweep.training.cost import DeviceClock
from slotsweep.training.estimate import check_pool_fits
from slotsweep.training.exact_resume import ExactResume, kept_global_rng, use_epoch_stream
from slotsweep.training.job_cores import apply_cpu_share
from slotsweep.training.module import NonFiniteLossError, model_inputs
from slotsweep.training.progress import progress_callbacks
from slotsweep.training.quiet import quiet_lightning
from slotsweep.training.task import _check_trainer, _objective, _protocol, build_module

__all__ = [
    "HeadRun",
    "PoolModule",
    "SharedEncoder",
    "check_stream",
    "join_every",
    "pool_id",
    "run_pool",
    "serve_pool",
    "stream_hash",
    "stream_keys",
    "write_head_results",
]

log = logging.getLogger(__name__)
# The pool's step checkpoints hold the weights after the step's update, as a solo run's do; that is
# what this Lightning warning about manual optimisation asks about.
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")

# Keys whose values decide the batches the encoder sees, its weights, or how the Trainer drives the
# stream: equal in every head of a pool. The other keys (model, losses, optim, clipping, length) are
# the heads'. load_weights is here because a checkpoint may hold encoder weights: a head loading
# other ones must not be handed head 0's encoder (it would train on another config's features).
_STREAM_KEYS = (
    "seed",
    "dataset",
    "encoder",
    "load_weights",
    "cache",
    "checkpoint_every_n_steps",
    "eval_seed",
)
_HEAD_TRAINER_KEYS = ("gradient_clip_val", "max_steps")  # per head: the pool clips and ends each itself
FINAL = ("completed", "pruned", "failed")  # a head's statuses once it has ended


def stream_keys(cfg: DictConfig) -> dict[str, Any]:
    """What must be equal across a pool's heads: the input stream and the Trainer's settings."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    keys = {key: tree[key] for key in _STREAM_KEYS}
    keys["trainer"] = {k: v for k, v in tree["trainer"].items() if k not in _HEAD_TRAINER_KEYS}
    return keys


def stream_hash(cfg: DictConfig) -> str:
    """8 hex of stream_keys: trials with the same hash can share a pool (the sweeper groups by it)."""
    text = OmegaConf.to_yaml(OmegaConf.create(stream_keys(cfg)), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def pool_id(cfgs: list[DictConfig]) -> str:
    """`seed<k>-<8 hex>`: a hash of the heads' experiment ids, in order."""
    ids = ",".join(experiment.experiment_id(cfg) for cfg in cfgs)
    return f"seed{cfgs[0].seed}-{hashlib.sha256(ids.encode()).hexdigest()[:8]}"


class SharedEncoder:
    """Makes one frozen encoder's forward remember its last input and output, so the heads that
    call it on the same batch (each through its own ObjectCentricModel.encode) run it once.

    The input is recognised by its storage, shape, strides and version counter, and held until
    `forget()`, so its memory cannot be reused by another tensor meanwhile.
    """

    def __init__(self, encoder: nn.Module) -> None:
        if not encoder.frozen:
            raise SlotsweepError("a pool shares a frozen encoder: set encoder.frozen=true")
        self.encoder = encoder
        self._forward = encoder.forward
        self._last: tuple[Tensor, tuple, EncoderOutput] | None = None
        self.calls = 0  # encoder forwards actually run (benchmarks and tests read it)
        encoder.forward = self.forward  # an instance attribute: nn.Module.__call__ finds it

    @staticmethod
    def _key(images: Tensor) -> tuple:
        # inference tensors (validation) have no version counter, and cannot be written in place
        version = 0 if images.is_inference() else images._version
        return (images.data_ptr(), tuple(images.shape), images.stride(), images.dtype, version)

    def forward(self, images: Tensor) -> EncoderOutput:
        """images (N, 3, H, W) -> the encoder's output, computed once per distinct input."""
        if self._last is not None and self._last[1] == self._key(images):
            return self._last[2]
        out = self._forward(images)
        self.calls += 1
        self._last = (images, self._key(images), out)
        return out

    def forget(self) -> None:
        self._last = None


@dataclass
class HeadRun:
    """One head: its run dir, where it joined the stream, and what the pool keeps for it."""

    cfg: DictConfig
    ticket: str
    start_step: int  # the stream position it joined at (its config's stream_start_step)
    exp_id: str = ""
    directory: Path | None = None
    logger: Any = None
    lock: RunDirLock | None = None
    status: str = "training"  # -> completed | failed | pruned
    error: str | None = None
    stopped_at: int | None = None  # its own step count when it ended
    session_step: int = 0  # its own step count when this session of the pool started with it
    previous_steps: int = 0  # steps of earlier sessions (a resumed pool)
    device_seconds: float = 0.0  # its share of the pool's device time, earlier sessions included
    last_metrics: dict[str, float] = field(default_factory=dict)

    def local_step(self, global_step: int) -> int:
        return global_step - self.start_step


class PoolModule(L.LightningModule):
    """The heads of one pool, trained on one stream; see the module docstring.

    Args:
        datamodule: the stream's (set up): every head is built on it.
        queue: the pool dir's tickets (new heads join from it at join points).
        resolved: the pool's numerics: every head trains and validates at them.
        join_every: the join points' spacing (trainer.val_check_interval), or None: no joining.
        on_gpu: the pool runs on one GPU (its device-seconds are wall seconds), else CPU-seconds.
        from_process_start: the pool's cost counts from its process's start (a sweep's job).
    """

    def __init__(
        self,
        datamodule: L.LightningDataModule,
        queue: PoolQueue,
        resolved: numerics.Numerics,
        join_every: int | None,
        on_gpu: bool,
        from_process_start: bool = False,
    ) -> None:
        super().__init__()
        self.datamodule_ = datamodule
        self.queue = queue
        self.resolved = resolved
        self.join_every = join_every
        self.automatic_optimization = False
        self.heads = nn.ModuleList()  # a head's slot becomes an empty Module when it ends
        self.runs: list[HeadRun] = []
        self.head_optimizers: list[tuple[torch.optim.Optimizer, Any] | None] = []
        self._trainable: list[list[nn.Parameter]] = []
        self.encoder: SharedEncoder | None = None
        self._clock = nn.Parameter(torch.zeros(()))  # the clock optimizer's: never has a gradient
        self._restored: dict[str, dict[str, Any]] = {}  # ticket -> its state in the resumed checkpoint
        self._rejoin: dict[str, int] = {}  # ticket -> step: heads a resumed pool adds again there
        self.pool_clock = DeviceClock(None, from_process_start)
        self._n_gpus = 1 if on_gpu else 0
        self._shared_until = 0.0  # pool device-seconds already given to heads
        self.encoder_calls_at_start = 0

    @property
    def pool_id(self) -> str:
        return self.queue.directory.name

    # -- heads ---------------------------------------------------------------------------------
    def add_head(
        self, ticket: str, cfg: DictConfig, start_step: int, restored: dict[str, Any] | None
    ) -> None:
        """Build ticket's head at stream position start_step, claim its run dir (identity,
        config.yaml, logger) and accept it; a head that cannot be built ends as failed."""
        with open_dict(cfg):
            cfg.stream_start_step = start_step
        run = HeadRun(cfg, ticket, start_step)
        self.runs.append(run)
        self.heads.append(nn.Module())  # its slot, filled below when it builds
        self.head_optimizers.append(None)
        self._trainable.append([])
        k = len(self.runs) - 1
        try:
            located = experiment.locate(cfg)
            run.exp_id, run.directory = located.exp_id, located.directory
            _check_same_stream(self.runs[0].cfg, cfg, k)
            with kept_global_rng():  # building draws from the global generators: not the stream's
                L.seed_everything(cfg.seed, workers=True)  # as task.run seeds before building
                head = build_module(cfg, self.datamodule_)
        except Exception as error:  # this ticket's: the pool goes on
            self.queue.accept(ticket, start_step, run.directory)
            run.status, run.error = "failed", _described(error)
            self._end_record(run)
            log.warning(f"pool {self.pool_id}: ticket {ticket} failed to build: {run.error}")
            return
        if self.encoder is None:
            self.encoder = SharedEncoder(head.model.encoder)
        else:  # one encoder (same config and weights): copies would only cost memory
            head.model.encoder = self.encoder.encoder
        head.to(self.device)
        self.heads[k] = head
        self._trainable[k] = [p for p in head.parameters() if p.requires_grad]  # solo optimizer order
        previous = experiment.read_results(run.directory) if restored is None else None
        run.lock = claim_run_dir(run.directory, False, 0)
        experiment.write_identity(located, cfg.seed)
        clear_stop_request(run.directory)
        (run.directory / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        run.logger = instantiate(cfg.logger)(**tracking.logger_kwargs(cfg, run.exp_id, run.directory))
        self.queue.accept(ticket, start_step, run.directory)
        if restored is not None:
            head.load_section(restored["slotsweep"])
            run.previous_steps, run.device_seconds = restored["steps"], restored["device_seconds"]
        elif previous is not None and previous["status"] == "completed" and not cfg.force:
            # a solo run (or an earlier pool) finished this config already: its result stands
            run.status, run.last_metrics = "completed", dict(previous["metrics"])
            run.stopped_at = previous["step"]
            self._end_record(run)
            self._release(k)
            return
        if self._trainer is not None:  # joined a running stream (configure_optimizers has run)
            self.head_optimizers[k] = head.optim.build(self._trainable[k], head.total_batch_size)
            log.info(f"pool {self.pool_id}: {ticket} joins at step {start_step} ({run.directory})")
        run.session_step = max(0, self.global_step - start_step)

    def active(self) -> list[int]:
        return [k for k, run in enumerate(self.runs) if run.status == "training"]

    def join_waiting(self) -> None:
        """Add the heads due at this step: a resumed pool's, then the waiting tickets (join points only)."""
        step = self.global_step
        for ticket, at in sorted(self._rejoin.items()):
            if at <= step:
                del self._rejoin[ticket]
                self.add_head(ticket, self.queue.config(ticket), at, None)
        if self.join_every is None or step % self.join_every:
            return
        for ticket in self.queue.waiting():
            cfg = self.queue.claim(ticket)
            if cfg is not None:
                self.add_head(ticket, cfg, step, None)

    def stop_head(self, k: int, status: str, error: str | None = None) -> None:
        """End head k at this step: its results.json is written and its memory freed at once."""
        run = self.runs[k]
        run.status, run.error = status, error
        run.stopped_at = run.local_step(self.global_step)
        log.info(
            f"pool {self.pool_id}: head {run.ticket} ({run.directory}) {status} at its step {run.stopped_at}"
        )
        self._share_cost()
        write_head_results(self, k)
        self._end_record(run)
        self._release(k)

    def _release(self, k: int) -> None:
        self.heads[k] = nn.Module()
        self.head_optimizers[k] = None
        self._trainable[k] = []
        run = self.runs[k]
        if run.lock is not None:
            run.lock.release()
            run.lock = None

    def _end_record(self, run: HeadRun) -> None:
        """The ended head's outcome in the pool dir, where the sweeper reads it (its job's return value)."""
        objective = None
        if run.status != "failed":
            value = _objective(run.cfg, run.last_metrics)
            objective = list(value) if isinstance(value, tuple) else [value]
        self.queue.finish(run.ticket, run.status, objective, run.error)

    # -- cost ----------------------------------------------------------------------------------
    def _share_cost(self) -> None:
        """Give the pool's device time since the last share to the heads training now, equally."""
        now = self.pool_clock.seconds(self._n_gpus)
        active = self.active()
        if active:
            for k in active:
                self.runs[k].device_seconds += (now - self._shared_until) / len(active)
            self._shared_until = now

    # -- Lightning -----------------------------------------------------------------------------
    def check_finite(self) -> None:
        """VerifiedCheckpoint asks this before keeping a checkpoint. A head's loss is checked at its
        own step (training_step: a NaN stops that head alone), so nothing is left to check here."""

    def configure_optimizers(self) -> torch.optim.Optimizer:
        for k in self.active():
            head = self.heads[k]
            optimizer, schedule = head.optim.build(self._trainable[k], head.total_batch_size)
            restored = self._restored.get(self.runs[k].ticket)
            if restored is not None:  # a resume: the heads were built from its checkpoint
                optimizer.load_state_dict(restored["optimizer"])
                schedule.load_state_dict(restored["schedule"])
            self.head_optimizers[k] = (optimizer, schedule)
        return torch.optim.SGD([self._clock], lr=0.0)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # the heads share the data config: the device-side batch transform is the solo runs'
        return frames_to_video(batch) if isinstance(batch, dict) else batch

    def on_train_start(self) -> None:
        for run in self.runs:
            if run.status == "training":
                run.session_step = run.local_step(self.global_step)
        self.encoder_calls_at_start = self.encoder.calls if self.encoder is not None else 0

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.join_waiting()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        losses: dict[int, Tensor] = {}
        for k in self.active():
            try:
                losses[k] = self._head_step(k, batch)
            except torch.OutOfMemoryError as error:  # the pool's: fewer heads would fit
                raise SlotsweepError(
                    f"the device ran out of memory with {len(self.active())} heads in pool "
                    f"{self.pool_id} (pool size {self.queue.size()}): lower hydra.sweeper.pool_size "
                    "(python src/estimate.py ... pool_size=<K> says what fits)"
                ) from error
            except Exception as error:  # this head's: the others train on
                self.stop_head(k, "failed", _described(error))
        # One look at the losses per step, after every head has queued its work: a check per head
        # would make the host wait for the device K times a step. A head whose loss was NaN/inf
        # stepped on it, but its weights are not kept (a failed head's run dir gets no checkpoint).
        finite = torch.isfinite(torch.stack(list(losses.values()))).tolist() if losses else []
        for (k, loss), ok in zip(losses.items(), finite, strict=True):
            if not ok:
                error = NonFiniteLossError(
                    f"training loss is {loss.item()} at step {self.runs[k].local_step(self.global_step)}; "
                    "lower optim.base_lr, or clip gradients (trainer.gradient_clip_val)"
                )
                self.stop_head(k, "failed", _described(error))
        if self.encoder is not None:
            self.encoder.forget()
        self.optimizers().step()  # the clock: global_step + 1

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._share_cost()
        if not self.active() and not self._more_to_come():
            self.trainer.should_stop = True

    def _more_to_come(self) -> bool:
        """Whether a head may still join: one to rejoin, or a ticket waiting (the queue is closed
        when none is, so a ticket never lands in a pool that has ended)."""
        if self._rejoin:
            return True
        if self.join_every is None:
            return False
        if not self.queue.waiting():
            self.queue.close()
        return bool(self.queue.waiting())

    def _head_step(self, k: int, batch: dict[str, Tensor]) -> Tensor:
        """Head k's training step on the batch; its loss (checked for NaN/inf by the caller)."""
        head, run = self.heads[k], self.runs[k]
        optimizer, schedule = self.head_optimizers[k]
        values = head.compute_losses(head.model(**model_inputs(batch), generator=head.train_generator()))
        step = run.local_step(self.global_step)
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(values["loss"])
        clip = run.cfg.trainer.get("gradient_clip_val")
        if clip:  # as Lightning clips a solo run: the norm over the optimizer's parameters
            torch.nn.utils.clip_grad_norm_(self._trainable[k], clip)
        optimizer.step()
        schedule.step()
        if run.logger and (step + 1) % run.cfg.trainer.log_every_n_steps == 0:
            logged = {f"train/{n}": float(v.detach()) for n, v in values.items()}
            run.logger.log_metrics(logged, step=step)
        return values["loss"].detach()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        for k in self.active():
            try:
                self.heads[k].validation_step(batch, batch_idx)
            except Exception as error:
                self.stop_head(k, "failed", _described(error))
        if self.encoder is not None:
            self.encoder.forget()

    def on_validation_epoch_end(self) -> None:
        fitting = self.trainer.state.fn == "fit" and not self.trainer.sanity_checking
        if fitting:
            self._share_cost()  # the validation's time, before the heads report their cost
        for k in self.active():
            run, results = self.runs[k], self.heads[k].validation_results()
            if self.trainer.sanity_checking:
                continue
            run.last_metrics = results
            step = run.local_step(self.global_step)
            if run.logger:
                run.logger.log_metrics(results, step=step)
            if not fitting:
                continue
            objective = list(run.cfg.objective)
            if all(key in results for key in objective):
                values = [results[key] for key in objective]
                append_report(run.directory, step, values, run.device_seconds)
            if self.join_every is not None and step >= run.cfg.trainer.max_steps:
                self.stop_head(k, "completed")  # its last step validated: those are its results
            elif stop_requested(run.directory):  # the sweep pruned this head
                self.stop_head(k, "pruned")
        if fitting and not self.active() and not self._more_to_come():
            self.trainer.should_stop = True

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._share_cost()
        heads = {}
        for k, run in enumerate(self.runs):
            state = {"status": run.status, "start_step": run.start_step}
            if run.status == "training":
                head, (optimizer, schedule) = self.heads[k], self.head_optimizers[k]
                leave_out_frozen(checkpoint["state_dict"], head.model, f"heads.{k}.model.")  # as a solo run
                state |= {
                    "index": k,
                    "slotsweep": head.checkpoint_section(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "steps": run.previous_steps + run.local_step(self.global_step) - run.session_step,
                    "device_seconds": run.device_seconds,
                }
            heads[run.ticket] = state
        checkpoint["pool"] = {"id": self.pool_id, "heads": heads}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The restored heads' weights under their index in this session (heads that ended are
        not rebuilt, so indices move), their frozen encoders put back; the ended heads' dropped."""
        stored, state_dict = checkpoint["state_dict"], {"_clock": checkpoint["state_dict"]["_clock"]}
        for k, run in enumerate(self.runs):
            if run.status != "training" or run.ticket not in self._restored:
                continue
            state = self._restored[run.ticket]
            old, new = f"heads.{state['index']}.", f"heads.{k}."
            state_dict |= {new + name[len(old) :]: v for name, v in stored.items() if name.startswith(old)}
            name = f"pool checkpoint {self.trainer.ckpt_path}"
            self.heads[k].restore_frozen(state_dict, state["slotsweep"], f"heads.{k}.model.", name)
        checkpoint["state_dict"] = state_dict

    def head_checkpoint(self, k: int) -> dict[str, Any]:
        """Head k as a solo run's checkpoint holds its module: what eval and infer read."""
        prefix = f"heads.{k}."
        state = {
            name[len(prefix) :]: value for name, value in self.state_dict().items() if name.startswith(prefix)
        }
        leave_out_frozen(state, self.heads[k].model, "model.")
        optimizer, schedule = self.head_optimizers[k]
        return {
            "state_dict": state,
            "slotsweep": self.heads[k].checkpoint_section(),
            "optimizer_states": [optimizer.state_dict()],
            "lr_schedulers": [schedule.state_dict()],
            "global_step": self.runs[k].local_step(self.global_step),
            "pytorch-lightning_version": L.__version__,
            "pool": {"id": self.pool_id, "ticket": self.runs[k].ticket},
        }


def write_head_results(pool: PoolModule, k: int) -> dict[str, Any]:
    """Head k's checkpoints/last.ckpt and results.json, as a solo run of its config writes them."""
    run = pool.runs[k]
    if run.status != "failed":  # a failed head's weights gave a NaN or an error: nothing to resume
        checkpoint = pool.head_checkpoint(k)
        SafeCheckpointIO(run.cfg.allow_pickle).save_checkpoint(checkpoint, run.directory / LAST_CHECKPOINT)
    step = run.stopped_at if run.stopped_at is not None else run.local_step(pool.global_step)
    started = "new" if run.session_step == 0 else "requeued"
    results = {
        "exp_id": run.exp_id,
        "exp_name": run.cfg.exp_name,
        "seed": run.cfg.seed,
        "run_dir": str(run.directory),
        "max_steps": run.cfg.trainer.max_steps,
        "config": OmegaConf.to_container(run.cfg, resolve=True),
        "protocol": _protocol(run.cfg, pool.datamodule_, pool.heads[k], pool.resolved).as_dict(),
        "precision": pool.resolved.label,
        "status": run.status,
        "error": run.error,
        "step": step,
        "wall_time_s": pool.heads[k].elapsed_s(),
        "metrics": {} if run.status == "failed" else dict(run.last_metrics),
        "best_metrics": pool.heads[k].best_metrics,
        # its share of the pool's device time (training/pool.py: shared among the heads training)
        "device_kind": "gpu" if pool._n_gpus else "cpu",
        "device_seconds": run.device_seconds,
        "steps": run.previous_steps + step - run.session_step,
        "segments": [
            {"from_step": run.session_step, "to_step": step, "started": started, "ended": run.status}
        ],
        "pool": {
            "id": pool.pool_id,
            "size": pool.queue.size(),
            "head": k,
            "ticket": run.ticket,
            "start_step": run.start_step,
        },
    }
    experiment.write_results(run.directory, results)
    if run.logger:
        run.logger.finalize("failed" if run.status == "failed" else "success")  # csv: writes its rows
    tracking.finish_wandb(run.logger, exit_code=0 if run.status != "failed" else 1)
    return results


def _described(error: BaseException) -> str:
    """A head's error as results.json and the sweeper show it: `<class>: <message>`."""
    return f"{type(error).__name__}: {error}"


def _check_same_stream(first: DictConfig, cfg: DictConfig, k: int) -> None:
    keys, other = stream_keys(first), stream_keys(cfg)
    differing = sorted(key for key in keys if keys[key] != other[key])
    if differing:
        raise SlotsweepError(
            f"pool head {k} differs from head 0 in {differing}: a pool's heads share one input "
            "stream (one seed, data, encoder and trainer); hydra.sweeper.pool_size=1 runs them apart"
        )


def check_stream(cfgs: list[DictConfig]) -> None:
    """Raise (one line) unless the configs can be the heads of one pool."""
    if not cfgs:
        raise SlotsweepError("a pool needs at least one config")
    for k, cfg in enumerate(cfgs[1:], 1):
        _check_same_stream(cfgs[0], cfg, k)
    if cfgs[0].trainer.get("precision") in ("16-mixed", "16", 16):
        raise SlotsweepError(
            f"trainer.precision={cfgs[0].trainer.precision}: a pool trains in 32-true or bf16-mixed "
            "(fp16 would need a loss scaler per head)"
        )
    devices = experiment.device_count(cfgs[0].trainer.get("devices", 1)) * cfgs[0].trainer.get("num_nodes", 1)
    if devices != 1:
        raise SlotsweepError(
            f"trainer.devices={cfgs[0].trainer.get('devices')}: a pool trains on one device; "
            "hydra.sweeper.pool_size=1 runs multi-device trials"
        )


def join_every(cfg: DictConfig) -> int | None:
    """The join points' spacing: trainer.val_check_interval when it is a step count that divides
    trainer.max_steps (every head then ends at a validation), else None (no joining)."""
    every, max_steps = cfg.trainer.get("val_check_interval"), cfg.trainer.max_steps
    if isinstance(every, int) and every > 0 and max_steps % every == 0:
        return every
    return None


def run_pool(
    cfgs: list[DictConfig], pool_dir: Path | None = None, callbacks: Sequence[L.Callback] = ()
) -> list[float | tuple[float, ...]]:
    """Train the configs as the heads of one pool; return each one's objective(s), in order.

    Args:
        cfgs: composed training configs with equal `stream_keys` (same seed, data, encoder, trainer).
        pool_dir: the pool's tickets and checkpoints; default <paths.runs_dir>/pools/<pool id>.
            Launched again with the same configs, a killed pool resumes every head.
        callbacks: more Lightning callbacks for the pool's Trainer (a benchmark's step clock).
    """
    check_stream(cfgs)
    for cfg in cfgs:
        experiment.locate(cfg)  # bad input fails here, before anything is written
    directory = (
        Path(pool_dir) if pool_dir is not None else Path(cfgs[0].paths.runs_dir) / "pools" / pool_id(cfgs)
    )
    queue = PoolQueue(directory)
    fresh = not queue.heads.is_dir()
    queue.create(len(cfgs))
    tickets = [f"head{k:03d}" for k in range(len(cfgs))]
    if fresh:
        for ticket, cfg in zip(tickets, cfgs, strict=True):
            queue.submit(ticket, cfg)
    serve_pool(cfgs[0], directory, callbacks=callbacks)
    outcomes = [queue.accepted(ticket) for ticket in tickets]
    return [_as_objective(outcome) for outcome in outcomes]


def _as_objective(outcome: dict[str, Any] | None) -> float | tuple[float, ...]:
    if outcome is None or outcome.get("objective") is None:
        return float("nan")
    values = tuple(outcome["objective"])
    return values[0] if len(values) == 1 else values


def serve_pool(
    cfg: DictConfig, pool_dir: Path, job: bool = False, callbacks: Sequence[L.Callback] = ()
) -> None:
    """Run the pool at pool_dir (its tickets: runs/pool_queue.py) until no head trains and none
    waits. `cfg` is the job's config (its stream's trainer, data and seed: its first ticket's).

    `job`: this process was started for the pool (a sweep's job), so its cost counts from the
    process's start.
    """
    quiet_lightning()  # each Lightning line once, as in a solo run
    check_stream([cfg])
    located = experiment.locate(cfg)
    queue = PoolQueue(pool_dir)
    if not queue.heads.is_dir():
        raise SlotsweepError(
            f"pool_dir={pool_dir} is not a trial pool's folder (runs/pool_queue.py): a sweep with "
            "hydra.sweeper.pool_size > 1 sets it; for given heads use src/pool.py"
        )
    apply_cpu_share()
    resolved = located.resolved  # trainer.precision=auto, as a solo run resolves it
    numerics.apply(resolved)
    _check_trainer(cfg, resolved)
    every = join_every(cfg)
    datamodule = build_datamodule(cfg.dataset)
    datamodule.setup("fit")
    trainer = _pool_trainer(cfg, queue.directory, resolved, every, callbacks)
    on_gpu = isinstance(trainer.accelerator, CUDAAccelerator)
    if on_gpu:  # one error line naming pool_size, before any head's run dir is written
        free_gib = torch.cuda.mem_get_info()[0] / 2**30
        check_pool_fits(cfg, free_gib, queue.size(), resolved.precision)
    pool = PoolModule(datamodule, queue, resolved, every, on_gpu, from_process_start=job)
    try:
        resume = resume_checkpoint(queue.directory / "checkpoints")
        _add_first_heads(pool, queue, resume, cfg.allow_pickle)
        L.seed_everything(cfg.seed, workers=True)  # the data order, as a solo run seeds it again
        use_epoch_stream(datamodule, trainer, cfg.seed)  # the batches of a solo run of the seed
        if resume is not None:
            log.info(f"pool {queue.directory.name}: resuming from {resume}")
        if pool.active() or pool._rejoin or queue.waiting():
            trainer.fit(pool, datamodule=datamodule, ckpt_path=resume)
            trainer.checkpoint_callback.save_final(trainer)
        queue.close()
        finishing = pool.active()  # no joining: the heads train to trainer.max_steps together
        if finishing:
            trainer.validate(pool, datamodule=datamodule, verbose=False)
            for k in finishing:
                pool.stop_head(k, "completed")
    finally:
        for run in pool.runs:
            if run.lock is not None:
                run.lock.release()


def _add_first_heads(pool: PoolModule, queue: PoolQueue, resume: Path | None, allow_pickle: bool) -> None:
    """A fresh pool's heads: the waiting tickets at step 0. A resumed pool's: its checkpoint's
    training heads; those accepted after it join again at their step, the rest as they wait."""
    if resume is None:
        for ticket in queue.waiting():
            cfg = queue.claim(ticket)
            if cfg is not None:
                pool.add_head(ticket, cfg, 0, None)
        return
    checkpoint = SafeCheckpointIO(allow_pickle).load_checkpoint(resume)
    stored = checkpoint["pool"]["heads"]
    records = queue.accepted_tickets()  # a head that ended after the checkpoint has its results
    pool._restored = {
        ticket: state
        for ticket, state in stored.items()
        if state["status"] == "training" and records.get(ticket, {}).get("status") is None
    }
    for ticket, state in sorted(pool._restored.items(), key=lambda item: item[1]["index"]):
        pool.add_head(ticket, queue.config(ticket), state["start_step"], state)
    for ticket, record in records.items():
        if ticket not in stored and record.get("status") is None:
            pool._rejoin[ticket] = record["start_step"]


def _pool_trainer(
    cfg: DictConfig,
    directory: Path,
    resolved: numerics.Numerics,
    every: int | None,
    callbacks: Sequence[L.Callback],
) -> L.Trainer:
    """The Trainer of a pool: a solo run's (build_trainer) without the per-run callbacks, which the
    pool does per head, and without clipping, which it does per head too. A pool that takes new
    heads runs until none trains (max_steps -1); one that does not, to trainer.max_steps."""
    checkpoints = VerifiedCheckpoint(
        dirpath=directory / "checkpoints",
        filename="step{step:07d}",
        auto_insert_metric_name=False,
        every_n_train_steps=cfg.checkpoint_every_n_steps,
    )
    progress = progress_callbacks(cfg.trainer.enable_progress_bar, cfg.trainer.log_every_n_steps)
    return instantiate(cfg.trainer)(
        precision=resolved.precision,
        default_root_dir=directory,
        callbacks=[checkpoints, ExactResume(), *progress, *callbacks],  # training draws as in a solo run
        enable_progress_bar=any(isinstance(c, L.pytorch.callbacks.ProgressBar) for c in progress),
        logger=False,
        gradient_clip_val=None,
        max_steps=-1 if every is not None else cfg.trainer.max_steps,
        plugins=[SafeCheckpointIO(cfg.allow_pickle)],
    )

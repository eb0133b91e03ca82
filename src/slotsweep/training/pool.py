"""Trial pools: K trials of one input stream trained as K heads over one frozen-encoder forward.

Trials of a sweep at one seed see the same batches: the data order depends on the seed alone
(task.run seeds again after the model is built, and the training slot draws come from each
module's own generator, ObjectCentricModule.train_seed). Their frozen encoder therefore computes
the same features once per trial. A pool builds the K modules (*heads*: grouper, predictor,
decoder, losses, optimizer, schedule, clipping and init of each trial's config), lets them share
one encoder whose forward remembers its last input (`SharedEncoder`), and trains them in one
process: per batch the encoder runs once and each head takes its step on those features.

Why a LightningModule with manual optimisation, not a plain loop: Lightning drives one module per
Trainer, and the Trainer is where a solo run's numbers come from: the loaders' worker seeding,
the precision plugin (autocast), device placement, the validation cadence, signal handling and the
atomic checkpoint IO. `PoolModule` is that one module and holds the K heads as submodules; what a
Trainer does for the module of a solo run (optimizer and schedule steps, gradient clipping, the
NaN check, logging, validation.jsonl, stop requests, results.json) the pool does per head, so a
head's NaN, error or prune stops that head only. Lightning sees one parameterless *clock*
optimizer that advances global_step once per batch; the heads' optimizers live in the pool and
in its checkpoint (with K Lightning optimizers, manual optimisation would count K steps a batch).

Each head's run dir gets what a solo run writes: identity.json, config.yaml, its own logger
(csv/W&B), validation.jsonl, checkpoints/last.ckpt (that head's weights, optimizer and schedule,
the `slotsweep` section eval and infer read) and results.json, plus `pool`: {id, size, head,
start_step}; no mask pictures yet (val_pictures is not drawn in a pool). The pool's checkpoint
(<pool dir>/checkpoints/last.ckpt, every checkpoint_every_n_steps) holds all heads: a killed pool
job relaunched with the same configs resumes every head from it and loses at most one checkpoint
interval.
"""

import hashlib
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.accelerators import CUDAAccelerator
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from slotsweep import numerics
from slotsweep.build import build_datamodule
from slotsweep.contracts import EncoderOutput
from slotsweep.errors import SlotsweepError
from slotsweep.models.weights import leave_out_frozen
from slotsweep.runs import experiment
from slotsweep.runs.checkpoint_files import LAST_CHECKPOINT, SafeCheckpointIO, resume_checkpoint
from slotsweep.runs.lock import RunDirLock, claim_run_dir
from slotsweep.runs.trial_files import append_report, clear_stop_request, stop_requested
from slotsweep.training import tracking
from slotsweep.training.callbacks import VerifiedCheckpoint
from slotsweep.training.cost import DeviceClock
from slotsweep.training.exact_resume import ExactResume, use_epoch_stream
from slotsweep.training.job_cores import apply_cpu_share
from slotsweep.training.module import NonFiniteLossError, ObjectCentricModule, model_inputs
from slotsweep.training.progress import progress_callbacks
from slotsweep.training.task import _check_trainer, _objective, _protocol, build_module

__all__ = [
    "HeadRun",
    "PoolModule",
    "SharedEncoder",
    "build_pool",
    "check_stream",
    "pool_id",
    "run_pool",
    "stream_keys",
]

log = logging.getLogger(__name__)
# The pool's step checkpoints hold the weights after the step's update, as a solo run's do; that is
# what this Lightning warning about manual optimisation asks about.
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")

# Keys whose values decide the batches the encoder sees, or how the Trainer drives the stream:
# equal in every head of a pool. The other keys (model, losses, optim, clipping) are the heads'.
_STREAM_KEYS = ("seed", "dataset", "encoder", "cache", "checkpoint_every_n_steps", "eval_seed")
_HEAD_TRAINER_KEYS = ("gradient_clip_val",)  # per head: the pool clips each head itself


def stream_keys(cfg: DictConfig) -> dict[str, Any]:
    """What must be equal across a pool's heads: the input stream and the Trainer's settings."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    keys = {key: tree[key] for key in _STREAM_KEYS}
    keys["trainer"] = {k: v for k, v in tree["trainer"].items() if k not in _HEAD_TRAINER_KEYS}
    return keys


def pool_id(cfgs: list[DictConfig]) -> str:
    """`seed<k>-<8 hex>`: a hash of the heads' experiment ids, in order."""
    ids = ",".join(experiment.experiment_id(cfg) for cfg in cfgs)
    return f"seed{cfgs[0].seed}-{hashlib.sha256(ids.encode()).hexdigest()[:8]}"


class SharedEncoder:
    """Makes one frozen encoder's forward remember its last input and output, so the K heads
    that call it on the same batch (each through its own ObjectCentricModel.encode) run it once.

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
    """One head's run dir and what the pool keeps for it outside the module."""

    cfg: DictConfig
    exp_id: str
    directory: Path
    clock: DeviceClock
    logger: Any = None
    lock: RunDirLock | None = None
    status: str = "training"  # -> completed | failed | pruned
    error: str | None = None
    start_step: int = 0
    last_metrics: dict[str, float] = field(default_factory=dict)
    stopped_at: int | None = None


class PoolModule(L.LightningModule):
    """K ObjectCentricModules (heads) trained on one stream; see the module docstring.

    Args:
        heads: the heads' modules, built on one datamodule; their encoders are one object.
        runs: each head's run dir and bookkeeping, in the same order.
        pool: {"id", "size"} recorded in every head's results.json.
    """

    def __init__(
        self,
        heads: list[ObjectCentricModule],
        runs: list[HeadRun],
        pool: dict[str, Any],
        resolved: numerics.Numerics,
    ) -> None:
        super().__init__()
        self.heads = nn.ModuleList(heads)
        self.runs = runs
        self.pool = pool
        self.resolved = resolved  # the pool's numerics: every head trains and validates at them
        self.automatic_optimization = False
        self.encoder = SharedEncoder(heads[0].model.encoder)
        self._clock = nn.Parameter(torch.zeros(()))  # the clock optimizer's: never has a gradient
        # each head's trainable parameters, in its solo configure_optimizers order
        self._trainable = [[p for p in head.parameters() if p.requires_grad] for head in heads]
        self.head_optimizers: list[tuple[torch.optim.Optimizer, Any]] = []
        self._restored: list[dict[str, Any]] | None = None
        self.session_start = 0

    def check_finite(self) -> None:
        """VerifiedCheckpoint asks this before keeping a checkpoint. A head's loss is checked at its
        own step (training_step: a NaN stops that head alone), so nothing is left to check here."""

    def configure_optimizers(self) -> torch.optim.Optimizer:
        self.head_optimizers = [
            head.optim.build(params, head.total_batch_size)
            for head, params in zip(self.heads, self._trainable, strict=True)
        ]
        if self._restored is not None:  # a resume: on_load_checkpoint ran before this
            for (optimizer, schedule), state in zip(self.head_optimizers, self._restored, strict=True):
                optimizer.load_state_dict(state["optimizer"])
                schedule.load_state_dict(state["schedule"])
        return torch.optim.SGD([self._clock], lr=0.0)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # the heads share the data config, so head 0's device-side batch transform is every head's
        return self.heads[0].on_after_batch_transfer(batch, dataloader_idx)

    def on_train_start(self) -> None:
        self.session_start = self.global_step  # a resumed session's cost counts from its checkpoint

    def active(self) -> list[int]:
        return [k for k, run in enumerate(self.runs) if run.status == "training"]

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        for k in self.active():
            try:
                self._head_step(k, batch)
            except Exception as error:  # this head's: the others train on
                self.stop_head(k, "failed", f"{type(error).__name__}: {error}")
        self.encoder.forget()
        self.optimizers().step()  # the clock: global_step + 1
        if not self.active():
            self.trainer.should_stop = True

    def _head_step(self, k: int, batch: dict[str, Tensor]) -> None:
        head, run = self.heads[k], self.runs[k]
        optimizer, schedule = self.head_optimizers[k]
        values = head.compute_losses(head.model(**model_inputs(batch), generator=head.train_generator()))
        if not torch.isfinite(values["loss"]):
            raise NonFiniteLossError(
                f"training loss is {values['loss'].item()} at step {self.global_step}; lower "
                "optim.base_lr, or clip gradients (trainer.gradient_clip_val)"
            )
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(values["loss"])
        clip = run.cfg.trainer.get("gradient_clip_val")
        if clip:  # as Lightning clips a solo run: the norm over the optimizer's parameters
            torch.nn.utils.clip_grad_norm_(self._trainable[k], clip)
        optimizer.step()
        schedule.step()
        if run.logger and (self.global_step + 1) % run.cfg.trainer.log_every_n_steps == 0:
            values = {f"train/{n}": float(v.detach()) for n, v in values.items()}
            run.logger.log_metrics(values, step=self.global_step)

    def stop_head(self, k: int, status: str, error: str | None = None) -> None:
        """End head k here (failed or pruned): its results.json is written at once."""
        run = self.runs[k]
        run.status, run.error, run.stopped_at = status, error, self.global_step
        log.info(f"pool {self.pool['id']}: head {k} ({run.directory}) {status} at step {self.global_step}")
        if status == "failed":
            write_head_results(self, k)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        for k in self._validated():
            try:
                self.heads[k].validation_step(batch, batch_idx)
            except Exception as error:
                self.stop_head(k, "failed", f"{type(error).__name__}: {error}")
        self.encoder.forget()

    def _validated(self) -> list[int]:
        """Heads a validation scores: the training ones (and the completed ones in the last)."""
        return [k for k, run in enumerate(self.runs) if run.status in ("training", "completed")]

    def on_validation_epoch_end(self) -> None:
        fitting = self.trainer.state.fn == "fit" and not self.trainer.sanity_checking
        for k in self._validated():
            run, results = self.runs[k], self.heads[k].validation_results()
            if self.trainer.sanity_checking:
                continue
            run.last_metrics = results
            if run.logger:
                run.logger.log_metrics(results, step=self.global_step)
            if not fitting:
                continue
            objective = list(run.cfg.objective)
            if all(key in results for key in objective):
                append_report(run.directory, self.global_step, [results[key] for key in objective])
            if stop_requested(run.directory):  # the sweep pruned this head
                self.stop_head(k, "pruned")
        if fitting and not self.active():
            self.trainer.should_stop = True

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        heads = []
        for k, (head, run, (optimizer, schedule)) in enumerate(
            zip(self.heads, self.runs, self.head_optimizers, strict=True)
        ):
            leave_out_frozen(checkpoint["state_dict"], head.model, f"heads.{k}.model.")  # as a solo run
            heads.append(
                {
                    "slotsweep": head.checkpoint_section(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "status": run.status,
                    "error": run.error,
                    "stopped_at": run.stopped_at,
                    "start_step": run.start_step,
                }
            )
        checkpoint["pool"] = {**self.pool, "heads": heads}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        heads = checkpoint["pool"]["heads"]
        if len(heads) != len(self.heads):
            raise SlotsweepError(
                f"pool checkpoint has {len(heads)} heads, this pool {len(self.heads)}: a pool resumes "
                "with the configs it started with"
            )
        for k, (head, run, state) in enumerate(zip(self.heads, self.runs, heads, strict=True)):
            name = f"pool checkpoint {self.trainer.ckpt_path}"
            head.restore_frozen(checkpoint["state_dict"], state["slotsweep"], f"heads.{k}.model.", name)
            head.load_section(state["slotsweep"])
            run.status, run.error, run.stopped_at = state["status"], state["error"], state["stopped_at"]
            run.start_step = state["start_step"]
        self._restored = heads

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
            "global_step": self.global_step,
            "pytorch-lightning_version": L.__version__,
            "pool": {**self.pool, "head": k},
        }


def write_head_results(pool: PoolModule, k: int) -> dict[str, Any]:
    """Head k's checkpoints/last.ckpt and results.json, as a solo run of its config writes them."""
    run, trainer = pool.runs[k], pool.trainer
    if run.status != "failed":  # a failed head's weights gave a NaN or an error: nothing to resume
        checkpoint = pool.head_checkpoint(k)
        SafeCheckpointIO(run.cfg.allow_pickle).save_checkpoint(checkpoint, run.directory / LAST_CHECKPOINT)
    on_gpu = isinstance(trainer.accelerator, CUDAAccelerator)
    step = run.stopped_at if run.stopped_at is not None else trainer.global_step
    results = {
        "exp_id": run.exp_id,
        "exp_name": run.cfg.exp_name,
        "seed": run.cfg.seed,
        "run_dir": str(run.directory),
        "max_steps": run.cfg.trainer.max_steps,
        "config": OmegaConf.to_container(run.cfg, resolve=True),
        "protocol": _protocol(run.cfg, trainer.datamodule, pool.heads[k], pool.resolved).as_dict(),
        "precision": pool.resolved.label,
        "status": run.status,
        "error": run.error,
        "step": step,
        "wall_time_s": pool.heads[k].elapsed_s(),
        "metrics": {} if run.status == "failed" else dict(run.last_metrics),
        "best_metrics": pool.heads[k].best_metrics,
        # the pool's device time, shared equally: what each head cost the cluster
        **_shared_cost(run.clock.record(1 if on_gpu else 0, pool.session_start, step), len(pool.heads)),
        "pool": {**pool.pool, "head": k, "start_step": run.start_step},
    }
    experiment.write_results(run.directory, results)
    if run.logger:
        run.logger.finalize("failed" if run.status == "failed" else "success")  # csv: writes its rows
    tracking.finish_wandb(run.logger, exit_code=0 if run.status != "failed" else 1)
    return results


def _shared_cost(cost: dict[str, Any], size: int) -> dict[str, Any]:
    """A head's share of the pool's device time (its clock ran for the whole pool)."""
    return {**cost, "device_seconds": cost["device_seconds"] / size}


def check_stream(cfgs: list[DictConfig]) -> None:
    """Raise (one line) unless the configs can be the heads of one pool."""
    if not cfgs:
        raise SlotsweepError("a pool needs at least one config")
    first = stream_keys(cfgs[0])
    for k, cfg in enumerate(cfgs[1:], 1):
        other = stream_keys(cfg)
        differing = sorted(key for key in first if first[key] != other[key])
        if differing:
            raise SlotsweepError(
                f"pool head {k} differs from head 0 in {differing}: a pool's heads share one input "
                "stream (one seed, data, encoder and trainer); hydra.sweeper.pool_size=1 runs them apart"
            )
    if cfgs[0].trainer.get("precision") in ("16-mixed", "16", 16):
        raise SlotsweepError(
            f"trainer.precision={cfgs[0].trainer.precision}: a pool trains in 32-true or bf16-mixed "
            "(fp16 would need a loss scaler per head)"
        )


def build_pool(cfgs: list[DictConfig]) -> tuple[L.LightningDataModule, list[ObjectCentricModule]]:
    """The shared datamodule and one module per checked config (experiment.locate), their encoders
    one object. Each head is built after seeding with its seed, as task.run builds a solo run's
    module, so its initial weights are the solo run's; the global generator is seeded again last
    (the data order)."""
    check_stream(cfgs)
    datamodule = build_datamodule(cfgs[0].dataset)
    datamodule.setup("fit")
    heads = []
    for cfg in cfgs:
        L.seed_everything(cfg.seed, workers=True)
        heads.append(build_module(cfg, datamodule))
    for head in heads[1:]:  # one encoder (same config and weights): K copies would only cost memory
        head.model.encoder = heads[0].model.encoder
    L.seed_everything(cfgs[0].seed, workers=True)
    return datamodule, heads


def run_pool(cfgs: list[DictConfig], pool_dir: Path | None = None) -> list[float | tuple[float, ...]]:
    """Train the configs as the heads of one pool; return each one's objective(s), in order.

    Args:
        cfgs: composed training configs with equal `stream_keys` (same seed, data, encoder, trainer).
        pool_dir: where the pool's own checkpoints live; default <paths.runs_dir>/pools/<pool id>.
    """
    check_stream(cfgs)
    located = [experiment.locate(cfg) for cfg in cfgs]
    directory = (
        Path(pool_dir) if pool_dir is not None else Path(cfgs[0].paths.runs_dir) / "pools" / pool_id(cfgs)
    )
    apply_cpu_share()
    resolved = located[0].resolved  # trainer.precision=auto, as a solo run resolves it
    numerics.apply(resolved)
    _check_trainer(cfgs[0], resolved)
    datamodule, heads = build_pool(cfgs)  # bad input fails here, before anything is written
    runs: list[HeadRun] = []
    try:
        for cfg, place in zip(cfgs, located, strict=True):
            exp_id, run_dir = place.exp_id, place.directory
            run = HeadRun(cfg, exp_id, run_dir, DeviceClock(experiment.read_results(run_dir)))
            run.lock = claim_run_dir(run_dir, False, 0)
            runs.append(run)
            experiment.write_identity(place, cfg.seed)
            clear_stop_request(run_dir)
            (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
            run.logger = instantiate(cfg.logger)(**tracking.logger_kwargs(cfg, exp_id, run_dir))
        pool = PoolModule(heads, runs, {"id": directory.name, "size": len(cfgs)}, resolved)
        trainer = _pool_trainer(cfgs[0], directory, resolved)
        use_epoch_stream(datamodule, trainer, cfgs[0].seed)  # the batches of a solo run of the seed
        resume = resume_checkpoint(directory / "checkpoints")
        if resume is not None:
            log.info(f"pool {directory.name}: resuming from {resume}")
        trainer.fit(pool, datamodule=datamodule, ckpt_path=resume)
        trainer.checkpoint_callback.save_final(trainer)
        finishing = [k for k, run in enumerate(runs) if run.status == "training"]
        for k in finishing:
            runs[k].status = "completed"
        if finishing:
            trainer.validate(pool, datamodule=datamodule, verbose=False)
        for k, run in enumerate(runs):
            if run.status != "failed":  # a failed head wrote its results when it failed
                write_head_results(pool, k)
    finally:
        for run in runs:
            if run.lock is not None:
                run.lock.release()
    return [_objective(run.cfg, run.last_metrics) if run.status != "failed" else float("nan") for run in runs]


def _pool_trainer(cfg: DictConfig, directory: Path, resolved: numerics.Numerics) -> L.Trainer:
    """The Trainer of a pool: a solo run's (build_trainer) without the per-run callbacks, which the
    pool does per head, and without clipping, which it does per head too."""
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
        callbacks=[checkpoints, ExactResume(), *progress],  # training draws as in a solo run
        enable_progress_bar=any(isinstance(c, L.pytorch.callbacks.ProgressBar) for c in progress),
        logger=False,
        gradient_clip_val=None,
        plugins=[SafeCheckpointIO(cfg.allow_pickle)],
    )

"""The task function: config -> built parts -> Lightning fit -> results.json -> objective(s).

`run(cfg)` is what `src/train.py`, the tests and the sweepers call. It owns the run directory:
a finished run is skipped, an unfinished one resumes from its last checkpoint, and every outcome
(completed or failed) is written to results.json.
"""

import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.accelerators import CUDAAccelerator
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf

from slotsweep import numerics
from slotsweep.build import build_datamodule, build_metrics, build_model, build_optim, build_parts
from slotsweep.cache import (
    FeatureStore,
    attach_feature_cache,
    feature_cache_sources,
    storage_dtype,
    stored_arrays,
)
from slotsweep.config import check_config
from slotsweep.contracts import DataModule
from slotsweep.errors import SlotsweepError
from slotsweep.evaluation.protocol import EvalProtocol, protocol_of
from slotsweep.runs import experiment
from slotsweep.runs.checkpoint_files import SafeCheckpointIO, resume_checkpoint
from slotsweep.runs.lock import claim_run_dir
from slotsweep.runs.trial_files import clear_stop_request
from slotsweep.training import tracking
from slotsweep.training.callbacks import VerifiedCheckpoint
from slotsweep.training.cost import DeviceClock
from slotsweep.training.exact_resume import ExactResume, StopAtStep, use_epoch_stream
from slotsweep.training.job_cores import apply_cpu_share
from slotsweep.training.module import ObjectCentricModule
from slotsweep.training.pictures import ValPictures
from slotsweep.training.progress import progress_callbacks
from slotsweep.training.quiet import quiet_lightning
from slotsweep.training.report import mask_report, show_report, write_report
from slotsweep.training.steps import STEP_KEY, StepAxis
from slotsweep.training.trial_reporter import TrialReporter

__all__ = ["build_cache", "build_module", "build_task", "build_trainer", "run"]

log = logging.getLogger(__name__)

# Lightning warnings that say nothing to a user here: the frozen encoder is in eval mode on purpose,
# and the pytree deprecation is Lightning's own call into torch.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def build_task(
    cfg: DictConfig, stage: str = "fit", datamodule: DataModule | None = None, ckpt: Path | None = None
) -> tuple[DataModule, ObjectCentricModule]:
    """Datamodule (`datamodule`, else built here) and LightningModule of a checked config
    (config.check_config: experiment.locate runs it); each part built once. With `ckpt`, the model
    holds its weights (eval: cfg from build.checkpoint_config).

    The datamodule is set up for `stage` before the model is built, so missing data fails in
    milliseconds rather than after a ViT has loaded.
    """
    datamodule = build_datamodule(cfg.dataset) if datamodule is None else datamodule
    if cfg.visualize is not None and "rgb" not in datamodule.val_batch_keys:
        raise SlotsweepError(
            f'visualize: the report draws the validation batches\' "rgb" frames, and '
            f"{type(datamodule).__name__}'s are {list(datamodule.val_batch_keys)} "
            "(contracts.DataModule.val_batch_keys); set visualize=null"
        )
    datamodule.setup(stage)
    return datamodule, build_module(cfg, datamodule, stage, ckpt)


def build_module(
    cfg: DictConfig, datamodule: DataModule, stage: str = "fit", ckpt: Path | None = None
) -> ObjectCentricModule:
    """The LightningModule of a config over a set-up datamodule (a pool builds one per head). Every
    refusal (a part that breaks its contract, a loss that cannot train on the clips, the optimizer's
    and the metrics' arguments) comes before the encoder is built."""
    training = stage == "fit"
    parts = build_parts(cfg, datamodule.train_clip_frames if training else None)
    optim = build_optim(cfg.optim)
    conventions = (datamodule.ignore_background, datamodule.ignore_overlaps)
    metrics = build_metrics(cfg.metrics, *conventions)
    sources = feature_cache_sources(datamodule, stage) if cfg.cache else None  # before the ViT
    model, losses = build_model(cfg, parts, ckpt=ckpt)
    if sources is not None:  # after loading: the cache is keyed by the encoder weights in use
        _attach_cache(cfg, datamodule, sources, model, losses)
    return ObjectCentricModule(
        model=model,
        losses=losses,
        optim=optim,
        total_batch_size=experiment.total_batch_size(cfg),
        ignore_background=datamodule.ignore_background,
        ignore_overlaps=datamodule.ignore_overlaps,
        eval_seed=cfg.eval_seed,
        run_config=OmegaConf.to_container(cfg, resolve=True),
        eval_jandf=cfg.eval_jandf,
        train_seed=cfg.seed,
        metrics=metrics,
    )


def _attach_cache(
    cfg: DictConfig, datamodule: Any, sources: dict[str, Any], model: Any, losses: dict[str, Any]
) -> dict[str, FeatureStore]:
    """Find or build the cache of every split in `sources`, in the format `cache` names, holding
    what `losses` read; the datamodule reads from it from now on."""
    return attach_feature_cache(
        datamodule,
        sources,
        model.encoder,
        Path(cfg.paths.features_dir),
        OmegaConf.to_container(cfg.encoder, resolve=True),
        _cache_device(cfg),
        dtype=storage_dtype(cfg.cache),
        arrays=stored_arrays(losses.values()),
    )


def build_cache(cfg: DictConfig) -> dict[str, FeatureStore]:
    """src/cache.py: build (or find) the train and val caches of a composed config, once, before a
    sweep starts its trials; nothing else is written (no run dir)."""
    if not cfg.cache:
        raise SlotsweepError(
            "cache=false: src/cache.py builds the cache a run with cache=true (float16) or cache=int8 "
            "reads; pass the one your sweep uses"
        )
    check_config(cfg)
    datamodule = build_datamodule(cfg.dataset)
    datamodule.setup("fit")
    parts = build_parts(cfg, datamodule.train_clip_frames)
    sources = feature_cache_sources(datamodule, "fit")
    model, losses = build_model(cfg, parts)
    return _attach_cache(cfg, datamodule, sources, model, losses)


def _cache_device(cfg: DictConfig) -> str:
    """Where to build a feature cache: the GPU when training may use one (same features, faster)."""
    use_gpu = cfg.trainer.accelerator in ("auto", "gpu", "cuda")
    return "cuda" if use_gpu and torch.cuda.is_available() else "cpu"


def _check_trainer(cfg: DictConfig, resolved: numerics.Numerics) -> None:
    """Lightning checks its arguments when a Trainer is made: a throwaway one, before any dir exists
    (quiet: its device lines and hints are printed again by the real one)."""
    lightning_log = logging.getLogger("lightning.pytorch")
    level = lightning_log.level
    lightning_log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            instantiate(cfg.trainer)(
                precision=resolved.precision,
                logger=False,
                enable_checkpointing=False,
                enable_model_summary=False,
            )
    except TypeError as e:  # an argument Trainer does not take (e.g. +trainer.max_stepz=3)
        raise SlotsweepError(f"trainer: {e}; see conf/trainer/default.yaml for its arguments") from e
    finally:
        lightning_log.setLevel(level)


def build_trainer(
    cfg: DictConfig,
    exp_id: str,
    directory: Path,
    resolved: numerics.Numerics,
    clock: DeviceClock | None = None,
) -> L.Trainer:
    """The run's Trainer at the resolved numerics; with `clock`, each validation report carries the
    run's cost so far."""
    checkpoints = VerifiedCheckpoint(
        dirpath=directory / "checkpoints",
        filename="step{step:07d}",
        auto_insert_metric_name=False,
        every_n_train_steps=cfg.checkpoint_every_n_steps,
    )
    # Under SLURM, submitit owns requeueing; Lightning's own requeue handler would fight it.
    plugins = [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []
    logger = instantiate(cfg.logger)(**tracking.logger_kwargs(cfg, exp_id, directory))
    cost = None if clock is None else (lambda trainer: clock.seconds(_n_gpus(trainer)))
    reporter = TrialReporter(directory, list(cfg.objective), cost)  # a sweep's intermediate values, pruning
    # one step number in all outputs; exact resumes; a pause
    callbacks = [checkpoints, reporter, StepAxis(log_lr=bool(logger)), ExactResume()]
    if _pause_step(cfg) is not None:
        callbacks.append(StopAtStep(_pause_step(cfg)))
    callbacks.append(ValPictures(**cfg.val_pictures, directory=directory / "logs" / "val_pictures"))
    progress = progress_callbacks(cfg.trainer.enable_progress_bar, cfg.trainer.log_every_n_steps)
    return instantiate(cfg.trainer)(
        precision=resolved.precision,  # trainer.precision=auto resolved (slotsweep.numerics)
        default_root_dir=directory,
        callbacks=callbacks + progress,
        enable_progress_bar=any(isinstance(c, ProgressBar) for c in progress),  # else plain lines
        logger=logger,
        plugins=[*plugins, SafeCheckpointIO(cfg.allow_pickle)],  # atomic saves; resume without unpickling
    )


def run(
    cfg: DictConfig, job: bool = False, located: experiment.Located | None = None
) -> float | tuple[float, ...]:
    """Train (or resume, or skip if finished) one seed of one experiment; return the objective(s).

    `job`: this process was started for this run (src/train.py, a sweep's job), so its cost counts
    from the process's start (slotsweep.training.cost). `located`: experiment.locate(cfg) when the
    caller ran it (src/train.py, before importing torch); else it runs here. Either way the config
    is checked and its identity computed once.
    """
    quiet_lightning()  # each Lightning line once, no adverts, no srun hint outside SLURM
    located = experiment.locate(cfg) if located is None else located
    directory, resolved = located.directory, located.resolved
    pause = _pause_step(cfg)  # checked first: bad input fails even for a finished run
    previous = experiment.read_results(directory)
    if previous is not None and previous["status"] == "completed" and not cfg.force:
        log.info(f"{directory} already completed (force=true re-runs it); returning its results")
        if cfg.visualize is not None and rank_zero_only.rank == 0:
            _show_stored_report(cfg, directory, previous)
        return _objective(cfg, previous["metrics"])
    if previous is not None and previous.get("pool") and previous["status"] == "pruned" and not cfg.force:
        # its last.ckpt holds the head's weights, optimizer and schedule (what eval and infer read),
        # not the Trainer's loop state a solo resume would need: training on would restart the steps
        raise SlotsweepError(
            f"{directory} was trained as a head of trial pool {previous['pool']['id']} and pruned at "
            f"step {previous['step']}; a pool head cannot be trained on solo yet: force=true trains "
            "this config from the start (the pruned run is kept beside it)"
        )
    if previous is not None and previous["status"] == "pruned" and not cfg.force:
        # Deliberately not a finished run: launched again (outside the sweep that pruned it), it
        # resumes from its checkpoint and trains on to trainer.max_steps.
        log.info(f"{directory} was pruned by a sweep at step {previous['step']}; training it on")
    if previous is not None and previous["status"] == "paused" and not cfg.force:
        if pause is not None and previous["step"] >= pause:  # a promotion's job started twice
            log.info(f"{directory} is paused at step {previous['step']} already; returning its results")
            return _objective(cfg, previous["metrics"])
        log.info(f"{directory} was paused at step {previous['step']}; training it on to {pause or 'the end'}")

    apply_cpu_share()  # in a local sweep job: its share of the cores, before any thread
    L.seed_everything(cfg.seed, workers=True)
    numerics.apply(resolved)
    _check_trainer(cfg, resolved)
    datamodule, module = build_task(cfg)  # bad input fails here, before anything is written
    # again: the data order then depends on the seed alone, not on what building this model drew
    L.seed_everything(cfg.seed, workers=True)
    if cfg.compile:
        module.model.compile_parts()  # the frozen encoder and the trainable parts, one graph each
    set_aside = cfg.force and directory.is_dir() and any(directory.iterdir())  # never destroy a run
    lock = claim_run_dir(directory, set_aside, rank_zero_only.rank)  # a twin job refuses here
    try:
        clock = DeviceClock(previous if not cfg.force else None, job)  # a resumed run's cost goes on
        segments = list(previous.get("segments", [])) if previous is not None and not cfg.force else []
        started = "promoted" if previous is not None and previous["status"] == "paused" else "requeued"
        return _train(cfg, located, datamodule, module, clock, _Segments(segments, started))
    finally:
        if lock is not None:
            lock.release()


def _train(
    cfg: DictConfig,
    located: experiment.Located,
    datamodule: DataModule,
    module: ObjectCentricModule,
    clock: DeviceClock,
    segments: "_Segments",
) -> float | tuple[float, ...]:
    """Fit, validate and write results.json in a claimed run dir (completed, paused, pruned, failed
    or interrupted). Under DDP every rank trains; only rank 0 writes the run dir's files."""
    exp_id, directory, resolved = located.exp_id, located.directory, located.resolved
    writer = rank_zero_only.rank == 0
    if writer:
        experiment.write_identity(located, cfg.seed)
        clear_stop_request(directory)  # left by a job that was cancelled before it could stop
        (directory / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    results: dict[str, Any] = {
        "exp_id": exp_id,
        "exp_name": cfg.exp_name,
        "seed": cfg.seed,
        "run_dir": str(directory),
        "max_steps": cfg.trainer.max_steps,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "precision": resolved.label,  # what trainer.precision resolved to here (slotsweep.numerics)
        "protocol": _protocol(cfg, datamodule, module, resolved).as_dict(),  # how `metrics` were measured
    }
    start = time.monotonic()
    trainer = None
    try:
        trainer = build_trainer(cfg, exp_id, directory, resolved, clock)
        # data draws that a resume repeats exactly, from where the run entered the seed's stream
        use_epoch_stream(datamodule, trainer, cfg.seed, cfg.stream_start_step)
        tracking.define_best_summaries(trainer.logger)
        tracking.stamp_protocol(trainer.logger, results["protocol"])
        resume = resume_checkpoint(directory / "checkpoints")  # last.ckpt, or the newest readable
        if resume is not None:
            log.info(f"Resuming from {resume}")
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
        trainer.checkpoint_callback.save_final(trainer)  # for a later resume, eval, aggregation
        reporter = _reporter(trainer)
        paused = _paused(trainer)
        if reporter.stopped:  # pruned by the sweep: the last validation is the result
            clear_stop_request(directory)
            metrics = reporter.last_metrics
            status = "pruned"
        elif paused:  # stopped at pause_at_step, which Lightning validated: that is the result
            metrics, status = reporter.last_metrics, "paused"
        elif reporter.last_step == trainer.global_step:  # the last step validated: same weights
            metrics, status = reporter.last_metrics, "completed"
        else:
            validation = trainer.validate(module, datamodule=datamodule, verbose=False)
            metrics = validation[0] if validation else {}  # a dataset without masks has no metrics
            metrics.pop(STEP_KEY, None)  # the logged x-axis, not a metric
            status = "completed"
        results.update(
            status=status,
            error=None,
            step=trainer.global_step,
            wall_time_s=module.elapsed_s(),
            metrics={k: float(v) for k, v in metrics.items()},
            best_metrics=module.best_metrics,
            **_cost(clock, trainer),
            segments=segments.closed(trainer, status),
        )
        shows_report = writer and status == "completed" and cfg.visualize is not None
        if shows_report:  # the demo's table of model vs baselines, and pictures
            report = mask_report(module, datamodule, directory, **cfg.visualize)
            results["mask_report"] = report
            write_report(report, directory)
            pictures = sorted((directory / "masks").glob("clip*.*"))
            tracking.log_media(trainer.logger, {f"masks/{p.name}": p for p in pictures}, trainer.global_step)
    except BaseException as error:
        results.update(  # a signal (preemption, Ctrl-C) interrupts; the requeued job resumes
            status="failed" if isinstance(error, Exception) else "interrupted",
            error=f"{type(error).__name__}: {error}",
            step=trainer.global_step if trainer is not None else 0,
            wall_time_s=time.monotonic() - start,
            metrics={},
            best_metrics=module.best_metrics,
            **_cost(clock, trainer),
            segments=segments.closed(trainer, "failed" if isinstance(error, Exception) else "interrupted"),
        )
        if writer:
            experiment.write_results(directory, results)
        if trainer is not None:
            tracking.finish_wandb(trainer.logger, exit_code=1)
        raise
    tracking.finish_wandb(trainer.logger, exit_code=0)
    if writer:
        experiment.write_results(directory, results)
        log.info(f"results: {directory / experiment.RESULTS_FILE}")
    if shows_report:
        print(show_report(report, directory, cfg.exp_name))
    return _objective(cfg, results["metrics"])


def _show_stored_report(cfg: DictConfig, directory: Path, results: dict[str, Any]) -> None:
    """A finished run shown again (`make demo` twice) prints the table it printed at its end."""
    report = results.get("mask_report")
    if report is None:  # finished without `visualize`: the report needs the model run again
        log.info(f"{directory} has no mask report (it ran without visualize); force=true re-runs it with one")
        return
    print(show_report(report, directory, cfg.exp_name))


def _reporter(trainer: L.Trainer) -> TrialReporter:
    return next(c for c in trainer.callbacks if isinstance(c, TrialReporter))


def _pause_step(cfg: DictConfig) -> int | None:
    """pause_at_step when it stops the run before trainer.max_steps, else None (train to the end)."""
    pause = cfg.get("pause_at_step")
    if pause is None or pause >= cfg.trainer.max_steps:
        return None
    if pause < 1:
        raise SlotsweepError(f"pause_at_step={pause} must be >= 1, or null to train to trainer.max_steps")
    return int(pause)


def _paused(trainer: L.Trainer) -> bool:
    return any(isinstance(c, StopAtStep) and c.stopped for c in trainer.callbacks)


class _Segments:
    """results.json's `segments`: the run's sessions of training so far, one more per session.

    Each is {from_step, to_step, started: new|promoted|requeued, ended: the session's status}:
    `promoted` resumed a paused run, `requeued` any other resume (preemption, a failure, a kill).
    """

    def __init__(self, earlier: list[dict[str, Any]], resumed_as: str) -> None:
        self.earlier, self.resumed_as = earlier, resumed_as

    def closed(self, trainer: L.Trainer | None, ended: str) -> list[dict[str, Any]]:
        if trainer is None:  # failed before training: no segment
            return self.earlier
        start = _reporter(trainer).start_step
        started = "new" if start == 0 else self.resumed_as
        segment = {"from_step": start, "to_step": trainer.global_step, "started": started, "ended": ended}
        return [*self.earlier, segment]


def _cost(clock: DeviceClock, trainer: L.Trainer | None) -> dict[str, Any]:
    """results.json's device_kind, device_seconds and steps (slotsweep.training.cost)."""
    if trainer is None:  # failed while building the trainer: nothing trained
        return clock.record(n_gpus=0, first_step=0, last_step=0)
    return clock.record(_n_gpus(trainer), _reporter(trainer).start_step, trainer.global_step)


def _n_gpus(trainer: L.Trainer) -> int:
    """GPUs of the run (0: on CPU)."""
    on_gpu = isinstance(trainer.accelerator, CUDAAccelerator)
    return trainer.num_devices * trainer.num_nodes if on_gpu else 0


def _protocol(
    cfg: DictConfig, datamodule: DataModule, module: ObjectCentricModule, resolved: numerics.Numerics
) -> EvalProtocol:
    """The protocol of the run's validations (and so of results.json's metrics): they run at the
    training precision."""
    n_slots = module.eval_n_slots or module.model.grouper.n_slots
    limit = cfg.trainer.get("limit_val_batches")
    return protocol_of(datamodule, n_slots, module.eval_masks, limit, resolved.label)


def _objective(cfg: DictConfig, metrics: dict[str, float]) -> float | tuple[float, ...]:
    if not metrics:
        log.warning("no validation metrics (a dataset without masks): the objective is NaN")
        return float("nan") if len(cfg.objective) == 1 else tuple(float("nan") for _ in cfg.objective)
    missing = [key for key in cfg.objective if key not in metrics]
    if missing:
        raise SlotsweepError(
            f"objective={list(cfg.objective)}: {missing} not among the metrics {sorted(metrics)}"
        )
    values = tuple(float(metrics[key]) for key in cfg.objective)
    if any(math.isnan(v) for v in values):
        log.warning(f"objective {list(cfg.objective)} is NaN: no validation sample had objects to score")
    return values[0] if len(values) == 1 else values

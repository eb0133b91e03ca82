"""The LightningModule: built parts in, weighted losses and FG-ARI/mBO out."""

import math
import time
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import SumMetric

from slotsweep.contracts import EncoderOutput, Loss, Metric, ModelOutput, SlotRequest
from slotsweep.data.video_transforms import frames_to_video
from slotsweep.errors import SlotsweepError
from slotsweep.evaluation.jandf import JandF
from slotsweep.evaluation.masks import hard_masks, resize_patch_masks
from slotsweep.evaluation.metrics import make_metrics
from slotsweep.losses import channel_layout
from slotsweep.metric_names import METRICS, val_key
from slotsweep.models.object_centric import ObjectCentricModel
from slotsweep.models.weights import (
    FROZEN_RECORD,
    frozen_record,
    frozen_source,
    leave_out_frozen,
    put_back_frozen,
)
from slotsweep.optim import AdamWarmupDecay

__all__ = [
    "NonFiniteLossError",
    "ObjectCentricModule",
    "first_frame_conditions",
    "model_inputs",
]


def first_frame_conditions(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The batch's first-frame annotations for a conditioned slot initializer: "masks" (B, K, H, W)
    where the batch has masks (B, T, K, H, W); unconditioned initializers ignore them."""
    return {"masks": batch["masks"][:, 0]} if "masks" in batch else {}


def model_inputs(batch: dict[str, Tensor]) -> dict[str, Tensor | EncoderOutput | dict[str, Tensor]]:
    """The model's input from a batch: the frozen encoder's cached outputs when the loader reads a
    feature cache (slotsweep.cache), else the video; and the first-frame conditions."""
    inputs: dict[str, Tensor | EncoderOutput | dict[str, Tensor]] = {
        "conditions": first_frame_conditions(batch)
    }
    if "features" in batch:  # stored as float16; the model and the losses work in float32
        # no keys where no loss reads them: the cache stores only what the losses read
        keys = batch["keys"].float() if "keys" in batch else None
        inputs["features"] = EncoderOutput(batch["features"].float(), keys)
    else:
        inputs["video"] = batch["video"]
    return inputs


class NonFiniteLossError(SlotsweepError):
    """The loss became NaN/inf: training stops, the last checkpoint with a finite loss is kept
    (VerifiedCheckpoint). A user error: the fix is in the config (learning rate, clipping)."""


class ObjectCentricModule(L.LightningModule):
    """Trains an ObjectCentricModel with a weighted sum of losses; validates with FG-ARI and mBO.

    Args:
        model: the assembled model; its decoder output holds the losses' channels in dict order.
        losses: {name: contracts.Loss}; they read the decoder channels of losses.channel_layout.
        optim: builds Adam and its schedule.
        total_batch_size: batch over all devices (for the lr scaling rule).
        ignore_background, ignore_overlaps: the dataset's mask conventions, for the metrics.
        eval_seed: seed of the slot initialisation at validation, so metrics are repeatable.
        eval_n_slots: number of slots at validation; None = the grouper's (training) count.
        run_config: the resolved training config, stored in every checkpoint so that eval and
            infer rebuild the model from the checkpoint alone (build.checkpoint_config); its weights
            sources rebuild the frozen encoder that checkpoints leave out (models.weights).
        eval_masks: which masks validation scores: "decoder" (the reference's) or "grouping"
            (slot attention's), see slotsweep.evaluation.protocol.MASK_SOURCES.
        eval_jandf: also score J&F (video datasets; costs boundary extraction, slotsweep.evaluation.jandf).
        train_seed: seed of the training slot draws' own generator (the run's seed). Their own, not
            torch's global one: the global one then draws only the data order, which so depends on
            the seed alone, not on how many numbers building this model drew; trials of a seed see
            the same batches, and heads of a pool (training/pool.py) train as their solo runs.
        metrics: {name: contracts.Metric} validated beside the registry's (the config's `metrics`),
            on the same masks; logged as val/<name>, best by the metric's own higher_is_better.
    """

    def __init__(
        self,
        model: ObjectCentricModel,
        losses: dict[str, Loss],
        optim: AdamWarmupDecay,
        total_batch_size: int,
        ignore_background: bool,
        ignore_overlaps: bool,
        eval_seed: int = 0,
        eval_n_slots: int | None = None,
        run_config: dict[str, Any] | None = None,
        eval_masks: str = "decoder",
        eval_jandf: bool = False,
        train_seed: int = 0,
        metrics: dict[str, Metric] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.losses = nn.ModuleDict(losses)
        self.loss_channels = channel_layout(losses, model.encoder)
        self.optim = optim
        self.total_batch_size = total_batch_size
        self.eval_seed = eval_seed
        self.eval_n_slots = eval_n_slots
        self.run_config = run_config
        self.eval_masks = eval_masks
        self.metrics = make_metrics(ignore_background, ignore_overlaps)
        self.extra_metrics = nn.ModuleDict(metrics or {})
        # val/<loss> = its sum over the validation clips / their count; NaN stays NaN. (Not
        # MeanMetric: its nan_strategy="disable" drops the weights, torchmetrics 1.9.)
        self.val_loss_sums = nn.ModuleDict(
            {name: SumMetric(nan_strategy="disable") for name in [*losses, "loss"]}
        )
        self.val_clips = SumMetric()
        self.jandf = JandF(ignore_background, ignore_overlaps) if eval_jandf else None
        self.best_metrics: dict[str, float] = {}
        self.train_seed = train_seed
        self._train_generator: torch.Generator | None = None  # made on the module's device, lazily
        self._train_generator_state: Tensor | None = None  # from a checkpoint, until it is made
        self.wall_time_s = 0.0  # accumulated over resumed sessions (stored in checkpoints)
        # (first non-finite step or -1, the losses at that step), on the loss's device (_watch_finite)
        self._first_nonfinite: tuple[Tensor, Tensor] | None = None
        self._loss_names: list[str] = []
        self._session_start = time.monotonic()

    def compute_losses(self, out: ModelOutput) -> dict[str, Tensor]:
        """{name: unweighted loss} plus "loss", the weighted total."""
        predictions = out.reconstruction.split(self.loss_channels, dim=-1)
        values = {
            name: loss(pred, out) for (name, loss), pred in zip(self.losses.items(), predictions, strict=True)
        }
        values["loss"] = sum(self.losses[name].weight * value for name, value in values.items())
        return values

    def train_generator(self) -> torch.Generator:
        """The generator of the training slot draws (see `train_seed`), on the module's device."""
        if self._train_generator is None or self._train_generator.device != self.device:
            self._train_generator = torch.Generator(device=self.device).manual_seed(self.train_seed)
            if self._train_generator_state is not None:
                self._train_generator.set_state(self._train_generator_state)
        return self._train_generator

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Loaders ship stored uint8 frames and the views they drew; resizing, cropping, flipping
        # and normalising them here runs on the training device, for the whole batch at once.
        return frames_to_video(batch) if isinstance(batch, dict) else batch

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        values = self.compute_losses(self.model(**model_inputs(batch), generator=self.train_generator()))
        self._watch_finite(values)
        self.log_dict({f"train/{k}": v for k, v in values.items()}, prog_bar=False)
        self.log("loss", values["loss"], prog_bar=True, logger=False)
        return values["loss"]

    def _watch_finite(self, values: dict[str, Tensor]) -> None:
        """Remember on the device the first step whose loss is NaN/inf and its losses. Asking every
        step (`if not torch.isfinite(loss)`) would make the host wait for the GPU once per step;
        check_finite() reads this at logging and checkpoint time (VerifiedCheckpoint) instead."""
        losses = torch.stack([value.detach().float() for value in values.values()])  # (N,)
        if self._first_nonfinite is None or self._first_nonfinite[1].device != losses.device:
            self._first_nonfinite = (torch.full((), -1, device=losses.device), torch.zeros_like(losses))
        step, at_step = self._first_nonfinite
        first = (step < 0) & ~torch.isfinite(losses[-1])  # values["loss"] is the last
        self._first_nonfinite = (
            torch.where(first, self.global_step, step),
            torch.where(first, losses, at_step),
        )
        self._loss_names = list(values)

    def check_finite(self) -> None:
        """Raise NonFiniteLossError if a training loss since the start of this session was NaN/inf.
        Reads the device flag of _watch_finite: one host sync, so call it at logging or checkpoint time."""
        if self._first_nonfinite is None:
            return
        step, at_step = self._first_nonfinite
        if int(step) < 0:
            return
        values = dict(zip(self._loss_names, at_step.tolist(), strict=True))
        raise NonFiniteLossError(
            f"training loss is {values['loss']} at step {int(step)} ({values}); last.ckpt keeps the "
            "newest weights whose loss was finite. Lower optim.base_lr, or clip gradients "
            "(trainer.gradient_clip_val, e.g. 0.05; lower it if it is already set)"
        )

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.global_step % self.trainer.log_every_n_steps == 0:  # the logger reads the losses now anyway
            self.check_finite()

    def predict_masks(self, batch: dict[str, Tensor]) -> tuple[ModelOutput, Tensor]:
        """Model output and the scored hard masks (B, T, S, H, W) at the GT mask resolution:
        the decoder's, or slot attention's with eval_masks="grouping"."""
        if "index" not in batch:
            raise SlotsweepError(
                f'a validation batch has no "index" (it has {sorted(batch)}): each sample\'s position '
                "in the validation set seeds its slots (slotsweep.contracts.DataModule); build the "
                "val loader on slotsweep.data.streams.ValidationStream or map_stream"
            )
        inputs = model_inputs(batch)
        # slots per clip: its metrics do not depend on the batch size or a DDP split
        inputs["initial_slots"] = self._initial_slots(batch["index"].tolist(), inputs["conditions"])
        out = self.model(**inputs, n_slots=self.eval_n_slots)
        size = tuple(batch["masks"].shape[-2:])
        masks = out.grouping_masks if self.eval_masks == "grouping" else out.decoder_masks
        return out, hard_masks(resize_patch_masks(masks, size), dtype=torch.bool)

    def _initial_slots(self, indices: list[int], conditions: dict[str, Tensor]) -> Tensor:
        """(B, S, D) first-frame slots, clip b's drawn from a seed of its index in the split."""
        slots = []
        for b, index in enumerate(indices):
            generator = torch.Generator(device=self.device).manual_seed(self.eval_seed * 100_003 + index)
            clip_conditions = {key: value[b : b + 1] for key, value in conditions.items()}
            request = SlotRequest(1, self.eval_n_slots, generator, clip_conditions)
            slots.append(self.model.grouper.initializer(request))
        return torch.cat(slots)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Any]:
        """Counts the losses and metrics; returns {"output", "masks"} (the scored hard masks) for
        callbacks (pictures.ValPictures draws the first clips; Lightning keeps none of them)."""
        out, pred = self.predict_masks(batch)
        # Everything is summed into metric states here and synced once at epoch end (not per
        # batch): under DDP a rank may have fewer batches than another, or none.
        batch_size = len(batch["masks"])
        for name, value in self.compute_losses(out).items():  # each a mean over the batch's clips
            self.val_loss_sums[name].update(value * batch_size)
        self.val_clips.update(batch_size)
        self.metrics.update(batch["masks"], pred)
        for metric in self.extra_metrics.values():
            metric.update(batch["masks"], pred)
        if self.jandf is not None:
            self.jandf.update(batch["masks"], pred)
        return {"output": out, "masks": pred}

    def on_validation_epoch_end(self) -> None:
        # sync_dist: the values are already equal on all ranks (this only silences Lightning)
        for key, value in self.validation_results().items():
            spec = METRICS.get(key.removeprefix("val/"))
            self.log(key, value, prog_bar=spec is not None and spec.prog_bar, sync_dist=True)

    def validation_results(self) -> dict[str, float]:
        """The validation's {"val/<loss>", "val/n_clips", "val/<metric>": value}; resets the states
        and updates best_metrics (a pool's heads report through this too: training/pool.py)."""
        # compute() syncs the states over all ranks: the values are the whole validation set's
        values = {name: metric.compute().item() for name, metric in self.metrics.items()}
        values |= {name: metric.compute().item() for name, metric in self.extra_metrics.items()}
        if self.jandf is not None:  # opt-in, outside the registry: one metric gives three values
            values |= {f"video_{name}": value.item() for name, value in self.jandf.compute().items()}
        n_clips = self.val_clips.compute()  # clips (or chunks, images) scored, each once
        results = {
            f"val/{name}": (sums.compute() / n_clips).item() for name, sums in self.val_loss_sums.items()
        }
        results["val/n_clips"] = n_clips.item()  # NaN losses above when it is 0: nothing to average
        resets = [*self.metrics.values(), *self.extra_metrics.values(), *self.val_loss_sums.values()]
        for metric in [*resets, self.val_clips, self.jandf]:
            if metric is not None:
                metric.reset()
        for name, value in values.items():
            spec, key = METRICS.get(name), val_key(name)
            results[key] = value
            best = self.best_metrics.get(key)
            improved = best is None or (
                spec.better(value, best) if spec is not None else self._better(name, value, best)
            )
            if not math.isnan(value) and improved:
                self.best_metrics[key] = value
        return results

    def _better(self, name: str, value: float, than: float) -> bool:
        """Outside the registry: an extra metric's own direction; J&F's values are higher-better."""
        metric = self.extra_metrics[name] if name in self.extra_metrics else None  # noqa: SIM401 (no .get)
        higher = metric is None or metric.higher_is_better is not False
        return value > than if higher else value < than

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer, schedule = self.optim.build(params, self.total_batch_size)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def elapsed_s(self) -> float:
        return self.wall_time_s + time.monotonic() - self._session_start

    def checkpoint_section(self) -> dict[str, Any]:
        """The checkpoint's `slotsweep` section: what eval, infer and a resume read besides the
        weights (the run's config, its frozen encoder's record, the training draws' state)."""
        return {
            "best_metrics": self.best_metrics,
            "wall_time_s": self.elapsed_s(),
            "config": self.run_config,
            "train_generator": self.train_generator().get_state(),
            FROZEN_RECORD: frozen_record(self.model, self._frozen_source()),
        }

    def load_section(self, section: dict[str, Any]) -> None:
        """Restore what checkpoint_section saved (the weights apart)."""
        self.best_metrics = dict(section.get("best_metrics", {}))
        self.wall_time_s = section.get("wall_time_s", 0.0)
        self._train_generator_state = section.get("train_generator")
        self._train_generator = None
        self._session_start = time.monotonic()

    def _frozen_source(self) -> str:
        return "this config" if self.run_config is None else frozen_source(self.run_config)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["slotsweep"] = self.checkpoint_section()
        leave_out_frozen(checkpoint["state_dict"], self.model, "model.")  # rebuilt from its source

    def restore_frozen(
        self, state: dict[str, Tensor], section: dict[str, Any], prefix: str, name: str
    ) -> None:
        """Put this model's frozen encoder (rebuilt from the run config's source) into a checkpoint's
        `state`, which holds the model under `prefix`, if the checkpoint (`name`, for messages) left
        it out as its `section` records; models.weights.put_back_frozen checks its sha256."""
        record = section.get(FROZEN_RECORD)
        put_back_frozen(state, self.model, record, prefix, name, self._frozen_source())

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        section = checkpoint.get("slotsweep", {})
        self.restore_frozen(
            checkpoint["state_dict"], section, "model.", f"checkpoint {self.trainer.ckpt_path}"
        )
        self.load_section(section)

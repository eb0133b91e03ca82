"""contracts.require: every extension point's built-in parts fit; a part that does not is one line."""

import functools

import lightning as L
import pytest
import torch
from torch import Tensor, nn

from slotsweep.contracts import (
    DataModule,
    Decoder,
    Encoder,
    Grouper,
    Loss,
    Metric,
    Predictor,
    SlotInitializer,
    SlotRequest,
    require,
)
from slotsweep.data.shapes import ShapesDataModule
from slotsweep.errors import SlotsweepError
from slotsweep.evaluation.metrics import FGARI, MBO
from slotsweep.losses import FeatureReconstructionLoss, SlotContrastiveLoss, TemporalSimilarityLoss
from slotsweep.models.decoder import MLPDecoder, SlotMixerDecoder
from slotsweep.models.encoder import ViTEncoder
from slotsweep.models.grouper import SlotAttention
from slotsweep.models.initializers import FixedLearnedInit, MaskBoxInit, RandomInit
from slotsweep.models.transformer import TransformerEncoder


def test_built_in_parts_fit_their_contracts(tmp_path):
    grouper = SlotAttention(n_slots=3, slot_dim=8)
    for part, contract in [
        (grouper, Grouper),
        (grouper.initializer, SlotInitializer),
        (FixedLearnedInit(3, 8), SlotInitializer),
        (MaskBoxInit(3, 8), SlotInitializer),
        (functools.partial(SlotMixerDecoder, n_blocks=1), Decoder),  # a YAML partial: its class
        (MLPDecoder(8, 4, 16, (16,)), Decoder),
        (functools.partial(TransformerEncoder), Predictor),
        (FeatureReconstructionLoss(), Loss),
        (TemporalSimilarityLoss(), Loss),
        (SlotContrastiveLoss(), Loss),
        (FGARI(), Metric),
        (MBO(), Metric),
        (functools.partial(ViTEncoder), Encoder),
    ]:
        require(part, contract, "key")
    shapes = ShapesDataModule(
        str(tmp_path), 4, 32, 1, 2, 2, 2, 0, 3, 1, 1, 0, False, None, 0.1, 0.2, 0.0, 0.0, 0.0, 0.0
    )
    require(shapes, DataModule, "dataset")
    assert (shapes.dataset_name, shapes.val_frames, shapes.mask_size) == ("shapes", "whole videos", 32)


class NotAModule:
    weight = 1.0

    def n_channels(self, feat_dim: int, n_patches: int) -> int:
        return 0

    def check_clip(self, name: str, n_frames: int) -> None: ...

    def __call__(self, prediction: Tensor, out) -> Tensor:
        return prediction.sum()


class NoForward(nn.Module):
    weight = 1.0

    def n_channels(self, feat_dim: int, n_patches: int) -> int:
        return 0

    def check_clip(self, name: str, n_frames: int) -> None: ...


class NoWeight(nn.Module):
    def n_channels(self, feat_dim: int, n_patches: int) -> int:
        return 0

    def check_clip(self, name: str, n_frames: int) -> None: ...

    def forward(self, prediction: Tensor, out) -> Tensor:
        return prediction.sum()


class Facts(L.LightningDataModule):
    """A datamodule with loaders but none of the declared facts."""

    ignore_background = ignore_overlaps = False

    def train_dataloader(self):
        return []

    def val_dataloader(self):
        return []


class NotAMetric(nn.Module):
    def update(self, true: Tensor, pred: Tensor) -> None: ...

    def compute(self) -> Tensor:
        return torch.zeros(())


class NoGroup(nn.Module):
    slot_dim, n_slots = 8, 3

    def __init__(self) -> None:
        super().__init__()
        self.initializer = RandomInit(3, 8)


@pytest.mark.parametrize(
    ("part", "contract", "key", "message"),
    [
        (NotAModule(), Loss, "loss.mine", "loss.mine: .*NotAModule is not a torch.nn.Module subclass"),
        (NoForward(), Loss, "loss.mine", r"loss.mine: .*NoForward lacks forward \(slotsweep.contracts.Loss"),
        (NoWeight(), Loss, "loss.mine", "loss.mine: .*NoWeight lacks weight "),
        (
            Facts(),
            DataModule,
            "dataset",
            "dataset: .*Facts lacks dataset_name, train_clip_frames, val_frames",
        ),
        (nn.Linear(2, 2), DataModule, "dataset", "is not a lightning.pytorch.LightningDataModule subclass"),
        (NotAMetric(), Metric, "metrics.mine", "metrics.mine: .*NotAMetric is not a torchmetrics.Metric"),
        (NoGroup(), Grouper, "grouper", "grouper: .*NoGroup lacks group "),
        (
            nn.Linear(2, 2),
            Grouper,
            "grouper",
            "grouper: torch.nn.modules.linear.Linear lacks group, slot_dim",
        ),
        (
            functools.partial(nn.Module),
            Decoder,
            "decoder",
            "decoder: torch.nn.modules.module.Module lacks forward",
        ),
        (nn.Linear(2, 2), SlotInitializer, "grouper.initializer", "Linear lacks n_slots"),
        (NotAModule, Encoder, "encoder", "encoder: .*NotAModule is not a torch.nn.Module subclass"),
    ],
)
def test_a_part_outside_its_contract_is_one_line_naming_its_key(part, contract, key, message):
    with pytest.raises(SlotsweepError, match=message) as error:
        require(part, contract, key)
    assert "\n" not in str(error.value) and str(error.value).startswith(f"{key}: ")


def test_a_slot_request_is_the_one_signature_of_initial_slots():
    grouper = SlotAttention(n_slots=3, slot_dim=8)
    slots = grouper.initializer(SlotRequest(2, n_slots=5, generator=torch.Generator().manual_seed(0)))
    assert slots.shape == (2, 5, 8)

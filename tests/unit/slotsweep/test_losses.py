"""Losses against the reference's values and gradients, and the similarity target against a loop.

SlotContrast's slot-slot loss: against the original code's loss and gradients in every stored
setting (fixtures/slotcontrast/slotcontrast_losses.pt), its alternative forms against the stored
float64 re-derivation, and its DDP gathering against one process holding the whole batch.
"""

import math
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from slotsweep.cache import stored_arrays
from slotsweep.contracts import EncoderOutput, ModelOutput
from slotsweep.losses import (
    CONTRAST_DIRECTIONS,
    FeatureReconstructionLoss,
    SlotContrastiveLoss,
    TemporalSimilarityLoss,
    feature_time_similarity,
    slot_contrast,
)
from slotsweep.models.decoder import MLPDecoder
from slotsweep.models.encoder import ViTEncoder
from slotsweep.models.grouper import SlotAttention
from slotsweep.models.object_centric import ObjectCentricModel
from slotsweep.optim import AdamWarmupDecay
from slotsweep.training.module import ObjectCentricModule

TEMPERATURES = [0.075, 0.25]
KEYS = ["keys", "keys_edge"]


def naive_similarity(keys: torch.Tensor, offset: int, temperature: float, threshold: float):
    """The target written out patch by patch, in float64: (B, T - offset, P, P)."""
    B, T, P, _ = keys.shape
    out = torch.zeros(B, T - offset, P, P, dtype=torch.float64)
    for b in range(B):
        for t in range(T - offset):
            for p in range(P):
                row = []
                for q in range(P):
                    u, v = keys[b, t, p].double(), keys[b, t + offset, q].double()
                    cos = (u @ v / (u.norm() * v.norm())).item()
                    row.append(-math.inf if cos < threshold else cos / temperature)
                if all(r == -math.inf for r in row):
                    out[b, t, p] = 1 / P  # nothing similar enough: uniform
                    continue
                top = max(row)
                exps = [math.exp(r - top) for r in row]
                out[b, t, p] = torch.tensor(exps, dtype=torch.float64) / sum(exps)
    return out


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("keys", KEYS)
def test_similarity_target_matches_reference(reference, keys: str, temperature: float) -> None:
    data = reference("losses.pt")
    target = feature_time_similarity(data["inputs"][keys], 1, temperature, 0.0)
    assert target.shape == (2, 3, 16, 16)
    assert_close(target, data[f"similarity.{keys}.temp{temperature}"], rtol=1e-5, atol=1e-7)
    canonical = data[f"movi.{keys}.temp{temperature}.target_canonical"]  # row = t * P + p
    assert_close(target.flatten(1, 2), canonical, rtol=1e-5, atol=1e-7)


def test_all_negative_row_becomes_uniform(reference) -> None:
    """keys_edge: token (b=1, t=1, p=5) has a negative cosine with every token of frame 2."""
    data = reference("losses.pt")
    for temperature in TEMPERATURES:
        row = feature_time_similarity(data["inputs"]["keys_edge"], 1, temperature, 0.0)[1, 1, 5]
        assert torch.equal(row, torch.full((16,), 1 / 16))


def test_cosine_matches_reference(reference) -> None:
    """No threshold (every cosine >= -1) and tau = 1: the target is softmax(raw cosine)."""
    data = reference("losses.pt")
    target = feature_time_similarity(data["inputs"]["keys"], 1, temperature=1.0, threshold=-2.0)
    expected = data["similarity.keys.raw_cosine"].softmax(dim=-1)
    assert_close(target, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("keys", KEYS)
def test_temporal_similarity_loss_and_grad_match_reference(reference, keys: str, temperature: float) -> None:
    data = reference("losses.pt")
    inputs, prefix = data["inputs"], f"movi.{keys}.temp{temperature}."
    assert data[prefix + "config"]["target_transform"]["temperature"] == temperature
    logits = inputs["logits_movi"].clone().requires_grad_(True)  # (B, T, P, P): all channels
    loss = TemporalSimilarityLoss(weight=0.1, temperature=temperature)
    value = loss(logits, model_output(inputs["backbone_features"], inputs[keys]))
    value.backward()
    assert_close(value.detach(), data[prefix + "loss_timesim"], rtol=1e-5, atol=0)
    assert_close(logits.grad, data[prefix + "grad_logits"], rtol=1e-5, atol=1e-9)
    assert torch.count_nonzero(logits.grad[:, -1]) == 0  # the last frame has no next frame


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_videosaur_losses_through_the_module_match_reference(reference, temperature) -> None:
    """featrec on channels [0, 24), timesim on [24, 40), total = 1.0 featrec + 0.1 timesim."""
    data = reference("losses.pt")
    inputs, prefix = data["inputs"], f"ytvis.temp{temperature}."
    reference_losses = data[prefix + "config"]["losses"]
    assert reference_losses["loss_featrec"]["pred_dims"] == [0, 24]
    assert reference_losses["loss_timesim"]["pred_dims"] == [24, 40]
    module = module_with_losses(
        featrec=FeatureReconstructionLoss(weight=1.0),
        timesim=TemporalSimilarityLoss(weight=0.1, temperature=temperature),
    )
    logits = inputs["logits_ytvis"].clone().requires_grad_(True)
    values = module.compute_losses(model_output(inputs["backbone_features"], inputs["keys"], logits))
    values["loss"].backward()
    assert_close(values["featrec"].detach(), data[prefix + "loss_featrec"], rtol=1e-5, atol=0)
    assert_close(values["timesim"].detach(), data[prefix + "loss_timesim"], rtol=1e-5, atol=0)
    assert_close(values["loss"].detach(), data[prefix + "loss_total"], rtol=1e-5, atol=0)
    assert_close(logits.grad, data[prefix + "grad_logits_total"], rtol=1e-5, atol=1e-9)


def module_with_losses(**losses: torch.nn.Module) -> ObjectCentricModule:
    """A module whose decoder output is split as the fixture's: 24 feature + 16 patch channels."""
    encoder = ViTEncoder(
        "vit_tiny_patch16_224",
        img_size=16,
        pretrained=False,
        model_kwargs=dict(patch_size=4, embed_dim=24, num_heads=2, depth=1),
    )
    model = ObjectCentricModel(
        encoder, SlotAttention(4, 8), torch.nn.Identity, partial(MLPDecoder, hidden_dims=(8,)), 40
    )
    return ObjectCentricModule(
        model,
        losses,
        AdamWarmupDecay(),
        total_batch_size=32,
        ignore_background=False,
        ignore_overlaps=False,
    )


def model_output(
    features: torch.Tensor,
    keys: torch.Tensor,
    reconstruction: torch.Tensor | None = None,
    slots: torch.Tensor | None = None,
) -> ModelOutput:
    """What a loss receives (contracts.Loss): the encoder outputs, and the slots the slot-slot loss reads."""
    unused = torch.empty(0)
    return ModelOutput(
        encoder=EncoderOutput(features=features, keys=keys),
        slots=unused if slots is None else slots,
        slots_predicted=unused,
        grouping_masks=unused,
        reconstruction=unused if reconstruction is None else reconstruction,
        decoder_masks=unused,
    )


@pytest.mark.parametrize(
    ("offset", "temperature", "threshold"),
    [(1, 0.1, 0.0), (1, 0.5, 0.3), (2, 0.075, 0.0), (1, 1.0, -1.5)],
)
def test_similarity_matches_naive_loop(offset: int, temperature: float, threshold: float) -> None:
    torch.manual_seed(0)
    keys = torch.randn(2, 4, 6, 5)
    keys[1, 1 + offset] = -keys[1, 1, 2]  # every cosine of (b=1, t=1, p=2) is -1: a uniform row
    target = feature_time_similarity(keys, offset, temperature, threshold)
    expected = naive_similarity(keys, offset, temperature, threshold)
    assert target.shape == (2, 4 - offset, 6, 6)
    assert_close(target.double(), expected, rtol=1e-5, atol=1e-7)
    if threshold > -1:
        assert torch.equal(target[1, 1, 2], torch.full((6,), 1 / 6))


def test_loss_matches_naive_cross_entropy() -> None:
    torch.manual_seed(1)
    keys, logits = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 5, 5)
    loss = TemporalSimilarityLoss(temperature=0.2)
    target = naive_similarity(keys, 1, 0.2, 0.0)
    expected = sum(
        -(target[b, t, p] * logits[b, t, p].double().log_softmax(-1)).sum()
        for b in range(2)
        for t in range(2)
        for p in range(5)
    ) / (2 * 2 * 5)
    value = loss(logits, model_output(torch.empty(0), keys))
    assert_close(value.double(), expected, rtol=1e-5, atol=0)


def test_similarity_target_stays_fp32_under_bf16_autocast() -> None:
    """trainer.precision=bf16-mixed: the loss equals the fp32 loss of the same bf16 logits."""
    torch.manual_seed(5)
    keys, logits = torch.randn(2, 3, 49, 64) + 2 * torch.randn(64), torch.randn(2, 3, 49, 49)
    loss = TemporalSimilarityLoss(temperature=0.075)
    target = model_output(torch.empty(0), keys)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss(logits.bfloat16(), target)
    assert_close(mixed.float(), loss(logits.bfloat16().float(), target), rtol=1e-5, atol=1e-6)


def test_threshold_zeroes_dissimilar_patches() -> None:
    torch.manual_seed(2)
    keys = torch.randn(1, 2, 12, 6)
    cos = torch.einsum("pd,qd->pq", F.normalize(keys[0, 0], dim=-1), F.normalize(keys[0, 1], dim=-1))
    target = feature_time_similarity(keys, threshold=0.2)[0, 0]
    below = cos < 0.2
    has_similar = ~below.all(dim=-1)
    assert torch.equal(target[has_similar] == 0, below[has_similar])
    assert_close(target.sum(-1), torch.ones(12))


def test_lower_temperature_sharpens_the_target() -> None:
    torch.manual_seed(3)
    keys = torch.randn(2, 3, 10, 6)
    entropy = []
    for temperature in (0.05, 0.25, 5.0):
        target = feature_time_similarity(keys, temperature=temperature, threshold=-2.0)
        entropy.append(-(target * target.clamp_min(1e-30).log()).sum(-1).mean().item())
    assert entropy[0] < entropy[1] < entropy[2] < math.log(10)


def test_featrec_is_mse_to_detached_features() -> None:
    torch.manual_seed(4)
    features = torch.randn(2, 3, 5, 7, requires_grad=True)
    prediction = torch.randn(2, 3, 5, 7, requires_grad=True)
    value = FeatureReconstructionLoss()(prediction, model_output(features, features))
    assert_close(value, ((prediction - features) ** 2).mean())
    value.backward()
    assert features.grad is None and prediction.grad is not None


def test_channel_counts() -> None:
    assert FeatureReconstructionLoss().n_channels(feat_dim=768, n_patches=196) == 768
    assert TemporalSimilarityLoss().n_channels(feat_dim=768, n_patches=196) == 196
    assert SlotContrastiveLoss().n_channels(feat_dim=768, n_patches=196) == 0  # reads the slots


def test_slotcontrast_feature_cache_holds_the_tokens_only() -> None:
    """loss=slotcontrast reads no attention keys: a feature cache stores half as much."""
    assert stored_arrays([FeatureReconstructionLoss(), SlotContrastiveLoss()]) == ("features",)
    assert stored_arrays([SlotContrastiveLoss(), TemporalSimilarityLoss()]) == ("features", "keys")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TemporalSimilarityLoss(temperature=0.0), "^temperature=0.0 must be > 0$"),
        (lambda: TemporalSimilarityLoss(offset=0), "^offset=0 must be >= 1$"),
        (lambda: SlotContrastiveLoss(temperature=0.0), "^temperature=0.0 must be > 0$"),
        (lambda: SlotContrastiveLoss(direction="both"), r"^direction=both is not one of \["),
        (
            lambda: SlotContrastiveLoss(batch_contrast=False, gather_negatives=True),
            "^gather_negatives=true needs batch_contrast=true",
        ),
    ],
)
def test_bad_config_names_the_argument(build, message: str) -> None:
    """Only the argument: the loss's name is its YAML key, which build.py prefixes (test_build.py)."""
    with pytest.raises(ValueError, match=message):
        build()


def test_offset_must_be_shorter_than_the_clip() -> None:
    loss = TemporalSimilarityLoss(offset=3)
    keys = torch.randn(1, 3, 4, 5)
    with pytest.raises(ValueError, match=r"offset=3 .*\(3 frames\)"):
        loss(torch.randn(1, 3, 4, 4), model_output(keys, keys))


# --- SlotContrast's slot-slot contrastive loss (docs/methods.md) ------------------------------

SC_LOSSES = "slotcontrast/slotcontrast_losses.pt"
SC_INPUTS = ["rand_3x4x5x8", "rand_1x2x3x8", "rand_4x24x11x64", "identical_3x4x5x8"]
SC_SETTINGS = [
    (name, temperature, batch) for name in SC_INPUTS for temperature in (0.1, 0.05) for batch in (True, False)
]


def sc_case(name: str, temperature: float, batch: bool) -> str:
    return f"{name}.temp{temperature}.batch_contrast_{str(batch).lower()}"


@pytest.mark.parametrize(("name", "temperature", "batch"), SC_SETTINGS)
def test_slot_contrast_loss_and_grad_match_original(reference, name: str, temperature: float, batch: bool):
    data = reference(SC_LOSSES)
    expected = data["ss"][sc_case(name, temperature, batch)]
    assert (expected["config"]["temperature"], expected["config"]["batch_contrast"]) == (temperature, batch)
    slots = data["inputs"][name].clone().requires_grad_(True)  # (B, T, S, D)
    loss = SlotContrastiveLoss(temperature=temperature, batch_contrast=batch)
    B, T, S, _ = slots.shape
    value = loss(torch.empty(B, T, 16, 0), model_output(torch.empty(0), torch.empty(0), slots=slots))
    value.backward()
    assert_close(value.detach(), expected["loss"], rtol=1e-5, atol=0)
    # atol relative to the gradient's scale (entries near 0 carry float noise); the all-identical
    # input's gradient is zero up to that noise (|g| <= 2e-8), so it gets an absolute one
    atol = 1e-6 if name.startswith("identical") else 1e-5 * expected["grad_slots"].abs().max().item()
    assert_close(slots.grad, expected["grad_slots"], rtol=1e-5, atol=atol)
    if name.startswith("identical"):  # every candidate is as similar as the positive: ln N
        assert value.item() == pytest.approx(math.log(B * S if batch else S), rel=1e-6)


@pytest.mark.parametrize(("name", "temperature", "batch"), SC_SETTINGS)
def test_slot_contrast_forms_match_the_derivation(reference, name: str, temperature: float, batch: bool):
    """direction x include_positive against the fixture's float64 re-derivation of each form."""
    data = reference(SC_LOSSES)
    derived = data["derived_not_original"][sc_case(name, temperature, batch)]
    slots = data["inputs"][name]
    for direction in CONTRAST_DIRECTIONS:
        for include in (True, False) if direction != "symmetric" else (True,):
            form = f"{direction}_{'include' if include else 'exclude'}_positive"
            value = slot_contrast(slots, temperature, batch, direction, include)
            assert value.item() == pytest.approx(derived[form], rel=1e-5, abs=1e-6), form


def test_released_combination_through_the_module_matches_original(reference) -> None:
    """total = 1.0 featrec (decoder channels [0, 24)) + 0.5 slot-slot (the slots, no channels)."""
    data = reference(SC_LOSSES)["combined"]
    assert data["config"]["loss_weights"] == {"loss_featrec": 1.0, "loss_ss": 0.5}
    inputs = data["inputs"]
    module = module_with_losses(featrec=FeatureReconstructionLoss(1.0), slotslot=SlotContrastiveLoss(0.5))
    assert module.loss_channels == [24, 0]
    reconstruction = inputs["reconstruction"].clone().requires_grad_(True)
    slots = inputs["slots"].clone().requires_grad_(True)
    out = model_output(inputs["backbone_features"], torch.empty(0), reconstruction, slots)
    values = module.compute_losses(out)
    values["loss"].backward()
    assert_close(values["featrec"].detach(), data["loss_featrec"], rtol=1e-5, atol=0)
    assert_close(values["slotslot"].detach(), data["loss_ss"], rtol=1e-5, atol=0)
    assert_close(values["loss"].detach(), data["total"], rtol=1e-5, atol=0)
    assert_close(reconstruction.grad, data["grad_reconstruction"], rtol=1e-5, atol=1e-9)
    assert_close(slots.grad, data["grad_slots"], rtol=1e-5, atol=1e-8)


def test_slot_contrast_matches_a_loop_over_anchors() -> None:
    """Written out anchor by anchor in float64: slot k of video b at frame t+1 against every slot
    of frame t of every video, positive included (the original's form)."""
    torch.manual_seed(6)
    slots = torch.randn(2, 3, 4, 5)
    B, T, S, _ = slots.shape
    z = F.normalize(slots.double(), dim=-1)
    terms = []
    for t in range(T - 1):
        for b in range(B):
            for k in range(S):
                logits = torch.stack([z[b, t + 1, k] @ z[c, t, j] / 0.2 for c in range(B) for j in range(S)])
                terms.append(logits.logsumexp(0) - logits[b * S + k])
    value = SlotContrastiveLoss(temperature=0.2)(
        None, model_output(torch.empty(0), torch.empty(0), slots=slots)
    )
    assert_close(value.double(), torch.stack(terms).mean(), rtol=1e-6, atol=0)


def test_slot_contrast_stays_fp32_under_bf16_autocast() -> None:
    torch.manual_seed(7)
    slots = torch.randn(4, 4, 7, 64).bfloat16()
    loss = SlotContrastiveLoss(temperature=0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss(None, model_output(torch.empty(0), torch.empty(0), slots=slots))
    assert mixed.dtype == torch.float32
    exact = slot_contrast(slots.float(), 0.1)
    assert_close(mixed, exact, rtol=1e-6, atol=0)


def test_slot_contrast_needs_two_frames() -> None:
    loss = SlotContrastiveLoss()
    with pytest.raises(ValueError, match=r"loss.slotslot .*dataset.train_clip_frames=1 must be >= 2"):
        loss.check_clip("slotslot", 1)
    loss.check_clip("slotslot", 2)
    with pytest.raises(ValueError, match=r"needs clips of >= 2 frames"):
        loss(None, model_output(torch.empty(0), torch.empty(0), slots=torch.randn(2, 1, 3, 4)))


def _gather_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """One DDP rank: its half of the batch, negatives gathered (or not) from the other rank."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    try:
        slots = torch.randn(4, 3, 5, 8, generator=torch.Generator().manual_seed(0))
        half = slots[2 * rank : 2 * rank + 2].clone().requires_grad_(True)
        results = {}
        for gather in (True, False):
            loss = SlotContrastiveLoss(gather_negatives=gather).train()
            value = loss(None, model_output(torch.empty(0), torch.empty(0), slots=half))
            (grad,) = torch.autograd.grad(value, half)
            results[gather] = (value.detach(), grad)
        with torch.no_grad():  # validation: per device even when gathering is on
            loss = SlotContrastiveLoss(gather_negatives=True).eval()
            results["eval"] = loss(None, model_output(torch.empty(0), torch.empty(0), slots=half))
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_gathered_negatives_equal_one_process_with_the_whole_batch(tmp_path: Path) -> None:
    """2 gloo ranks x 2 videos, gather_negatives=true: the mean of the ranks' losses is the loss of
    4 videos on one device, and each rank's gradient (summed over the ranks' losses by the gather's
    backward) is world x the whole-batch gradient of its videos, so DDP's averaging updates as one
    device would. Per device (the original), the ranks' losses differ from it."""
    torch.multiprocessing.spawn(
        _gather_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    slots = torch.randn(4, 3, 5, 8, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    whole = slot_contrast(slots, 0.1)
    (grad,) = torch.autograd.grad(whole, slots)
    gathered = (ranks[0][True][0] + ranks[1][True][0]) / 2
    assert_close(gathered, whole.detach(), rtol=1e-6, atol=0)
    for r in range(2):
        assert_close(ranks[r][True][1], 2 * grad[2 * r : 2 * r + 2], rtol=1e-5, atol=1e-8)
        per_device = slot_contrast(slots[2 * r : 2 * r + 2].detach(), 0.1)
        assert_close(ranks[r][False][0], per_device, rtol=1e-6, atol=0)
        assert_close(ranks[r]["eval"], per_device, rtol=1e-6, atol=0)
    assert (ranks[0][False][0] + ranks[1][False][0]) / 2 < whole - 0.1  # fewer negatives, lower loss

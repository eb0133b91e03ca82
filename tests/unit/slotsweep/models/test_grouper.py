"""Slot attention and the slot initializer against the original VideoSAUR modules."""

import math

import pytest
import torch
from torch.testing import assert_close

from slotsweep.contracts import SlotRequest
from slotsweep.models.grouper import SlotAttention
from slotsweep.models.initializers import RandomInit
from slotsweep.models.weights import reference_to_local


def reference_slot_attention(entry: dict) -> SlotAttention:
    """Our SlotAttention with a fixture's weights; only the initializer it also owns is left out."""
    config = entry["config"]
    sa = SlotAttention(
        n_slots=entry["inputs"]["slots"].shape[1],
        slot_dim=config["slot_dim"],
        n_iters=config["n_iters"],
        inp_dim=config["inp_dim"],
        use_mlp=config["use_mlp"],
    ).eval()
    result = sa.load_state_dict(reference_to_local(entry["state_dict"]), strict=False)
    assert sorted(result.missing_keys) == ["initializer.log_std", "initializer.mean"]
    assert result.unexpected_keys == []
    return sa


@pytest.mark.parametrize("n_iters", [3, 2, 1])
@pytest.mark.parametrize("use_mlp", [False, True], ids=["no_mlp", "mlp"])
def test_slot_attention_matches_reference(reference, use_mlp: bool, n_iters: int) -> None:
    entry = reference("modules.pt")[f"slot_attention.use_mlp_{use_mlp}"]
    sa = reference_slot_attention(entry)
    with torch.no_grad():
        slots, masks = sa(entry["inputs"]["features"], entry["inputs"]["slots"], n_iters=n_iters)
    expected = entry["outputs"]
    assert slots.shape == (2, 4, 16) and masks.shape == (2, 4, 20)
    assert_close(slots, expected[f"n_iters{n_iters}.slots"], rtol=1e-4, atol=1e-5)
    assert_close(masks, expected[f"n_iters{n_iters}.masks"], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("n_iters", [3, 2, 1])
@pytest.mark.parametrize("config", ["movi_c", "movi_e"])
def test_slot_attention_with_mlp_matches_slotcontrast(reference, config: str, n_iters: int) -> None:
    """SlotContrast's grouper: use_mlp at D 64 / S 11 and D 128 / S 15 over 576 patches."""
    entry = reference("slotcontrast/slotcontrast_modules.pt")[f"slot_attention.{config}"]
    assert entry["config"]["use_mlp"] and entry["config"]["n_iters"] == 2
    sa = reference_slot_attention(entry)
    inputs = entry["inputs"]
    with torch.no_grad():
        slots, masks = sa(inputs["features"], inputs["slots"], n_iters=n_iters)
        default, _ = sa(inputs["features"], inputs["slots"])
    B, S, D = inputs["slots"].shape
    assert slots.shape == (B, S, D) and masks.shape == (B, S, 576)
    expected = entry["outputs"][f"n_iters_{n_iters}"]
    assert_close(slots, expected["slots"], rtol=1e-4, atol=1e-5)
    assert_close(masks, expected["masks"], rtol=1e-4, atol=1e-6)
    assert_close(default, entry["outputs"]["n_iters_2"]["slots"], rtol=1e-4, atol=1e-5)


def test_slot_attention_defaults_to_constructor_iterations(reference) -> None:
    entry = reference("modules.pt")["slot_attention.use_mlp_False"]
    sa = reference_slot_attention(entry)  # n_iters=3 in the fixture config
    with torch.no_grad():
        slots, _ = sa(entry["inputs"]["features"], entry["inputs"]["slots"])
    assert_close(slots, entry["outputs"]["n_iters3.slots"], rtol=1e-4, atol=1e-5)


def test_masks_are_a_distribution_over_slots() -> None:
    torch.manual_seed(0)
    sa = SlotAttention(n_slots=5, slot_dim=8, inp_dim=12)
    _, masks = sa(torch.randn(2, 9, 12), sa.initializer(SlotRequest(2)))
    assert masks.shape == (2, 5, 9)
    assert_close(masks.sum(dim=1), torch.ones(2, 9))


def test_slot_attention_is_permutation_equivariant_over_slots() -> None:
    torch.manual_seed(1)
    sa = SlotAttention(n_slots=6, slot_dim=16, inp_dim=24, n_iters=3, use_mlp=True).eval()
    features, slots, perm = torch.randn(2, 30, 24), torch.randn(2, 6, 16), torch.randperm(6)
    with torch.no_grad():
        out, masks = sa(features, slots)
        out_perm, masks_perm = sa(features, slots[:, perm])
    assert_close(out_perm, out[:, perm], rtol=1e-5, atol=1e-6)
    assert_close(masks_perm, masks[:, perm], rtol=1e-5, atol=1e-7)


def test_n_slots_override_at_call_time() -> None:
    torch.manual_seed(2)
    sa = SlotAttention(n_slots=4, slot_dim=8)
    for n_slots in (1, 4, 9):
        init = sa.initializer(SlotRequest(3, n_slots=n_slots))
        slots, masks = sa(torch.randn(3, 10, 8), init)
        assert init.shape == slots.shape == (3, n_slots, 8)
        assert masks.shape == (3, n_slots, 10)
    assert sa.n_slots == 4


def test_gru_hidden_state_quirk_is_an_option() -> None:
    """[Q] gru_on_normed_slots=True feeds LN(slots) as the GRU state; False the raw slots (§2.3)."""
    torch.manual_seed(3)
    quirk = SlotAttention(n_slots=3, slot_dim=8, n_iters=1)
    original = SlotAttention(n_slots=3, slot_dim=8, n_iters=1, gru_on_normed_slots=False)
    original.load_state_dict(quirk.state_dict())
    features, slots = torch.randn(2, 7, 8), 5 * torch.randn(2, 3, 8) + 2
    with torch.no_grad():
        _, masks = quirk(features, slots)
        x = quirk.norm_features(features)
        weights = (masks + quirk.eps) / (masks + quirk.eps).sum(-1, keepdim=True)
        updates = (weights @ quirk.to_v(x)).flatten(0, 1)
        for sa, hidden in ((quirk, quirk.norm_slots(slots)), (original, slots)):
            expected = quirk.gru(updates, hidden.flatten(0, 1)).view(2, 3, 8)
            assert_close(sa(features, slots)[0], expected, rtol=1e-5, atol=1e-6)


def test_random_init_matches_reference_stream(reference) -> None:
    entry = reference("modules.pt")["random_init"]
    init = RandomInit(entry["config"]["n_slots"], entry["config"]["dim"])
    for name, default in entry["state_dict_default_init"].items():  # mean 0, log std log(D^-0.5)
        assert torch.equal(getattr(init, name).detach(), default)
    init.load_state_dict(entry["state_dict"])
    torch.manual_seed(int(entry["inputs"]["torch_manual_seed_before_forward"]))
    with torch.no_grad():
        slots = init(SlotRequest(int(entry["inputs"]["batch_size"])))
    assert torch.equal(slots, entry["outputs"]["slots"])
    noise = (slots - init.mean) / init.log_std.exp()
    assert_close(noise, entry["outputs"]["noise"], rtol=1e-5, atol=1e-6)


def test_random_init_generator_is_repeatable() -> None:
    init = RandomInit(n_slots=4, dim=8)
    draw = [init(SlotRequest(2, generator=torch.Generator().manual_seed(7))) for _ in range(2)]
    assert torch.equal(draw[0], draw[1])
    assert not torch.equal(draw[0], init(SlotRequest(2, generator=torch.Generator().manual_seed(8))))
    assert_close(init.log_std, torch.full((1, 1, 8), math.log(8**-0.5)))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        (dict(n_slots=0, slot_dim=8), "grouper.n_slots=0"),
        (dict(n_slots=3, slot_dim=0), "grouper.slot_dim=0"),
        (dict(n_slots=3, slot_dim=8, n_iters=0), "grouper.n_iters=0"),
        (dict(n_slots=3, slot_dim=8, n_iters_first=0), "grouper.n_iters_first=0"),
        (dict(n_slots=3, slot_dim=8, inp_dim=12, kmeans_init_scale=4.0), "grouper.kmeans_init_scale"),
    ],
)
def test_bad_config_names_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        SlotAttention(**kwargs)


def clustered_tokens(
    n_clusters: int, per_cluster: int, dim: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, P, dim) tokens around n_clusters random centres, shuffled, and each token's cluster (P,)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_clusters, dim, generator=g) * 3
    labels = torch.arange(n_clusters).repeat_interleave(per_cluster)
    order = torch.randperm(len(labels), generator=g)
    tokens = centres[labels] + 0.3 * torch.randn(len(labels), dim, generator=g)
    return tokens[order][None], labels[order]


def agreement(masks: torch.Tensor, labels: torch.Tensor) -> float:
    """Purity x completeness of the hard slot assignment: 1 when slots and clusters match one to one.

    masks: (1, S, P) soft masks; labels: (P,) cluster of each token.
    """
    slot = masks[0].argmax(0)
    purity = sum(torch.bincount(labels[slot == s]).max().item() for s in slot.unique())
    completeness = sum(torch.bincount(slot[labels == c]).max().item() for c in labels.unique())
    return purity * completeness / len(labels) ** 2


def test_kmeans_init_clusters_before_training() -> None:
    """The demo's named option: an untrained grouper already separates clear clusters; the reference
    init (random projections, small logits) splits and merges them."""
    scores: dict[float | None, list[float]] = {None: [], 4.0: []}
    for seed in range(4):
        tokens, labels = clustered_tokens(n_clusters=4, per_cluster=30, dim=32, seed=seed)
        for scale, seed_scores in scores.items():
            torch.manual_seed(0)
            sa = SlotAttention(n_slots=4, slot_dim=32, n_iters=3, kmeans_init_scale=scale)
            slots = sa.initializer(SlotRequest(1, generator=torch.Generator().manual_seed(1)))
            seed_scores.append(agreement(sa(tokens, slots)[1], labels))
    kmeans, reference = (sum(v) / len(v) for v in (scores[4.0], scores[None]))
    assert kmeans > 0.9
    assert reference < kmeans - 0.15


def test_kmeans_init_weights() -> None:
    sa = SlotAttention(n_slots=3, slot_dim=8, kmeans_init_scale=2.0)
    assert_close(sa.to_q.weight, 2.0 * torch.eye(8))
    assert_close(sa.to_k.weight, sa.to_q.weight)
    assert_close(sa.to_v.weight, torch.eye(8))
    update = torch.randn(5, 8)
    assert_close(sa.gru(update, torch.randn(5, 8)), torch.tanh(update), atol=0.02, rtol=0)

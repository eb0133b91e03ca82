"""Slot initializers: the box-conditioned one against boxes written out, SlotContrast's learned
fixed slots against the original FixedLearnedInit, and their one-line errors."""

import pytest
import torch
from torch.testing import assert_close

from slotsweep.contracts import SlotRequest
from slotsweep.errors import SlotsweepError
from slotsweep.models.grouper import SlotAttention
from slotsweep.models.initializers import FixedLearnedInit, MaskBoxInit, RandomInit
from slotsweep.models.weights import reference_to_local


def test_mask_boxes_encode_each_first_frame_box() -> None:
    masks = torch.zeros(1, 3, 8, 10, dtype=torch.bool)  # (B, K, H, W): an object, a row, an empty channel
    masks[0, 0, 2:5, 1:4] = True
    masks[0, 1, 7, :] = True
    init = MaskBoxInit(n_slots=4, dim=6)
    slots = init(SlotRequest(1, conditions={"masks": masks}))
    assert slots.shape == (1, 4, 6)
    boxes = torch.tensor([[2 / 8, 1 / 10, 5 / 8, 4 / 10], [7 / 8, 0.0, 1.0, 1.0]])  # (y0, x0, y1, x1)
    torch.testing.assert_close(slots[0, :2], init.encode_box(boxes))
    assert torch.equal(slots[0, 2], init.empty[0, 0]) and torch.equal(slots[0, 3], init.empty[0, 0])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda init: init(SlotRequest(1)), "needs first-frame masks"),
        (
            lambda init: init(SlotRequest(1, conditions={"masks": torch.ones(1, 5, 4, 4, dtype=torch.bool)})),
            "n_slots=4",
        ),
        (
            lambda init: init(
                SlotRequest(1, n_slots=3, conditions={"masks": torch.ones(1, 2, 4, 4, dtype=torch.bool)})
            ),
            "3",
        ),
    ],
)
def test_mask_boxes_errors_name_the_fix(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(MaskBoxInit(n_slots=4, dim=6))


def test_slot_counts_are_checked_once_with_the_key() -> None:
    with pytest.raises(SlotsweepError, match="grouper.n_slots=0 must be >= 1"):
        MaskBoxInit(n_slots=0, dim=6)
    with pytest.raises(SlotsweepError, match="n_slots=0 must be >= 1"):
        RandomInit(n_slots=3, dim=6)(SlotRequest(2, n_slots=0))


def test_fixed_learned_init_matches_original(reference) -> None:
    entry = reference("slotcontrast/slotcontrast_modules.pt")["fixed_learned_init"]
    config, checks = entry["config"], entry["checks"]
    torch.manual_seed(7)  # the fixture's build seed: the same draw gives the original's init
    init = FixedLearnedInit(config["n_slots"], config["dim"])
    assert_close(init.slots.detach(), entry["state_dict_default_init"]["slots"], rtol=0, atol=0)
    init.load_state_dict(entry["state_dict"])  # strict: one parameter, `slots` (1, S, D)
    slots = init(SlotRequest(entry["inputs"]["batch_size"]))
    assert slots.shape == (3, 11, 64)
    assert_close(slots, entry["outputs"]["slots"], rtol=0, atol=0)
    assert checks["all_videos_identical"] and checks["two_calls_identical"]
    assert torch.equal(init(SlotRequest(3)), slots) and torch.equal(slots[0], slots[2])  # no sampling
    assert checks["output_is_expand_view"] and slots.stride(0) == 0
    generator = torch.Generator().manual_seed(1)
    assert torch.equal(init(SlotRequest(3, n_slots=11, generator=generator)), slots)  # its own count is fine


def test_fixed_learned_init_rejects_another_slot_count(reference) -> None:
    """The original silently keeps its S when inference asks for 5 slots; here it is one error."""
    checks = reference("slotcontrast/slotcontrast_modules.pt")["fixed_learned_init"]["checks"]
    assert checks["n_slots_attr_set_to_5_output_shape"] == [3, 11, 64]  # the original's no-op
    init = FixedLearnedInit(11, 64)
    with pytest.raises(SlotsweepError, match=r"n_slots=5: this model learned exactly 11 initial slots"):
        init(SlotRequest(3, n_slots=5))
    with pytest.raises(SlotsweepError, match="grouper.n_slots=0 must be >= 1"):
        FixedLearnedInit(0, 64)


def test_fixed_learned_init_in_the_grouper_has_the_released_name() -> None:
    """`initializer.slots` of a released checkpoint lands in grouper.initializer.slots."""
    sa = SlotAttention(n_slots=7, slot_dim=64, initializer=FixedLearnedInit)
    assert tuple(sa.state_dict()["initializer.slots"].shape) == (1, 7, 64)
    mapped = reference_to_local({"initializer.slots": torch.zeros(1, 7, 64)})
    assert list(mapped) == ["grouper.initializer.slots"]
    assert torch.equal(sa.initializer(SlotRequest(2))[0], sa.initializer(SlotRequest(2))[1])

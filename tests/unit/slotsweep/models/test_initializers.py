"""Slot initializers: the box-conditioned one against boxes written out, and its one-line errors."""

import pytest
import torch

from slotsweep.errors import SlotsweepError
from slotsweep.models.initializers import MaskBoxInit, RandomInit


def test_mask_boxes_encode_each_first_frame_box() -> None:
    masks = torch.zeros(1, 3, 8, 10, dtype=torch.bool)  # (B, K, H, W): an object, a row, an empty channel
    masks[0, 0, 2:5, 1:4] = True
    masks[0, 1, 7, :] = True
    init = MaskBoxInit(n_slots=4, dim=6)
    slots = init(1, conditions={"masks": masks})
    assert slots.shape == (1, 4, 6)
    boxes = torch.tensor([[2 / 8, 1 / 10, 5 / 8, 4 / 10], [7 / 8, 0.0, 1.0, 1.0]])  # (y0, x0, y1, x1)
    torch.testing.assert_close(slots[0, :2], init.encode_box(boxes))
    assert torch.equal(slots[0, 2], init.empty[0, 0]) and torch.equal(slots[0, 3], init.empty[0, 0])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda init: init(1), "needs first-frame masks"),
        (lambda init: init(1, conditions={"masks": torch.ones(1, 5, 4, 4, dtype=torch.bool)}), "n_slots=4"),
        (
            lambda init: init(1, n_slots=3, conditions={"masks": torch.ones(1, 2, 4, 4, dtype=torch.bool)}),
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
        RandomInit(n_slots=3, dim=6)(2, n_slots=0)

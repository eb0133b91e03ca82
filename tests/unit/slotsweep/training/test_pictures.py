"""Mask pictures during training (slotsweep.training.pictures): one per validation, to whichever logger runs.

A real tiny TensorBoard run here; csv and W&B runs that already train elsewhere check their pictures
with this file's helpers (test_report.py, test_wandb_offline.py).
"""

import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image

from slotsweep.contracts import ModelOutput
from slotsweep.evaluation.visualize import grid_labels, label_margin
from slotsweep.training import task
from slotsweep.training.pictures import MEDIA_KEY, first_clips

N_SLOTS, T, H = 3, 4, 64  # tests/conftest.py TINY_DATA: 4-frame 64 px validation clips


def picture_size(n_clips: int, n_slots: int, n_frames: int, side: int) -> tuple[int, int]:
    """PIL (width, height) of one validation's picture: n_clips labelled grids at scale 1, 8 px apart."""
    rows, tile = 3 + n_slots, side + 2
    width = label_margin(grid_labels("decoder", n_slots)) + n_frames * tile
    return width, n_clips * rows * tile + 8 * (n_clips - 1)


def train_run(compose_train: Callable[..., DictConfig], *overrides: str) -> Path:
    """The run dir of a completed training run."""
    cfg = compose_train(*overrides)
    task.run(cfg)
    (results,) = Path(cfg.paths.runs_dir).glob("*/seed0/results.json")
    assert json.loads(results.read_text())["status"] == "completed"
    return results.parent


def test_tensorboard_run_holds_image_summaries(compose_train: Callable[..., DictConfig]):
    """every=2 over validations at steps 2, 4, 6: steps 2 and 6; the final validation (also step 6)
    is not drawn twice. (csv: test_report.py test_run_with_visualize; W&B: test_wandb_offline.py.)"""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = train_run(
        compose_train,
        f"grouper.n_slots={N_SLOTS}",
        "logger=tensorboard",
        "val_pictures.every=2",
        "trainer.max_steps=6",
        "checkpoint_every_n_steps=6",
    )
    events = EventAccumulator(str(run_dir / "logs" / "version_0"), size_guidance={"images": 0}).Reload()
    pictures = events.Images(MEDIA_KEY)
    assert [p.step for p in pictures] == [2, 6]
    assert all((p.width, p.height) == picture_size(2, N_SLOTS, T, H) for p in pictures)
    pixels = np.asarray(Image.open(io.BytesIO(pictures[-1].encoded_image_string)).convert("RGB"))
    assert pixels[:, : label_margin(grid_labels("decoder", N_SLOTS))].min() < 64  # labels are drawn
    assert pixels.std() > 10  # frames and masks, not a blank picture
    assert "train/loss" in events.Tags()["scalars"]  # the logger logs the run's scalars too
    assert not (run_dir / "logs" / "val_pictures").exists()  # the logger took them: no PNG files


def test_first_clips_resizes_frames_to_the_masks():
    """Shards store frames at the model's input size and masks at their own: pictures need one size."""
    B, S, K = 3, 2, 4
    shades = torch.arange(B * 2, dtype=torch.uint8).reshape(B, 2, 1, 1, 1) * 40  # one grey per frame
    batch = {
        "rgb": shades.expand(B, 2, 16, 16, 3).contiguous(),
        "masks": torch.zeros(B, 2, K, 8, 8, dtype=torch.bool),
    }
    patches = torch.rand(B, 2, S, 4)  # a 2x2 patch grid
    unread = dict.fromkeys(("encoder", "slots", "slots_predicted", "grouping_masks", "reconstruction"))
    out = ModelOutput(**unread, decoder_masks=patches)  # pictures of decoder masks read only those
    pred = torch.zeros(B, 2, S, 8, 8, dtype=torch.bool)
    clips = first_clips(batch, out, pred, "decoder", n=2)
    assert len(clips) == 2
    rgb, true, masks, soft = clips[1]
    assert rgb.shape == (2, 8, 8, 3) and rgb.dtype == np.uint8
    assert (rgb[0] == 80).all() and (rgb[1] == 120).all()  # clip 1's frames, resized
    assert true.shape == (2, K, 8, 8) and masks.shape == soft.shape == (2, S, 8, 8)
    assert np.allclose(soft[:, :, 0, 0], patches[1, :, :, 0].numpy())  # bilinear: corners keep their patch
    assert len(first_clips(batch, out, pred, "decoder", n=5)) == B

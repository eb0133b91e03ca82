"""The end-of-run mask report: table, summary line, model vs baseline scores, pictures."""

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import pytest
from omegaconf import DictConfig
from PIL import Image

from slotsweep.evaluation.baselines import BASELINES, grid_segments
from slotsweep.evaluation.metrics import FGARI, MBO
from slotsweep.evaluation.visualize import grid_labels, label_margin
from slotsweep.metric_names import METRICS
from slotsweep.training import task
from slotsweep.training.report import MODEL_DECODER, MODEL_GROUPING, format_table, mask_report, write_report

REPORT = {
    MODEL_DECODER: {
        "video_fg_ari": 0.51234,
        "video_mbo": 0.25,
        "video_miou": 0.24,
        "image_fg_ari": 0.6,
        "image_mbo": 0.3,
        "image_miou": 0.29,
    },
    "grid": {
        "video_fg_ari": 0.1,
        "video_mbo": 0.125,
        "video_miou": 0.12,
        "image_fg_ari": 0.2,
        "image_mbo": math.nan,
        "image_miou": math.nan,
    },
}


def test_format_table():
    lines = format_table(REPORT).splitlines()
    assert lines[0] == "| masks | " + " | ".join(METRICS) + " |"
    assert lines[1] == "|---|" + "---:|" * len(METRICS)
    assert lines[2] == f"| {MODEL_DECODER} | 0.512 | 0.250 | 0.240 | 0.600 | 0.300 | 0.290 |"
    assert lines[3] == "| grid | 0.100 | 0.125 | 0.120 | 0.200 | nan | nan |"
    assert len(lines) == 4


def test_write_report(tmp_path: Path):
    summary = write_report(REPORT, tmp_path)
    assert summary == f"video_fg_ari=0.51 video_mbo=0.25 (grid baseline 0.10/0.12) -> {tmp_path}"
    assert (tmp_path / "report.md").read_text() == format_table(REPORT) + "\n"
    assert json.loads((tmp_path / "report.json").read_text())[MODEL_DECODER] == REPORT[MODEL_DECODER]


def _grid_size(n_rows: int, T: int, H: int, W: int, scale: int = 2, pad: int = 2) -> tuple[int, int]:
    """PIL (width, height) of clip_grid's picture: n_rows x T tiles of (H*scale+pad, W*scale+pad)
    beside the labels' margin (decoder masks, n_rows - 3 slots)."""
    margin = label_margin(grid_labels("decoder", n_rows - 3))
    return margin + T * (W * scale + pad), n_rows * (H * scale + pad)


@pytest.fixture
def untrained(compose_train: Callable[..., DictConfig]):
    """An untrained tiny model and the tiny shapes data (the report does not need a trained model)."""
    cfg = compose_train("grouper.n_slots=4")
    datamodule, module = task.build_task(cfg)
    datamodule.prepare_data()
    return cfg, datamodule, module


def test_mask_report_rows_and_pictures(untrained, tmp_path: Path):
    cfg, datamodule, module = untrained
    report = mask_report(module, datamodule, tmp_path, n_clips=3, gif=True)
    assert list(report) == [MODEL_DECODER, MODEL_GROUPING, *BASELINES]
    for row, values in report.items():
        assert list(values) == list(METRICS)
        # an adjusted Rand index dips below 0 for worse-than-chance masks (an untrained model)
        assert all((-1 if "ari" in k else 0) <= v <= 1 for k, v in values.items()), (row, values)
    T, H = cfg.dataset.n_frames, cfg.dataset.resolution
    pngs = sorted(p.name for p in (tmp_path / "masks").glob("*.png"))
    assert pngs == ["clip0.png", "clip1.png", "clip2.png"]  # 3 clips over two val batches of 2
    for name in pngs:
        with Image.open(tmp_path / "masks" / name) as image:
            assert image.size == _grid_size(3 + 4, T, H, H)  # frames, GT, prediction, 4 slot rows
    with Image.open(tmp_path / "masks" / "clip0.gif") as gif:
        assert gif.n_frames == T
        assert gif.size == (3 * H * 3, H * 3)  # frames | GT overlay | predicted overlay, 3x upscaled


def test_mask_report_without_gif(untrained, tmp_path: Path):
    _, datamodule, module = untrained
    mask_report(module, datamodule, tmp_path, n_clips=1, gif=False)
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["clip0.png"]


def test_mask_report_scores_match_validation_and_direct_baselines(untrained, tmp_path: Path):
    """The model row is what validation logs; a baseline row is its masks scored directly."""
    cfg, datamodule, module = untrained
    report = mask_report(module, datamodule, tmp_path, n_clips=0, gif=False)
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    logged = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    for name in METRICS:
        assert report[MODEL_DECODER][name] == pytest.approx(logged[f"val/{name}"], abs=1e-6)

    flags = dict(ignore_background=datamodule.ignore_background, ignore_overlaps=datamodule.ignore_overlaps)
    ari, mbo = FGARI(video=True, **flags), MBO(video=True, **flags)
    for batch in datamodule.val_dataloader():
        pred = grid_segments(batch["rgb"], cfg.grouper.n_slots)  # 4 slots -> a 2x2 grid
        ari.update(batch["masks"], pred), mbo.update(batch["masks"], pred)
    assert report["grid"]["video_fg_ari"] == pytest.approx(ari.compute().item())
    assert report["grid"]["video_mbo"] == pytest.approx(mbo.compute().item())
    assert report["one segment"]["video_fg_ari"] == pytest.approx(0.0)  # one segment: no grouping
    assert not (tmp_path / "masks" / "clip0.png").exists()  # n_clips=0: no pictures


def test_run_with_visualize(compose_train: Callable[..., DictConfig], capsys: pytest.CaptureFixture):
    """A demo-sized run with visualize: pictures, the table and the one-line summary."""
    cfg = compose_train("visualize={n_clips:2,gif:true}", "grouper.n_slots=5")
    task.run(cfg)
    out = capsys.readouterr().out.strip().splitlines()
    results = json.loads(next(Path(cfg.paths.runs_dir).glob("*/seed0/results.json")).read_text())
    run_dir = Path(results["run_dir"])
    assert results["status"] == "completed"
    rows = [MODEL_DECODER, MODEL_GROUPING, *BASELINES]
    assert set(results["mask_report"]) == set(rows)

    table = format_table({row: results["mask_report"][row] for row in rows}).splitlines()
    assert out[-len(table) - 2 : -2] == table and out[-2] == ""
    model, grid = results["mask_report"][MODEL_DECODER], results["mask_report"]["grid"]
    assert re.fullmatch(
        r"shapes: video_fg_ari=(\d\.\d\d) video_mbo=(\d\.\d\d) "
        r"\(grid baseline (\d\.\d\d)/(\d\.\d\d)\) -> (.+)",
        out[-1],
    )
    assert out[-1] == (
        f"shapes: video_fg_ari={model['video_fg_ari']:.2f} video_mbo={model['video_mbo']:.2f} "
        f"(grid baseline {grid['video_fg_ari']:.2f}/{grid['video_mbo']:.2f}) -> {run_dir}"
    )
    # the model row is the run's final validation
    assert model["video_fg_ari"] == pytest.approx(results["metrics"]["val/video_fg_ari"], abs=1e-6)

    T, H = cfg.dataset.n_frames, cfg.dataset.resolution
    masks = run_dir / "masks"
    assert sorted(p.name for p in masks.iterdir()) == ["clip0.gif", "clip0.png", "clip1.png"]
    for name in ("clip0.png", "clip1.png"):
        with Image.open(masks / name) as image:
            assert image.size == _grid_size(3 + 5, T, H, H)
            assert np.asarray(image).std() > 0  # not a blank picture
    with Image.open(masks / "clip0.gif") as gif:
        assert gif.n_frames == T
    assert (run_dir / "report.md").read_text().splitlines() == table
    # shown again (`make demo` twice): the finished run prints the same table and summary, from
    # results.json (nothing retrained or re-scored: the report files keep their times)
    written = {p: p.stat().st_mtime_ns for p in [run_dir / "report.md", *masks.iterdir()]}
    assert task.run(cfg) == pytest.approx(results["metrics"]["val/video_fg_ari"])
    again = capsys.readouterr().out.strip().splitlines()
    assert again == out[-len(table) - 2 :]
    assert {p: p.stat().st_mtime_ns for p in written} == written
    assert json.loads((run_dir / "results.json").read_text()) == results

    # the csv logger's validation pictures (slotsweep.training.pictures): steps 2 and 4 of trainer=debug, each
    # the first 2 clips' grids (at scale 1) one above the other, 8 px apart
    pictures = sorted((run_dir / "logs" / "val_pictures").iterdir())
    assert [p.name for p in pictures] == ["step_0000002.png", "step_0000004.png"]
    width, height = _grid_size(3 + 5, T, H, H, scale=1)
    for path in pictures:
        with Image.open(path) as image:
            assert image.size == (width, 2 * height + 8)


def test_demo_preset_on_a_tiny_budget(
    compose_train: Callable[..., DictConfig], capsys: pytest.CaptureFixture
):
    """`make demo`'s preset, cut to three steps: its summary line, table and pictures are written."""
    cfg = compose_train(
        "experiment=demo",
        "dataset.batch_size=4",
        "trainer.max_steps=3",
        "trainer.val_check_interval=3",
        "trainer.limit_val_batches=1",
        "visualize.n_clips=1",
    )
    assert cfg.grouper.kmeans_init_scale == 4.0  # the named non-reference option the demo relies on
    task.run(cfg)
    out = capsys.readouterr().out.strip().splitlines()
    results = json.loads(next(Path(cfg.paths.runs_dir).glob("demo-*/seed0/results.json")).read_text())
    assert results["status"] == "completed" and results["step"] == 3
    assert out[-1].startswith("demo: video_fg_ari=") and out[-1].endswith(results["run_dir"])
    T, H, S = cfg.dataset.n_frames, cfg.dataset.resolution, cfg.grouper.n_slots
    with Image.open(Path(results["run_dir"]) / "masks" / "clip0.png") as image:
        assert image.size == _grid_size(3 + S, T, H, H)
    with Image.open(Path(results["run_dir"]) / "masks" / "clip0.gif") as gif:
        assert gif.n_frames == T

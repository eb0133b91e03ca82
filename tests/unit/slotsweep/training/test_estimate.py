"""Tests of the cost forecast: its FLOPs against a counted forward + backward, its CPU time against a
measured step, and the entry point's output and errors."""

import json
import statistics
import subprocess
import sys
import time

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from slotsweep.build import build_model
from slotsweep.losses import channel_layout
from slotsweep.training import estimate

REPO_SRC = estimate.DEVICES_FILE.parents[2] / "src"


def _step(model, losses, video: torch.Tensor, optimizer: torch.optim.Optimizer | None = None) -> None:
    """One training step of the model alone: forward, the weighted losses, backward (and Adam)."""
    out = model(video=video)
    predictions = out.reconstruction.split(channel_layout(losses, model.encoder), dim=-1)
    total = sum(loss.weight * loss(p, out) for loss, p in zip(losses.values(), predictions, strict=True))
    total.backward()
    if optimizer is not None:
        optimizer.step()
        optimizer.zero_grad()


@pytest.mark.parametrize("overrides", [[], ["loss=timesim", "decoder=mlp", "grouper.n_slots=5"]])
def test_flops_match_a_counted_forward_and_backward(compose_train, overrides):
    """encoder per frame x frames + trainable per clip x clips == FlopCounterMode over a real
    forward + backward at batch 3 (attention through the math kernel, which the counter sees as
    matmuls: an independent count of what the forecast takes from the fused kernels' formulas)."""
    cfg = compose_train(*overrides)
    flops = estimate.count_flops(cfg)
    model, losses = build_model(cfg)
    B, T, S = 3, cfg.dataset.train_clip_frames, model.encoder.img_size
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        _step(model, losses, torch.randn(B, T, 3, S, S))
    predicted = B * (T * flops.encoder_per_frame + flops.trainable_per_clip)
    assert flops.encoder_per_frame > 0 and flops.trainable_per_clip > flops.trainable_forward_per_clip > 0
    assert predicted == pytest.approx(counter.get_total_flops(), rel=0.01)


def _measured_step(cfg) -> float:
    """Median seconds of 5 training steps of the model alone on random clips, after one warm-up."""
    model, losses = build_model(cfg)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad])
    S = model.encoder.img_size
    video = torch.randn(cfg.dataset.batch_size, cfg.dataset.train_clip_frames, 3, S, S)
    _step(model, losses, video, optimizer)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        _step(model, losses, video, optimizer)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def test_cpu_forecast_against_a_measured_step(compose_train):
    """Calibration: the `cpu` device's efficiency is set from a measured step of the shapes default
    (batch 32); the forecast for another size (batch 8 at 96 px: other FLOPs, another mix of
    encoder and slot work) must then land within 3x of its measured step. Both are measured in
    this test, so the machine's load cancels; the ratio, not a time, is checked."""
    calibration = compose_train("dataset.batch_size=32", "trainer.precision=32-true")
    checked = compose_train("dataset.batch_size=8", "encoder.img_size=96", "trainer.precision=32-true")
    devices = estimate.load_devices()
    cpu = devices["cpu"]
    flops = estimate.forecast(calibration, "cpu", devices=devices)
    rate = (flops.encoder_flops_per_step + flops.trainable_flops_per_step) / _measured_step(calibration)
    cpu["efficiency"] = dict.fromkeys(cpu["efficiency"], rate / (cpu["tflops"]["fp32"] * 1e12))
    predicted = estimate.forecast(checked, "cpu", devices=devices).step_seconds["fp32"]
    measured = _measured_step(checked)
    assert 1 / 3 < measured / predicted < 3, f"measured {measured:.3f} s, forecast {predicted:.3f} s"


def test_forecast_of_the_movi_c_preset_without_data():
    """`python src/estimate.py experiment=videosaur/movi_c gpu=h100 format=json`: the ViT-B/8 counts
    (156 GFLOP a frame, 512 frames a step), and the cache size of 233,688 frames x 2 views."""
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_SRC / "estimate.py"),
            "experiment=videosaur/movi_c",
            "gpu=h100",
            "format=json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    forecast = json.loads(result.stdout)
    # precision auto: an H100 has native bf16, so the run it forecasts trains in bf16-mixed
    assert forecast["frames_per_step"] == 512 and forecast["precision"] == "bf16"
    assert forecast["encoder_gflops_per_frame"] == pytest.approx(156.3, rel=0.01)
    assert forecast["encoder_flops_per_step"] == pytest.approx(512 * 156.3e9, rel=0.01)
    assert forecast["cache_bytes"]["train"] == 233_688 * 2 * 2 * 784 * 768 * 2  # frames, views, keys+features
    assert forecast["cache_bytes"]["val"] == 6000 * 2 * 784 * 768 * 2
    assert forecast["loader_bytes_per_step"] == 512 * 128 * 128 * 3
    # the loader: 5 ms per megapixel read (conf/estimate/devices.yaml), a 24-frame video per 4-frame clip
    read_ms = 5.0 * 128 * 128 / 1e6 * 24 / 4
    assert forecast["loader_cores"] == pytest.approx(forecast["loader_frames_per_s"] * read_ms / 1e3)
    assert forecast["loader_workers"] == 6  # the preset's budget (docs/datasets.md)
    assert forecast["gpu_hours"]["bf16"] < forecast["gpu_hours"]["tf32"] < forecast["gpu_hours"]["fp32"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["gpu=tpu"], "error: gpu=tpu is not a device of devices.yaml: choose from"),
        (["format=xml"], "error: format=xml is not one of ['text', 'json']"),
        (["dataset.batch_size=abc"], "error: "),
    ],
)
def test_bad_input_is_one_error_line(arguments, message):
    result = subprocess.run(
        [sys.executable, str(REPO_SRC / "estimate.py"), *arguments], capture_output=True, text=True
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1

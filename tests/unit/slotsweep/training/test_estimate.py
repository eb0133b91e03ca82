"""Tests of the cost forecast: its FLOPs against a counted forward + backward, its CPU time against a
measured step, the memory of a trial pool, and the entry point's output and errors."""

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
from slotsweep.errors import SlotsweepError
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
        (["pool_size=0"], "error: pool_size=0 must be an integer >= 1"),
    ],
)
def test_bad_input_is_one_error_line(arguments, message):
    result = subprocess.run(
        [sys.executable, str(REPO_SRC / "estimate.py"), *arguments], capture_output=True, text=True
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1


# Trial pools: memory per head and shared, the largest pool that fits, and the refusal line.


@pytest.fixture
def pool_config(compose_train):
    """A small config with the shapes of a real one: a frozen ViT, slot attention, SlotMixer."""
    return compose_train("dataset.batch_size=2", "trainer.precision=32-true")


def test_head_memory_is_weights_gradients_and_adam_states(pool_config):
    """Per head, fp32: each trainable parameter 4 bytes as weight, gradient, exp_avg and exp_avg_sq
    (16 bytes), plus Adam's one step counter per parameter tensor."""
    memory = estimate.count_memory(pool_config, "fp32")
    model, losses = build_model(pool_config)
    trainable = [p for m in (model, *losses.values()) for p in m.parameters() if p.requires_grad]
    assert memory.trainable_parameters == sum(p.numel() for p in trainable) > 0
    assert (
        16 * memory.trainable_parameters
        <= memory.head_state
        <= 16 * memory.trainable_parameters + 8 * len(trainable)
    )
    frozen = sum(
        t.numel() * t.element_size() for t in (*model.encoder.parameters(), *model.encoder.buffers())
    )
    assert memory.encoder_weights == frozen
    B, T, S = 2, pool_config.dataset.train_clip_frames, model.encoder.img_size
    assert memory.batch == B * T * 3 * S * S * 4
    P, D = model.encoder.n_patches, model.encoder.feat_dim
    # features and keys, fp32, with the CLS token's row: they are views of the encoder's (N, 1 + P, D)
    assert memory.encoder_output == 2 * B * T * (1 + P) * D * 4


def test_working_memory_holds_what_autograd_saves(pool_config):
    """An independent count: the tensors autograd saves for backward in a real forward of the
    trainable parts (storages made during the forward, weights and features left out) are all alive
    at once before backward, so one step's working memory is at least their size; and it is not
    wildly more (saved tensors, their gradients in flight, and the step's outputs)."""
    memory = estimate.count_memory(pool_config, "fp32")
    model, losses = build_model(pool_config)
    S = model.encoder.img_size
    video = torch.randn(2, pool_config.dataset.train_clip_frames, 3, S, S)
    with torch.no_grad():
        features = model.encode(video)
    before = {t.untyped_storage().data_ptr() for t in (*model.parameters(), features.features, features.keys)}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in before:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        total = estimate._training_loss(model, losses, features)
    total.backward()
    saved_bytes = sum(saved.values())
    assert saved_bytes > 0
    assert saved_bytes <= memory.head_working <= 3 * saved_bytes + memory.head_state


def test_bf16_counts_less_working_memory_than_fp32(compose_train):
    """bf16 autocast saves half-width activations (at a batch where they outweigh its bf16 copies
    of the weights)."""
    cfg = compose_train("dataset.batch_size=8")
    fp32, bf16 = (estimate.count_memory(cfg, f) for f in ("fp32", "bf16"))
    assert bf16.head_working < fp32.head_working
    assert bf16.head_state == fp32.head_state  # the weights and Adam states stay float32 under autocast


def test_pool_memory_grows_by_one_head_state_per_head_and_the_largest_fit(pool_config):
    """pool_bytes(K) = shared + K x head; largest_pool is the most heads whose total fits."""
    memory = estimate.count_memory(pool_config, "fp32")
    shared, head, _ = estimate.pool_bytes(memory, 0)
    totals = [estimate.pool_bytes(memory, k)[2] for k in range(1, 6)]
    assert [b - a for a, b in zip(totals, totals[1:], strict=False)] == [head] * 4
    assert shared == (
        memory.encoder_weights
        + memory.batch
        + memory.encoder_output
        + max(memory.encoder_working, memory.head_working)
    )
    for available in (shared - 1, shared + head - 1, shared + 3.5 * head, totals[4]):
        fits = estimate.largest_pool(memory, available)
        assert estimate.pool_bytes(memory, fits)[2] <= available or fits == 0
        assert estimate.pool_bytes(memory, fits + 1)[2] > available
    assert [estimate.largest_pool(memory, a) for a in (shared - 1, shared + 3.5 * head, totals[4])] == [
        0,
        3,
        5,
    ]


def test_pool_plan_times_and_gain(pool_config):
    """A pool step is the encoder once and each head once; the gain is K solo steps over it."""
    plan = estimate.pool_plan(pool_config, "cpu", 4)
    e, h = plan.encoder_step_seconds, plan.head_step_seconds
    assert e > 0 and h > 0 and plan.pool_step_seconds == pytest.approx(e + 4 * h)
    assert plan.gain == pytest.approx(4 * (e + h) / (e + 4 * h))
    assert 1 < plan.gain < plan.gain_limit == pytest.approx((e + h) / h)
    assert plan.pool_bytes == plan.shared_bytes + 4 * plan.head_bytes
    assert plan.largest_pool == estimate.largest_pool(plan.memory, plan.device_bytes)
    assert plan.device_bytes == pytest.approx(0.9 * plan.device_total_bytes, rel=1e-6)  # the headroom


def test_a_pool_that_does_not_fit_fails_with_one_line_naming_pool_size(pool_config):
    """check_pool_fits takes the free GiB a run measures (torch.cuda.mem_get_info): with room for
    two heads after the headroom, 2 passes and 3 is refused naming the largest that fits."""
    memory = estimate.count_memory(pool_config, "fp32")
    shared, head, _ = estimate.pool_bytes(memory, 0)
    free_gib = (shared + 2.5 * head) / 0.9 / 2**30
    assert estimate.check_pool_fits(pool_config, free_gib, 2) == memory
    with pytest.raises(SlotsweepError) as refused:
        estimate.check_pool_fits(pool_config, free_gib, 3)
    message = str(refused.value)
    assert message.startswith("hydra.sweeper.pool_size=3 needs ") and "\n" not in message
    assert message.endswith("the largest pool that fits is 2: set hydra.sweeper.pool_size=2")
    with pytest.raises(SlotsweepError, match="not even one head fits: lower dataset.batch_size"):
        estimate.check_pool_fits(pool_config, shared / 2**30, 1)
    with pytest.raises(SlotsweepError, match="pool_size=0 must be an integer >= 1"):
        estimate.check_pool_fits(pool_config, "cpu", 0)


def test_estimate_prints_the_pool_block():
    """`src/estimate.py experiment=videosaur/movi_c pool_size=4`: text and JSON."""
    arguments = [sys.executable, str(REPO_SRC / "estimate.py"), "experiment=videosaur/movi_c", "pool_size=4"]
    text = subprocess.run(arguments, capture_output=True, text=True, check=True).stdout
    assert "pool of 4 heads on NVIDIA H100 SXM 80GB, bf16" in text
    assert "memory per head: " in text and "largest pool that fits: hydra.sweeper.pool_size=" in text
    result = subprocess.run([*arguments, "format=json"], capture_output=True, text=True, check=True)
    pool = json.loads(result.stdout)["pool"]
    assert pool["pool_size"] == 4 and pool["precision"] == "bf16"
    assert pool["pool_bytes"] == pool["shared_bytes"] + 4 * pool["head_bytes"]
    assert pool["shared_bytes"] + pool["largest_pool"] * pool["head_bytes"] <= pool["device_bytes"]
    assert pool["shared_bytes"] + (pool["largest_pool"] + 1) * pool["head_bytes"] > pool["device_bytes"]
    # the reference ViT-B/8: 512 frames of float32 input, 6.3M trainable parameters
    assert pool["memory"]["batch"] == 512 * 3 * 224 * 224 * 4
    assert pool["head_bytes"] >= 16 * pool["memory"]["trainable_parameters"]
    assert pool["gain"] > 2.5  # the encoder is ~85% of a step's FLOPs


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pool_memory_against_a_pool_measured_on_cuda(compose_train):
    """The fake-tensor count against torch.cuda.max_memory_allocated: K heads on one encoder (as a
    pool shares it), its forward once, then each head's bf16 step in turn (forward,
    gradients set to None, backward, Adam: as pool.py's _head_step), two pool steps so the second
    runs at steady state. The slope from 1 to 3 heads is two heads' state; one head's pool is the
    count to within what the count leaves out (cuBLAS workspaces, the allocator's rounding)."""
    cfg = compose_train("dataset.batch_size=8", "trainer.precision=bf16-mixed")
    memory = estimate.count_memory(cfg, "bf16")

    def measured(heads: int) -> int:
        torch.cuda.empty_cache()
        start = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        built = [build_model(cfg) for _ in range(heads)]
        for model, losses in built:
            model.encoder = built[0][0].encoder
            for part in (model, *losses.values()):  # losses: a dict of modules
                part.cuda()
        optimizers = [
            torch.optim.Adam(
                [p for m in (model, *losses.values()) for p in m.parameters() if p.requires_grad]
            )
            for model, losses in built
        ]
        S = built[0][0].encoder.img_size
        video = torch.randn(cfg.dataset.batch_size, cfg.dataset.train_clip_frames, 3, S, S, device="cuda")
        for _ in range(2):
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                features = built[0][0].encode(video)
            for (model, losses), optimizer in zip(built, optimizers, strict=True):
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    total = estimate._training_loss(model, losses, features)
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
                del total
            del features
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - start
        del built, optimizers, video
        return peak

    one, three = measured(1), measured(3)
    assert 0.75 < (three - one) / (2 * memory.head_state) < 1.25
    assert 0.7 < one / estimate.pool_bytes(memory, 1)[2] < 1.5

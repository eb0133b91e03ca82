"""The reference presets (VideoSAUR, DINOSAUR, SlotContrast): the originals' hyperparameters, their
released model layouts, and two training steps + evaluation on tiny shards in the real formats
(tests/real_formats.py).

Training runs at a small input size (the ViT-B encoders on a shared 2-core CPU); the `slow` test
runs each preset's model at its true size on one small batch.
"""

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from real_formats import write_coco_shards, write_movi_shards, write_ytvis_shards
from slotsweep.build import build_datamodule, build_model
from slotsweep.data.video_transforms import frames_to_video
from slotsweep.errors import SlotsweepError
from slotsweep.evaluation.protocol import protocol_of
from slotsweep.models.weights import reference_to_local
from slotsweep.results.published import load_published
from slotsweep.runs import experiment
from slotsweep.runs.checkpoint_files import LAST_CHECKPOINT
from slotsweep.training import scoring, task
from slotsweep.training.task import build_task

CONF = Path(__file__).resolve().parents[2] / "conf"

# What every row shares unless it says otherwise (the VideoSAUR/DINOSAUR values).
SHARED = dict(
    layout="state_dict_keys.json",  # fixture file of the released key -> shape layouts
    mask_size=224,  # metric resolution
    pos_embed_size=None,  # [Q] stored position-table size when it differs from img_size
    initializer="RandomInit",
    hflip=True,
    checkpoint_every=1000,
)
# docs/methods.md: the three released SlotContrast configs, one column each.
SLOTCONTRAST = {
    "slotcontrast/movi_c": dict(
        reference="movi_c",
        exp_name="slotcontrast_movi_c",
        encoder="vit_small_patch14_dinov2.lvd142m",
        img_size=336,
        pos_embed_size=518,
        n_patches=576,
        n_slots=11,
        slot_dim=64,
        mask_channels=11,
        val_batch=16,
        lr=4e-4,
        max_steps=100_000,
        mask_size=336,
        hflip=True,
        val_protocol="videos",
    ),
    "slotcontrast/movi_e": dict(
        reference="movi_e",
        exp_name="slotcontrast_movi_e",
        encoder="vit_base_patch14_dinov2.lvd142m",
        img_size=336,
        pos_embed_size=518,
        n_patches=576,
        n_slots=15,
        slot_dim=128,
        mask_channels=24,
        val_batch=4,
        lr=4e-4,
        max_steps=300_000,
        mask_size=336,
        hflip=True,
        val_protocol="videos",
    ),
    "slotcontrast/ytvis": dict(
        reference="ytvis",
        exp_name="slotcontrast_ytvis",
        encoder="vit_base_patch14_dinov2.lvd142m",
        img_size=518,
        pos_embed_size=None,
        n_patches=1369,
        n_slots=7,
        slot_dim=64,
        mask_channels=25,
        val_batch=1,
        lr=8e-4,
        max_steps=100_000,
        mask_size=518,
        hflip=False,
        val_protocol="videos",
    ),
}
# Everything the three share (docs/methods.md).
SLOTCONTRAST_SHARED = dict(
    layout="slotcontrast/state_dict_keys_slotcontrast.json",
    initializer="FixedLearnedInit",
    n_iters=(3, 2),
    use_mlp=True,
    predictor=True,
    decoder="MLPDecoder",
    mlp_hidden=[1024] * 3,
    losses={"featrec": (1.0, None), "slotslot": (0.5, 0.1)},
    batch=64,
    warmup=2500,
    clip=0.05,
    clip_frames=4,
    val_every=2500,
    log_every=2500,
    checkpoint_every=2500,
)

# videosaur.md §4, one column per preset.
TABLE = {
    "videosaur/movi_c": dict(
        reference="configs/videosaur/movi_c.yml",
        exp_name="videosaur_movi_c",
        encoder="vit_base_patch8_224.dino",
        img_size=224,
        n_patches=784,
        n_slots=11,
        slot_dim=128,
        n_iters=(3, 2),
        use_mlp=False,
        predictor=True,
        decoder="SlotMixerDecoder",
        alloc_blocks=2,
        renderer=[1024] * 3,
        losses={"timesim": (0.1, 0.075)},
        batch=128,
        lr=4e-4,
        warmup=2500,
        decay=100_000,
        max_steps=100_000,
        clip=0.05,
        clip_frames=4,
        val_every=1000,
        log_every=500,
        val_batch=16,
        val_protocol="videos",
        mask_channels=11,
    ),
    "videosaur/movi_e": dict(
        reference="configs/videosaur/movi_e.yml",
        exp_name="videosaur_movi_e",
        encoder="vit_base_patch8_224.dino",
        img_size=224,
        n_patches=784,
        n_slots=15,
        slot_dim=128,
        n_iters=(3, 2),
        use_mlp=False,
        predictor=True,
        decoder="SlotMixerDecoder",
        alloc_blocks=2,
        renderer=[1024] * 3,
        losses={"timesim": (0.1, 0.075)},
        batch=128,
        lr=4e-4,
        warmup=2500,
        decay=100_000,
        max_steps=100_000,
        clip=0.05,
        clip_frames=4,
        val_every=1000,
        log_every=500,
        val_batch=16,
        val_protocol="videos",
        mask_channels=24,
    ),
    "videosaur/ytvis": dict(
        reference="configs/videosaur/ytvis.yml",
        exp_name="videosaur_ytvis",
        encoder="vit_base_patch16_224.dino",
        img_size=224,
        n_patches=196,
        n_slots=7,
        slot_dim=64,
        n_iters=(3, 2),
        use_mlp=False,
        predictor=True,
        decoder="SlotMixerDecoder",
        alloc_blocks=3,
        renderer=[1024] * 2,
        losses={"featrec": (1.0, None), "timesim": (0.1, 0.25)},
        batch=128,
        lr=4e-4,
        warmup=2500,
        decay=100_000,
        max_steps=100_000,
        clip=0.05,
        clip_frames=4,
        val_every=1000,
        log_every=500,
        val_batch=16,
        val_protocol="chunks",
        mask_channels=25,
    ),
    "videosaur/ytvis_dinov2": dict(
        reference="configs/videosaur/ytvis_dinov2.yml",
        exp_name="videosaur_ytvis_dinov2",
        encoder="vit_base_patch14_dinov2.lvd142m",
        img_size=518,
        n_patches=1369,
        n_slots=7,
        slot_dim=64,
        n_iters=(3, 2),
        use_mlp=False,
        predictor=True,
        decoder="SlotMixerDecoder",
        alloc_blocks=3,
        renderer=[1024] * 2,
        losses={"featrec": (1.0, None), "timesim": (0.1, 0.15)},
        batch=64,
        lr=2e-4,
        warmup=2500,
        decay=100_000,
        max_steps=100_000,
        clip=0.05,
        clip_frames=4,
        val_every=1000,
        log_every=500,
        val_batch=16,
        val_protocol="chunks",
        mask_channels=25,
    ),
    "dinosaur/coco_dinov2": dict(
        reference="configs/dinosaur/coco_base14_dinov2.yml",
        exp_name="dinosaur_coco_dinov2",
        encoder="vit_base_patch14_dinov2.lvd142m",
        img_size=224,
        n_patches=256,
        n_slots=7,
        slot_dim=256,
        n_iters=(3, 3),
        use_mlp=True,
        predictor=False,
        decoder="MLPDecoder",
        mlp_hidden=[2048] * 3,
        losses={"featrec": (1.0, None)},
        batch=64,
        lr=4e-4,
        warmup=10_000,
        decay=100_000,
        max_steps=500_000,
        clip=1.0,
        clip_frames=1,
        val_every=2500,
        log_every=200,
        val_batch=64,
        val_protocol="videos",
        mask_channels=63,
        pos_embed_size=518,
    ),
}
TABLE = {name: SHARED | row for name, row in TABLE.items()}
TABLE |= {
    name: SHARED | SLOTCONTRAST_SHARED | row | dict(decay=row["max_steps"])  # decay = max_steps
    for name, row in SLOTCONTRAST.items()
}
PRESETS = list(TABLE)
# Their two-step trainings run in make test-all only (CI time): each shares its code path with a
# preset that make test trains (videosaur/movi_c, slotcontrast/movi_c), and its keys are checked by
# the tests above.
TWO_STEPS_HEAVY = {
    "videosaur/movi_e",
    "videosaur/ytvis",
    "videosaur/ytvis_dinov2",
    "dinosaur/coco_dinov2",
    "slotcontrast/movi_e",
    "slotcontrast/ytvis",
}

# Where each preset's dataset lives in the fixture data root, and its shard count there.
FIXTURE_SHARDS = {
    "videosaur/movi_c": (
        "movi_c/movi_c-train-{000000..000001}.tar",
        "movi_c/movi_c-validation-{000000..000001}.tar",
    ),
    "videosaur/movi_e": (
        "movi_e/movi_e-train-{000000..000001}.tar",
        "movi_e/movi_e-validation-{000000..000001}.tar",
    ),
    "videosaur/ytvis": (
        "ytvis2021_resized/ytvis-train-{000000..000002}.tar",
        "ytvis2021_resized/ytvis-validation-{000000..000002}.tar",
    ),
    "videosaur/ytvis_dinov2": (
        "ytvis2021_resized_518/ytvis-train-{000000..000002}.tar",
        "ytvis2021_resized_518/ytvis-validation-{000000..000002}.tar",
    ),
    "dinosaur/coco_dinov2": (
        "coco/coco-train-{000000..000002}.tar",
        "coco/coco-validation-{000000..000002}.tar",
    ),
}
FIXTURE_SHARDS |= {  # SlotContrast reads the same shards (YT-VIS: the 320-px folder, at input 518)
    "slotcontrast/movi_c": FIXTURE_SHARDS["videosaur/movi_c"],
    "slotcontrast/movi_e": FIXTURE_SHARDS["videosaur/movi_e"],
    "slotcontrast/ytvis": FIXTURE_SHARDS["videosaur/ytvis"],
}


@pytest.fixture(scope="module")
def fixture_data(tmp_path_factory) -> Path:
    """Every preset's dataset, a few samples each, at its real stored size (MOVi: 24 x 128 x 128)."""
    root = tmp_path_factory.mktemp("real_data")
    for variant in ("movi_c", "movi_e"):
        write_movi_shards(root, variant, n_train=4, n_val=3, per_shard=2)
    write_ytvis_shards(root, "ytvis2021_resized", short_side=40)
    write_ytvis_shards(root, "ytvis2021_resized_518", short_side=52)
    write_coco_shards(root)
    return root


def compose_on_fixtures(compose_train, preset: str, data_dir: Path, *overrides: str) -> DictConfig:
    """The preset reading the fixture shards, with random encoder weights (no hub in tests)."""
    train, val = FIXTURE_SHARDS[preset]
    shards = [f"dataset.train_shards='{train}'", f"dataset.val_shards='{val}'"]
    cfg = compose_train(f"experiment={preset}", *shards, "encoder.pretrained=false", *overrides, debug=False)
    cfg.paths.data_dir = str(data_dir)  # compose_train points it at an empty session dir
    return cfg


def test_every_preset_is_in_the_table():
    """Every reference preset (conf/experiment/videosaur/, dinosaur/, slotcontrast/) has a row;
    `demo` is ours."""
    found = sorted(
        p.relative_to(CONF / "experiment").with_suffix("").as_posix()
        for folder in ("videosaur", "dinosaur", "slotcontrast")
        for p in (CONF / "experiment" / folder).glob("*.yaml")
    )
    assert found == sorted(PRESETS)
    for preset in PRESETS:
        lines = (CONF / "experiment" / f"{preset}.yaml").read_text().splitlines()
        assert lines[0] == "# @package _global_"  # Hydra reads the header before any other comment
        assert lines[1] == f"# python src/train.py experiment={preset}"


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_has_the_reference_hyperparameters(compose_train: Callable[..., DictConfig], preset: str):
    cfg = compose_train(f"experiment={preset}", debug=False)
    want = TABLE[preset]
    assert cfg.exp_name == want["exp_name"]
    assert cfg.encoder.model_name == want["encoder"] and cfg.encoder.img_size == want["img_size"]
    assert cfg.encoder.pretrained and cfg.encoder.frozen and cfg.encoder.block is None  # block 12
    assert cfg.dataset.input_size == want["img_size"] and cfg.dataset.mask_size == want["mask_size"]
    assert cfg.encoder.pos_embed_size == want["pos_embed_size"]  # [Q] a 37x37 table resampled
    assert cfg.dataset.hflip == want["hflip"]
    g = cfg.grouper
    initializer = g.get("initializer")  # absent: the grouper's own RandomInit
    assert (initializer._target_.rsplit(".", 1)[1] if initializer else "RandomInit") == want["initializer"]
    assert (g.n_slots, g.slot_dim, (g.n_iters_first, g.n_iters), g.use_mlp) == (
        want["n_slots"],
        want["slot_dim"],
        want["n_iters"],
        want["use_mlp"],
    )
    assert g.gru_on_normed_slots and g.eps == 1e-8
    if want["predictor"]:
        p = cfg.predictor
        assert (p.n_blocks, p.n_heads, p.mlp_ratio, p.qkv_bias, p.inverted_scale) == (1, 4, 4.0, True, True)
    else:
        assert cfg.predictor._target_ == "torch.nn.Identity"
    assert cfg.decoder._target_.endswith(want["decoder"])
    if want["decoder"] == "SlotMixerDecoder":
        d = cfg.decoder
        assert (d.n_blocks, list(d.renderer_hidden_dims), d.renderer_dim) == (
            want["alloc_blocks"],
            want["renderer"],
            1024,
        )
        assert d.n_heads == 4 and d.inverted_scale
    else:
        assert list(cfg.decoder.hidden_dims) == want["mlp_hidden"]
    assert {name: (loss.weight, loss.get("temperature")) for name, loss in cfg.loss.items()} == want["losses"]
    if "slotslot" in cfg.loss:  # the original's form: per-device batch negatives, positive included
        ss = cfg.loss.slotslot
        assert (ss.batch_contrast, ss.direction, ss.include_positive, ss.gather_negatives) == (
            True,
            "next_to_prev",
            True,
            False,
        )
    assert all(loss.offset == 1 and loss.threshold == 0.0 for loss in cfg.loss.values() if "offset" in loss)
    lr = cfg.optim.base_lr * cfg.dataset.batch_size / cfg.optim.reference_batch_size  # lr scaling rule
    assert cfg.dataset.batch_size == want["batch"] and lr == pytest.approx(want["lr"])
    assert (cfg.optim.warmup_steps, cfg.optim.decay_steps) == (want["warmup"], want["decay"])
    assert (cfg.optim.weight_decay, list(cfg.optim.betas), cfg.optim.eps) == (0.0, [0.9, 0.999], 1e-8)
    t = cfg.trainer
    assert (t.max_steps, t.gradient_clip_val, t.val_check_interval, t.log_every_n_steps) == (
        want["max_steps"],
        want["clip"],
        want["val_every"],
        want["log_every"],
    )
    # auto: bf16-mixed on a bf16 GPU, 32-true elsewhere; strict_fp32=true gives the reference's plain fp32
    assert (t.precision, cfg.strict_fp32) == ("auto", False)
    assert cfg.checkpoint_every_n_steps == want["checkpoint_every"]
    d = cfg.dataset
    assert (d.train_clip_frames, d.val_batch_size) == (want["clip_frames"], want["val_batch"])
    assert (d.val_protocol, d.n_mask_channels) == (want["val_protocol"], want["mask_channels"])
    if d.val_protocol == "chunks":
        assert d.val_chunk_frames == 6


# Loader workers per GPU (docs/datasets.md, "Loader budget per GPU"): what an H100 in bf16 needs
# (estimate) at the CPU cost per frame benchmarks/bench_input.py measured, x1.5, and enough for a
# validation within 5% of the training between two, capped at what slurm_gpu's cores leave.
LOADER_WORKERS = {
    "videosaur/movi_c": 6,
    "videosaur/movi_e": 6,
    "videosaur/ytvis": 14,
    "videosaur/ytvis_dinov2": 14,
    "dinosaur/coco_dinov2": 10,
    "slotcontrast/movi_c": 7,
    "slotcontrast/movi_e": 4,
    "slotcontrast/ytvis": 9,
}


def test_preset_workers_are_the_budget_and_fit_the_slurm_gpu_cores(compose_train: Callable[..., DictConfig]):
    """Every preset's dataset.num_workers is its budget, and slurm_gpu's cpus_per_task (per GPU) holds
    them plus the training process and its pin-memory thread."""
    assert sorted(LOADER_WORKERS) == sorted(PRESETS)
    launcher = OmegaConf.load(CONF / "hydra" / "launcher" / "slurm_gpu.yaml")
    for preset, workers in LOADER_WORKERS.items():
        dataset = compose_train(f"experiment={preset}", debug=False).dataset
        assert (preset, dataset.num_workers, dataset.prefetch_factor) == (preset, workers, 2)
        assert dataset.num_workers + 2 <= launcher.cpus_per_task, preset


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_model_has_the_released_checkpoint_layout(compose_train, reference, preset: str):
    """Loading the released checkpoint needs these names and shapes (fixtures/state_dict_keys.json,
    slotcontrast/state_dict_keys_slotcontrast.json)."""
    expected = reference(TABLE[preset]["layout"])[TABLE[preset]["reference"]]
    model, _ = build_model(compose_train(f"experiment={preset}", "encoder.pretrained=false", debug=False))
    assert model.encoder.n_patches == TABLE[preset]["n_patches"]
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    del model
    theirs = {k: torch.empty(shape, device="meta") for k, shape in expected["keys"].items()}
    assert {k: tuple(v.shape) for k, v in reference_to_local(theirs).items()} == ours
    assert trainable == expected["n_trainable_params"]


# The method whose published rows belong beside each preset's runs (conf/baselines/published.yaml).
METHODS = {"videosaur": "VideoSAUR", "dinosaur": "DINOSAUR", "slotcontrast": "SlotContrast"}


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_protocol_is_its_published_rows(compose_train: Callable[..., DictConfig], preset: str):
    """A preset's validation is stamped with the protocol its paper's numbers were measured under
    (SlotContrast: whole videos, masks at the input size), so aggregate.py puts them side by side."""
    cfg = compose_train(f"experiment={preset}", debug=False)
    # the datamodule's declared facts: the dataset, frames, mask size and mask conventions
    protocol = protocol_of(build_datamodule(cfg.dataset), cfg.grouper.n_slots)
    assert protocol.mask_size == TABLE[preset]["mask_size"]
    method = METHODS[preset.split("/")[0]]
    rows = [
        row for row in load_published() if row.name.startswith(method) and row.matches(protocol.as_dict())
    ]
    assert rows, (preset, protocol.describe())  # (rows state no encoder: YT-VIS chunks has two)
    assert all(row.protocol["mask_size"] == TABLE[preset]["mask_size"] for row in rows)


def _eval_config(ckpt: Path, *overrides: str) -> DictConfig:
    GlobalHydra.instance().clear()
    listed = ",".join(f'"{o}"' for o in overrides)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("eval", overrides=[f"ckpt={ckpt}", "accelerator=cpu", f"overrides=[{listed}]"])


@pytest.mark.parametrize(
    "preset", [pytest.param(p, marks=pytest.mark.heavy) if p in TWO_STEPS_HEAVY else p for p in PRESETS]
)
def test_preset_trains_two_steps_and_evaluates(compose_train, fixture_data: Path, preset: str):
    small = 28 if "dinov2" in TABLE[preset]["encoder"] else 32  # 2x2 patches: the ViT-B blocks stay cheap
    cfg = compose_on_fixtures(
        compose_train,
        preset,
        fixture_data,
        "trainer=debug",
        f"encoder.img_size={small}",
        "dataset.mask_size=16",
        "dataset.batch_size=2",
        "dataset.val_batch_size=2",
        "dataset.num_workers=0",
        "dataset.shuffle_size=4",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "trainer.log_every_n_steps=1",
        "trainer.limit_val_batches=null",
        "checkpoint_every_n_steps=2",
        "logger=none",
    )
    objective = task.run(cfg)
    run_dir = experiment.run_dir(cfg, experiment.experiment_id(cfg))
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed" and results["step"] == 2
    assert results["exp_id"].startswith(TABLE[preset]["exp_name"] + "-")
    assert results["config"]["dataset"]["val_protocol"] == TABLE[preset]["val_protocol"]
    for key in ("val/video_fg_ari", "val/video_mbo", "val/image_fg_ari", "val/image_mbo"):
        assert 0 <= results["metrics"][key] <= 1, key
    assert objective == results["metrics"][cfg.objective[0]]

    (record,) = scoring.evaluate(_eval_config(run_dir / LAST_CHECKPOINT))
    assert record["protocol"] == results["protocol"]  # the run's own validation, stamped alike
    evaluated = record["metrics"]
    for key, value in results["metrics"].items():
        if key.startswith("val/") and "loss" not in key:
            assert evaluated[key] == pytest.approx(value, abs=1e-5), key  # same weights, data, seed
    if cfg.dataset.val_protocol == "chunks":  # YT-VIS: also score whole videos, as later papers do
        (whole,) = scoring.evaluate(_eval_config(run_dir / LAST_CHECKPOINT, "dataset.val_protocol=videos"))
        assert (results["protocol"]["frames"], whole["protocol"]["frames"]) == (
            "chunks of 6 frames",
            "whole videos",
        )
        videos = whole["metrics"]
        assert all(0 <= videos[key] <= 1 for key in ("val/video_fg_ari", "val/video_mbo"))
        assert videos["val/video_fg_ari"] != evaluated["val/video_fg_ari"]  # other clips, other score
    if "slotslot" in cfg.loss:  # validated on the same whole clips as the metrics
        assert 0 < results["metrics"]["val/slotslot"] < math.inf
        # re-scored under another method's mask size: stamped with the size it was scored at
        (other,) = scoring.evaluate(_eval_config(run_dir / LAST_CHECKPOINT, "dataset.mask_size=32"))
        assert (results["protocol"]["mask_size"], other["protocol"]["mask_size"]) == (16, 32)
        assert 0 <= other["metrics"]["val/video_fg_ari"] <= 1
    if TABLE[preset]["initializer"] == "FixedLearnedInit":  # the learned count is the only one
        eval_cfg = _eval_config(run_dir / LAST_CHECKPOINT)
        eval_cfg.n_slots = 5
        with pytest.raises(SlotsweepError, match=r"n_slots=5: this model learned exactly \d+ initial slots"):
            scoring.evaluate(eval_cfg)


@pytest.mark.heavy
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_runs_at_its_true_size(compose_train, fixture_data: Path, preset: str):
    """The reference's input size and patch grid: one train clip and one validation chunk."""
    video = TABLE[preset]["clip_frames"] > 1
    cfg = compose_on_fixtures(
        compose_train,
        preset,
        fixture_data,
        "dataset.batch_size=1",
        "dataset.val_batch_size=1",
        "dataset.num_workers=0",
        "dataset.shuffle_size=1",
        *(
            ["dataset.train_clip_frames=2", "dataset.val_protocol=chunks", "dataset.val_chunk_frames=2"]
            if video
            else []
        ),
    )
    datamodule, module = build_task(cfg)
    datamodule.setup("fit")
    T, S, P = (2 if video else 1), TABLE[preset]["n_slots"], TABLE[preset]["n_patches"]
    train = frames_to_video(next(iter(datamodule.train_dataloader())))
    assert train["video"].shape == (1, T, 3, TABLE[preset]["img_size"], TABLE[preset]["img_size"])
    with torch.no_grad():
        out = module.model(video=train["video"])
        losses = module.compute_losses(out)
        val = next(iter(datamodule.val_dataloader()))
        _, pred = module.predict_masks(val)
    assert out.decoder_masks.shape == (1, T, S, P)
    assert torch.isfinite(losses["loss"])
    size = TABLE[preset]["mask_size"]
    assert val["masks"].shape == (1, T, TABLE[preset]["mask_channels"], size, size)
    assert pred.shape == (1, T, S, size, size) and (pred.sum(dim=2) == 1).all()
    assert isinstance(instantiate(cfg.optim), type(module.optim))


def test_encoder_and_dataset_options_compose_into_a_dinov2_ytvis_run(compose_train, fixture_data: Path):
    """python src/train.py encoder=dinov2 dataset=ytvis: the input follows the encoder, masks stay at 224."""
    cfg = compose_train("encoder=dinov2", "dataset=ytvis", "encoder.pretrained=false", debug=False)
    assert (cfg.dataset.input_size, cfg.dataset.mask_size, cfg.dataset.val_protocol) == (518, 224, "chunks")
    model, losses = build_model(cfg)
    assert model.encoder.n_patches == 37 * 37
    assert sum(loss.n_channels(768, 37 * 37) for loss in losses.values()) == 768 + 1369  # featrec | timesim
    cfg.paths.data_dir = str(fixture_data)
    cfg.dataset.val_shards = FIXTURE_SHARDS["videosaur/ytvis"][1]
    cfg.dataset.val_batch_size = 1
    datamodule = build_datamodule(cfg.dataset)
    datamodule.setup("validate")
    batch = next(iter(datamodule.val_dataloader()))  # 40-pixel shards upsampled to the encoder's 518
    assert batch["video"].shape == (1, 6, 3, 518, 518) and batch["masks"].shape == (1, 6, 25, 224, 224)


@pytest.mark.parametrize("preset", PRESETS)
def test_released_checkpoint_loads_into_the_preset(compose_train, reference, tmp_path: Path, preset: str):
    """load_weights=<the released Lightning .ckpt>: every tensor of the reference's layout lands in
    the preset's model (random distinct values, so a tensor left out or loaded twice would show)."""
    layout = reference(TABLE[preset]["layout"])[TABLE[preset]["reference"]]["keys"]
    generator = torch.Generator().manual_seed(0)
    state = {name: torch.randn(shape, generator=generator) for name, shape in layout.items()}
    ckpt = tmp_path / "videosaur.ckpt"
    torch.save({"state_dict": state, "global_step": 100_000, "pytorch-lightning_version": "1.8.4"}, ckpt)
    cfg = compose_train(
        f"experiment={preset}", "encoder.pretrained=false", f"load_weights={ckpt}", debug=False
    )
    model, _ = build_model(cfg)  # checks the names and shapes, then loads
    loaded = sorted(_fingerprint(t) for t in model.state_dict().values())
    assert loaded == sorted(_fingerprint(t) for t in state.values())


def _fingerprint(tensor: torch.Tensor) -> tuple:
    return tuple(tensor.shape), round(float(tensor.double().sum()), 4)

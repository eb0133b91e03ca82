"""The feature cache on reference-format shards: steps/s cached vs encoder in the loop, build per clip.

Run: `.venv/bin/python benchmarks/bench_shard_cache.py` (about 4 min on 2 loaded cores). The preset
`experiment=videosaur/ytvis` with a random ViT-B/16 (224 px, 196 patches), a small batch, reading
YT-VIS shards in the reference's format (`video.npy` (T, 320, 569, 3) uint8: the short side at 320
as the reference's export, 16:9 frames) written into a temporary data root. The cache needs a
finite set of crops (`dataset.train_crops=3`), which the in-the-loop run uses too, so both runs
train on the same batches. Prints one Markdown table and writes benchmarks/results/shard_cache.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from _common import compose_train, time_training_steps, write_table

from slotsweep.data.shards import write_shards

FRAME_SIZE = (320, 569)  # YT-VIS as the reference stores it: short side 320, 16:9
N_TRAIN, TRAIN_FRAMES = 4, 8  # videos; frames each (the train chunk is 4 frames)
N_VAL, VAL_FRAMES = 1, 6  # one validation chunk
OVERRIDES = [
    "experiment=videosaur/ytvis",
    "encoder.pretrained=false",
    "logger=none",
    "dataset.train_shards='ytvis2021_resized/ytvis-train-{000000..000001}.tar'",
    "dataset.val_shards='ytvis2021_resized/ytvis-validation-{000000..000000}.tar'",
    "dataset.train_crops=3",
    "dataset.batch_size=2",  # small: the reference's 128 is a GPU's batch
    "dataset.shuffle_size=4",
    "dataset.num_workers=0",
]
N_STEPS = 3  # timed steps; one takes seconds with the encoder in the loop


def write_ytvis_shards(data_dir: Path) -> None:
    """Random videos (and val masks) in the reference's YT-VIS shard format."""
    rng = np.random.default_rng(0)
    H, W = FRAME_SIZE
    for split, n, n_frames in [("train", N_TRAIN, TRAIN_FRAMES), ("validation", N_VAL, VAL_FRAMES)]:
        samples = []
        for i in range(n):
            sample = {
                "__key__": f"video{i:04d}",
                "video.npy": rng.integers(0, 256, (n_frames, H, W, 3), np.uint8),
            }
            if split == "validation":  # two instances, categories 3 and 7
                masks = np.zeros((n_frames, H, W, 2), np.uint8)
                masks[:, : H // 2, : W // 2, 0], masks[:, H // 2 :, W // 2 :, 1] = 3, 7
                sample["segmentations.npy"] = masks
            samples.append(sample)
        write_shards(samples, str(data_dir / "ytvis2021_resized" / f"ytvis-{split}-%06d.tar"), per_shard=2)


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    with tempfile.TemporaryDirectory(prefix="slotsweep-bench-shards-") as tmp:
        data_dir, features_dir = Path(tmp) / "data", Path(tmp) / "features"
        write_ytvis_shards(data_dir)
        in_loop = time_training_steps(compose_train(*OVERRIDES, data_dir=data_dir), N_STEPS)
        cfg = compose_train(*OVERRIDES, "cache=true", f"paths.features_dir={features_dir}", data_dir=data_dir)
        cached = time_training_steps(cfg, N_STEPS)
        builds = [json.loads(p.read_text()) for p in sorted(features_dir.glob("*/manifest.json"))]
    n_clips = sum(b["n_clips"] for b in builds)
    n_encoded = sum(b["shape"][0] * b["shape"][1] for b in builds)  # frames x views
    build_s = sum(b["build_seconds"] for b in builds)
    V = cfg.dataset.train_crops * 2  # crops x flips
    per_train_clip = build_s / n_encoded * TRAIN_FRAMES * V
    row = (
        f"| videosaur/ytvis, random ViT-B/16, 224 px, batch {cfg.dataset.batch_size} x "
        f"{cfg.dataset.train_clip_frames} frames | {in_loop.steps_per_s:.3f} | {cached.steps_per_s:.2f} | "
        f"**{cached.steps_per_s / in_loop.steps_per_s:.1f}x** | "
        f"{in_loop.cpu_per_step / cached.cpu_per_step:.1f}x | {build_s:.0f} s for {n_clips} clips "
        f"({n_encoded} frame-views) | {per_train_clip:.1f} s ({TRAIN_FRAMES} frames x {V} views) |"
    )
    table = "\n".join(
        [
            "# The feature cache on reference-format shards (YT-VIS)",
            "",
            "Lightning training steps on CPU (forward, backward, clipping, Adam, data loading), fp32, of "
            "the preset `experiment=videosaur/ytvis encoder.pretrained=false` reading YT-VIS shards in the "
            f"reference's format ({FRAME_SIZE[0]}x{FRAME_SIZE[1]} frames; {N_TRAIN} train videos of "
            f"{TRAIN_FRAMES} frames, {N_VAL} validation video of {VAL_FRAMES}), `dataset.train_crops=3` "
            "in both runs. Encoder in the loop: the shards are decoded, resized, cropped and encoded "
            "every step; cached (`cache=true`): the train stream reads the float16 outputs of the "
            "drawn window, crop and flip and opens no shard. Steps/s from the fastest of "
            f"{N_STEPS} timed steps; CPU speedup from the CPU time per step. Build: encoding every "
            "view of every frame of both splits once (from the manifests' build_seconds); per train "
            "clip: the build time per encoded frame-view times a train clip's frames x views.",
            "",
            "| setup | encoder in the loop (steps/s) | cached (steps/s) | speedup | CPU speedup | "
            "cache build | build per train clip |",
            "|---|---|---|---|---|---|---|",
            row,
        ]
    )
    print(table)
    print(f"\nwritten to {write_table('shard_cache', table)}")


if __name__ == "__main__":
    main()

"""Train-loader CPU cost per frame for each preset: the float path vs the uint8 path, vs an H100's pace.

Run: `.venv/bin/python benchmarks/bench_input.py` (about 3 min on 2 loaded cores; `--rounds`).
Shards in the reference's format at each preset's stored frame size are written to a temp dir.
Two ways to make a train batch from them, timed in alternating rounds on one thread:

- float path (how the loader worked before the GPU-side transform): decode the whole stored
  video, cut the clip, resize / crop / flip / normalise it to float32 on the CPU, collate floats;
- uint8 path (the loader now, `TrainClips`): read the clip's frames alone from the .npy bytes,
  collate them as uint8 with the drawn views; the resize runs on the training device.

Prints one Markdown table and writes it to benchmarks/results/loader_presets.md. The frames/s
an H100 consumes come from `python src/estimate.py` (bf16, an estimate, not a measurement).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import REPO, write_table
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from torch.utils.data import default_collate

from slotsweep.build import build_datamodule
from slotsweep.data.shards import TrainClips, read_samples, write_shards
from slotsweep.data.streams import chunk_starts
from slotsweep.data.video_transforms import frames_to_video
from slotsweep.training import estimate

# preset -> (stored frames per video, height, width); one split of videos in the real format
PRESETS = {
    "videosaur/movi_c": (24, 128, 128),
    "videosaur/ytvis": (30, 320, 568),
    "videosaur/ytvis_dinov2": (30, 518, 921),
    "dinosaur/coco_dinov2": (1, 480, 640),
}
N_VIDEOS = 8
CLIPS_PER_ROUND = 16


def preset_config(preset: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"experiment={preset}", "encoder.pretrained=false"])


def write_preset_shards(root: Path, frames_key: str, T: int, H: int, W: int) -> list[Path]:
    """Two shards of random videos (T, H, W, 3) (images: (H, W, 3)) in the reference's format."""
    rng = np.random.default_rng(0)
    shape = (H, W, 3) if frames_key == "image" else (T, H, W, 3)
    samples = (
        {"__key__": f"v{i:04d}", f"{frames_key}.npy": rng.integers(0, 256, shape, np.uint8)}
        for i in range(N_VIDEOS)
    )
    return write_shards(samples, str(root / "train-%06d.tar"), per_shard=N_VIDEOS // 2)


def float_path(datamodule, paths: list[Path], n_clips: int, rng: random.Random) -> int:
    """The float path: whole decode, CPU transform per clip, float collate. Returns frames made."""
    layout, transform, T = datamodule.layout, datamodule.transform, datamodule.train_clip_frames
    clips = []
    while len(clips) < n_clips:
        for sample in read_samples(paths, (layout.frames_key,)):
            frames = layout.to_frames(sample[layout.frames_key])  # the whole video, decoded
            start = rng.choice(chunk_starts(len(frames), T))
            drawn = transform.train(frames[start : start + T].copy(), rng)
            batch = {"frames": drawn["frames"][None], "views": [drawn["view"]]}
            clips.append({"video": frames_to_video(batch)["video"][0]})  # resized on the CPU
            if len(clips) == n_clips:
                break
    return default_collate(clips)["video"].shape[:2].numel()


def uint8_path(datamodule, paths: list[Path], n_clips: int, iterator_box: list) -> int:
    """The uint8 path: the shipped TrainClips stream (header-sliced reads, uint8 collate)."""
    if not iterator_box:
        clips = TrainClips(
            paths, datamodule.layout, datamodule.transform, datamodule.train_clip_frames, 4, n_clips
        )
        iterator_box.append(iter(clips))
    batch = next(iterator_box[0])
    return batch["frames"].shape[:2].numel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds per path and preset")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one loader worker = one core, one thread
    rows = []
    with tempfile.TemporaryDirectory(prefix="slotsweep-bench-input-") as tmp:
        for preset, (T, H, W) in PRESETS.items():
            cfg = preset_config(preset)
            datamodule = build_datamodule(cfg.dataset)
            folder = Path(tmp) / preset.replace("/", "_")
            paths = write_preset_shards(folder, datamodule.layout.frames_key, T, H, W)
            rng, box = random.Random(0), []
            float_path(datamodule, paths, 2, rng)  # warm-up: page cache, allocator
            uint8_path(datamodule, paths, CLIPS_PER_ROUND, box)
            times: dict[str, list[float]] = {"float": [], "uint8": []}
            for _ in range(args.rounds):  # alternating rounds: both paths see the same machine load
                for name in times:
                    start = time.perf_counter()
                    if name == "float":
                        n = float_path(datamodule, paths, CLIPS_PER_ROUND, rng)
                    else:
                        n = uint8_path(datamodule, paths, CLIPS_PER_ROUND, box)
                    times[name].append((time.perf_counter() - start) * 1e3 / n)
            forecast = estimate.forecast(cfg, "h100")
            consumed = forecast.frames_per_step / forecast.step_seconds["bf16"]
            ms = {name: statistics.median(values) for name, values in times.items()}
            spread = {name: f"{min(v):.2f}-{max(v):.2f}" for name, v in times.items()}
            per_core = 1e3 / ms["uint8"]
            rows.append(
                f"| {preset} | {W}x{H} | {ms['float']:.2f} ({spread['float']}) | {ms['uint8']:.2f} "
                f"({spread['uint8']}) | **{ms['float'] / ms['uint8']:.0f}x** | {per_core:.0f} | "
                f"{consumed:.0f} | {consumed / per_core:.1f} |"
            )
            print(rows[-1], flush=True)
    table = "\n".join(
        [
            "# Train loader: CPU ms per frame, float path vs uint8 path, per preset",
            "",
            f"Reference-format shards of {N_VIDEOS} random videos at each preset's stored size (MOVi "
            "128x128; YT-VIS short side 320 / 518 and 16:9; COCO 480x640), one thread, batches of "
            f"{CLIPS_PER_ROUND} clips of the preset's clip length, {args.rounds} alternating rounds "
            "per path; median ms per frame (min-max). Float path: the whole video decoded, the clip "
            "resized/cropped/flipped/normalised to float32 on the CPU, floats collated (the loader "
            "before the device-side transform). uint8 path: `TrainClips` as shipped (the clip's "
            "frames read alone from the .npy bytes, uint8 collate; resize, flip and normalise run "
            "on the training device). frames/s per core: 1000 / uint8 ms, on THIS CPU (a dedicated "
            "server core is perhaps 1.5-2.5x faster). H100 frames/s: what `src/estimate.py` says a "
            "bf16 step consumes (an ESTIMATE, no GPU measured); cores = H100 frames/s / per core.",
            "",
            "| preset | stored WxH | float path ms/frame | uint8 path ms/frame | less CPU "
            "| frames/s per core (uint8, CPU) | H100 bf16 frames/s (estimate) | cores needed |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(table)
    print(f"\nwritten to {write_table('loader_presets', table)}")


if __name__ == "__main__":
    main()

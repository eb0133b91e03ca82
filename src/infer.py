"""Segment any video with a checkpoint: python src/infer.py ckpt=<ckpt> video=<file or frame folder>."""

import hydra
from omegaconf import DictConfig

from slotsweep.cli import report_errors, require_paths


@report_errors  # outermost: errors from Hydra itself become one line too
@hydra.main(version_base="1.3", config_path="../conf", config_name="infer")
def main(cfg: DictConfig) -> None:
    require_paths(  # before torch: a mistyped path is answered in a second
        cfg,
        {
            "ckpt": "a checkpoint file (<run_dir>/checkpoints/last.ckpt)",
            "config": "a training config.yaml",
            "video": "a video file or a folder of frames",
        },
    )
    from slotsweep.evaluation.inference import run_inference  # torch: not needed for --help or a config error

    out = run_inference(cfg)
    print(f"infer: wrote {out / 'overlay.mp4'} and {out / 'masks.npz'}")


if __name__ == "__main__":
    main()

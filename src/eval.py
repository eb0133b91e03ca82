"""Score checkpoints: python src/eval.py ckpt=<run_dir>/checkpoints/last.ckpt | runs=<runs or sweep dir>."""

import hydra
from omegaconf import DictConfig

from slotsweep.cli import report_errors, require_paths


@report_errors  # outermost: errors from Hydra itself become one line too
@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> list[dict]:
    require_paths(  # before torch: a mistyped path is answered in a second
        cfg,
        {
            "ckpt": "a checkpoint file (<run_dir>/checkpoints/last.ckpt)",
            "runs": "a runs or sweep dir",
            "config": "a training config.yaml",
        },
    )
    from slotsweep.training import scoring  # torch and Lightning: not needed for --help or a config error

    return scoring.evaluate(cfg)


if __name__ == "__main__":
    main()

"""Evaluate a checkpoint: python src/eval.py ckpt=<run_dir>/checkpoints/last.ckpt [n_slots=K]."""

import hydra
from omegaconf import DictConfig

from slotsweep.cli import report_errors


@report_errors  # outermost: errors from Hydra itself become one line too
@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> dict[str, float]:
    from slotsweep import training  # torch and Lightning: not needed for --help or a config error

    return training.evaluate(cfg)


if __name__ == "__main__":
    main()

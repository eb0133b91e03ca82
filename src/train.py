"""Train one experiment seed: python src/train.py [group=option ...] [key=value ...] (see README)."""

import sys

import hydra
from omegaconf import DictConfig

import slotsweep.config  # noqa: F401  (registers the schema that conf/train.yaml extends)
from slotsweep.cli import refuse_moved_keys, report_errors


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@report_errors
def main(cfg: DictConfig) -> float | tuple[float, ...]:
    from slotsweep import training  # torch and Lightning: not needed for --help or a config error

    return training.run(cfg)  # objective(s) for the sweeper; run() owns the run dir and results.json


if __name__ == "__main__":
    refuse_moved_keys(sys.argv[1:])
    main()

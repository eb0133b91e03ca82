"""Train one experiment seed: python src/train.py [group=option ...] [key=value ...] (see README)."""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

import slotsweep.config  # noqa: F401  (registers the schema that conf/train.yaml extends)
from slotsweep.cli import expand_shorthands, report_errors
from slotsweep.runs import experiment


@report_errors  # outermost: errors from Hydra itself become one line too
@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | tuple[float, ...] | None:
    # bad input fails here, before torch and Lightning are imported (seconds); checked once, the
    # identity computed once: run() takes them as they are
    located = experiment.locate(cfg)
    if cfg.pool_dir is not None:  # a sweep's trial pool: its heads are the tickets in pool_dir
        from slotsweep.training.pool import serve_pool

        serve_pool(cfg, Path(cfg.pool_dir), job=True)
        return None
    from slotsweep.training import task  # torch and Lightning: not needed for --help or a config error

    # objective(s) for the sweeper; run() owns the run dir and results.json, and its cost counts
    # from this process's start
    return task.run(cfg, job=True, located=located)


if __name__ == "__main__":
    sys.argv[1:] = expand_shorthands(sys.argv[1:])  # encoder.cache=<v>: see cli.py
    main()

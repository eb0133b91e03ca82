"""Build the feature cache of a config once, before a sweep: python src/cache.py [overrides] (those
of the sweep's trials, e.g. experiment=videosaur/movi_c cache=int8 paths.features_dir=/scratch/f).

It prints each split's size and the free space first, refuses a cache that does not fit, and
builds train and val with the encoder on one device; the trials then find it and no trial waits
on the build lock holding a GPU.
"""

import sys

import hydra
from omegaconf import DictConfig

import slotsweep.config  # noqa: F401  (registers the schema that conf/train.yaml extends)
from slotsweep.cli import expand_shorthands, report_errors


@report_errors  # outermost: errors from Hydra itself become one line too
@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    from slotsweep.training import task  # torch and Lightning: not needed for --help or a config error

    for split, store in task.build_cache(cfg).items():
        print(f"{split}: {store.directory} ({store.shape[0]} frames x {store.n_views} views, {store.dtype})")


if __name__ == "__main__":
    sys.argv[1:] = expand_shorthands(sys.argv[1:])  # encoder.cache=<v>: see cli.py
    main()

"""Train several trials of one input stream as the heads of one pool (training/pool.py):

    python src/pool.py --head optim.base_lr=1e-3 --head "grouper.n_slots=5 loss.timesim.weight=0.5" \
        experiment=videosaur/movi_c seed=0

Every head is conf/train.yaml composed with the common overrides and then its own `--head` ones;
each writes its own run dir as `src/train.py` would. Launched again with the same arguments, a
killed pool resumes every head from the pool's last checkpoint.
"""

import argparse
import shlex
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

import slotsweep.config  # noqa: F401  (registers the schema that conf/train.yaml extends)
from slotsweep.cli import expand_shorthands, report_errors

CONF = Path(__file__).resolve().parents[1] / "conf"


@report_errors
def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--head", action="append", required=True, help="one head's overrides (quoted)")
    parser.add_argument("--pool-dir", default=None, help="the pool's checkpoints (default: runs/pools/<id>)")
    args, common = parser.parse_known_args(argv)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfgs = [compose("train", overrides=expand_shorthands([*common, *shlex.split(h)])) for h in args.head]
    from slotsweep.training.pool import run_pool  # torch and Lightning: not needed for a config error

    for cfg, objective in zip(cfgs, run_pool(cfgs, args.pool_dir), strict=True):
        print(f"{cfg.exp_name} seed {cfg.seed}: {objective}")


if __name__ == "__main__":
    main(sys.argv[1:])

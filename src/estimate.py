"""Forecast a training run's cost before it runs (FLOPs, bytes, step time, device-hours, cache size):

    python src/estimate.py [train.py overrides ...] [gpu=h100|h200|a100|l40s|cpu] [format=text|json]
        [pool_size=K]

e.g. `python src/estimate.py experiment=videosaur/movi_c gpu=h100`. Needs no data and no weights.
pool_size=K adds a trial pool of K heads (src/pool.py, hydra.sweeper.pool_size): memory shared and per
head, time per head, and the largest pool that fits the device (JSON: the `pool` object).
"""

import json
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

import slotsweep.config  # noqa: F401  (registers the schema that conf/train.yaml extends)
from slotsweep.cli import exit_with_error, expand_shorthands, report_errors, split_options
from slotsweep.config import check_config

CONF = Path(__file__).resolve().parents[1] / "conf"
FORMATS = ("text", "json")


@report_errors
def main(arguments: list[str]) -> None:
    options, overrides = split_options(arguments, {"gpu": "h100", "format": "text", "pool_size": ""})
    if options["format"] not in FORMATS:
        exit_with_error(f"format={options['format']} is not one of {list(FORMATS)}")
    pool_size = options["pool_size"]
    if pool_size and not (pool_size.isdigit() and int(pool_size) >= 1):
        exit_with_error(f"pool_size={pool_size} must be an integer >= 1 (the heads of one pool)")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=expand_shorthands(overrides))
    check_config(cfg)  # bad input fails here, before torch is imported
    from slotsweep.training import estimate  # torch: not needed for a config error

    flops = estimate.count_flops(cfg)
    forecast = estimate.forecast(cfg, options["gpu"], flops=flops)
    plan = estimate.pool_plan(cfg, options["gpu"], int(pool_size), flops=flops) if pool_size else None
    if options["format"] == "json":
        print(
            json.dumps(
                {**estimate.as_json(forecast), **({"pool": estimate.as_json(plan)} if plan else {})}, indent=1
            )
        )
    else:
        print(estimate.render_text(forecast))
        if plan:
            print(estimate.render_pool_text(plan))


if __name__ == "__main__":
    main(sys.argv[1:])

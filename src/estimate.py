"""Forecast a training run's cost before it runs (FLOPs, bytes, step time, device-hours, cache size):

    python src/estimate.py [train.py overrides ...] [gpu=h100|h200|a100|l40s|cpu] [format=text|json]

e.g. `python src/estimate.py experiment=videosaur/movi_c gpu=h100`. Needs no data and no weights.
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
    options, overrides = split_options(arguments, {"gpu": "h100", "format": "text"})
    if options["format"] not in FORMATS:
        exit_with_error(f"format={options['format']} is not one of {list(FORMATS)}")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=expand_shorthands(overrides))
    check_config(cfg)  # bad input fails here, before torch is imported
    from slotsweep.training import estimate  # torch: not needed for a config error

    forecast = estimate.forecast(cfg, options["gpu"])
    if options["format"] == "json":
        print(json.dumps(estimate.as_json(forecast), indent=1))
    else:
        print(estimate.render_text(forecast))


if __name__ == "__main__":
    main(sys.argv[1:])

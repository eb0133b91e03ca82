"""Mean ± std over seeds: python src/aggregate.py <runs dir | multirun dir | wandb:entity/project>
[--by key1,key2] [--metrics val/video_fg_ari,val/video_mbo] [--best] [--out DIR] (docs/wandb.md)."""

import sys

from slotsweep.sweeps.aggregate import main

if __name__ == "__main__":
    sys.exit(main())

"""Mean ± std over seeds: python src/aggregate.py <runs dir | multirun dir | wandb:entity/project>
[--by key1,key2] [--metrics ...] [--best] [--mix-protocols] [--out DIR] (README "Reporting results")."""

import sys

from slotsweep.results.aggregate import main

if __name__ == "__main__":
    sys.exit(main())

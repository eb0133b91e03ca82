"""Each message of Lightning printed once, and only those that help a user of this project.

- Importing `lightning` puts a console handler on the `lightning` logger ("INFO: ..." on stderr)
  that also propagates to the root logger. Under Hydra the root logger already prints every
  record to stdout, so each Lightning line (the model summary too) came out twice.
- Lightning advertises its cloud products ("💡 Tip: ... litlogger", "... litmodels") on every
  trainer it builds.
- With SLURM installed, every trainer outside a SLURM job warns that `srun` is not used: right
  for a job started by hand inside an allocation, noise for a local run.
"""

import logging
import os
import re
import warnings

from lightning.fabric.utilities.warnings import PossibleUserWarning

__all__ = ["quiet_lightning"]

ADVERT_PREFIX = "💡 Tip:"
SRUN_HINT = "The `srun` command is available on your system but is not used"
# Lightning logs rank-zero messages through one of these (the last package imported sets it).
RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


def _not_an_advert(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(ADVERT_PREFIX)


def quiet_lightning() -> None:
    """Apply the three fixes above (idempotent; call after `lightning` is imported)."""
    if logging.getLogger().hasHandlers():  # else Lightning's handler is the only output: keep it
        logging.getLogger("lightning").handlers.clear()
    for name in RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if _not_an_advert not in logger.filters:
            logger.addFilter(_not_an_advert)
    if "SLURM_JOB_ID" not in os.environ:  # inside a SLURM job the hint may be right
        warnings.filterwarnings("ignore", message=re.escape(SRUN_HINT), category=PossibleUserWarning)

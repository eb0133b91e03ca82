"""timm, imported without W&B.

timm's `timm.utils.summary` runs `import wandb` (inside try/except ImportError) for a summary
logger slotsweep never uses, and every timm import reaches it: a run that logs to csv paid for W&B
(benchmarks/results/imports.md: 20 MiB and seconds on a loaded 2-core machine). So timm is imported
here with wandb hidden, and wandb is unhidden at once: `logger=wandb` (slotsweep.training.tracking) still
imports it. Modules that need timm import it from here.
"""

import sys

_hide = "wandb" not in sys.modules
if _hide:
    sys.modules["wandb"] = None  # `import wandb` raises ImportError, which timm catches
try:
    import timm
finally:
    if _hide and sys.modules.get("wandb", 0) is None:
        del sys.modules["wandb"]

__all__ = ["timm"]

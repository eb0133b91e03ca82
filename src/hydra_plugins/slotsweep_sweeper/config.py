"""Registers the schema of `hydra/sweeper=optuna` (conf/hydra/sweeper/optuna.yaml) its samplers and pruners.

Registered in Hydra's ConfigStore when Hydra scans `hydra_plugins`, so a typo in a sweeper key
fails at compose time. The dataclasses themselves, with a comment per field, are in
slotsweep/sweeps/settings.py (light to import: no Optuna).
"""

from hydra.core.config_store import ConfigStore

from slotsweep.sweeps.settings import PRUNERS, SAMPLERS, OptunaSweeperConf

_STORE = ConfigStore.instance()
_STORE.store(group="hydra/sweeper", name="slotsweep_optuna", node=OptunaSweeperConf, provider="slotsweep")
for _name, _node in SAMPLERS.items():
    _STORE.store(group="hydra/sweeper/sampler", name=_name, node=_node, provider="slotsweep")
for _name, _node in PRUNERS.items():
    _STORE.store(group="hydra/sweeper/pruner", name=_name, node=_node, provider="slotsweep")

"""Sweeps: the Optuna sweeper behind the Hydra plugin, and seed aggregation (aggregate.py)."""

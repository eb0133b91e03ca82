"""Model parts. `models/` knows nothing of Lightning, Hydra or W&B."""

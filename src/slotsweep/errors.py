"""The one exception type for bad user input: its message is the whole story (key, value, fix)."""

__all__ = ["SlotsweepError"]


class SlotsweepError(ValueError):
    """Invalid config value, missing file or incompatible checkpoint. Printed as one line by the CLI."""

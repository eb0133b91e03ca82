"""Reading checkpoint and weights files without running code from them.

`torch.load(weights_only=False)` unpickles arbitrary objects, and unpickling can call any function
a file names: a checkpoint from a shared disk or the web could run code as the user. Every file
slotsweep reads (resume, `load_weights=`, `encoder.weights=`, eval, infer) goes through
`load_file`, which allows only tensors and plain containers (weights_only=True; safetensors files
through safetensors). A file that needs more is refused with one message naming it and the opt-in
flag `allow_pickle=true`, for files the user trusts.
"""

import contextlib
import logging
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from slotsweep.errors import SlotsweepError

__all__ = ["load_file", "refuse_unpickling"]

log = logging.getLogger(__name__)


def _unsafe_globals(path: Path) -> list[str]:
    """The objects a torch zip checkpoint's pickle would import and call beyond weights_only's
    allow-list, read without unpickling; [] when there are none or the file is not such a checkpoint."""
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - not a zip checkpoint: the caller reports it as unreadable
        return []


@contextlib.contextmanager
def refuse_unpickling(key: str, path: str | Path) -> Iterator[None]:
    """Turn a weights_only refusal inside the block (torch's, or timm's RuntimeError around it) into
    one SlotsweepError naming `key=path`: a refusal names what the file would run and the opt-in
    flag; anything else that fails to unpickle is an unreadable file."""
    try:
        yield
    except (pickle.UnpicklingError, RuntimeError) as error:
        refusal = error if isinstance(error, pickle.UnpicklingError) else error.__cause__
        if not isinstance(refusal, pickle.UnpicklingError):
            raise
        unsafe = _unsafe_globals(Path(path))
        if not unsafe:
            raise SlotsweepError(f"{key}={path} is not a readable torch checkpoint (bad pickle)") from None
        raise SlotsweepError(
            f"{key}={path} needs arbitrary unpickling, which can run code from the file (it calls "
            f"{', '.join(unsafe[:3])}{', ...' if len(unsafe) > 3 else ''}); it was not loaded. "
            "Pass allow_pickle=true only if you trust the file"
        ) from None


def load_file(path: str | Path, key: str, allow_pickle: bool = False) -> Any:
    """The contents of a torch checkpoint or safetensors file, read on the CPU.

    Args:
        path: the file.
        key: the config key that named it (`load_weights`, `ckpt`, ...), for the error message.
        allow_pickle: also unpickle arbitrary objects (runs code from the file: trusted files only).
    """
    path = Path(path)
    if not path.is_file():
        raise SlotsweepError(f"{key}={path} does not exist: check the path")
    if path.suffix == ".safetensors":  # a format without code: nothing to allow
        from safetensors.torch import load_file as load_safetensors

        return load_safetensors(path, device="cpu")
    if allow_pickle:
        log.warning(f"allow_pickle=true: unpickling {path} with arbitrary code allowed")
    with refuse_unpickling(key, path):
        try:
            return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
        except pickle.UnpicklingError:  # refuse_unpickling tells a refusal from a broken file
            raise
        except Exception as e:  # noqa: BLE001 - a zip/format error means the same to the user
            raise SlotsweepError(f"{key}={path} is not a readable torch checkpoint ({e})") from e

"""Loading weights into an ObjectCentricModel (this project's checkpoints or the reference's),
and the training config a checkpoint carries (`load_run_config`, for eval and infer).

The reference (videosaur.md §4, fixtures/state_dict_keys.json) nests parts under `.module` for
video (MapOverTime/ScanOverTime) and names Sequential layers `layers.i`; `reference_to_local`
is the one place that knows those names.
"""

import re
from pathlib import Path

from torch import Tensor, nn

from slotsweep.errors import SlotsweepError
from slotsweep.runs.safe_load import load_file

__all__ = ["load_model_weights", "read_state_dict", "reference_to_local"]

_REFERENCE_PREFIXES = (  # reference prefix -> ours; `(\.module)?` covers video and image models
    (r"initializer\.", "grouper.initializer."),
    (r"encoder(\.module)?\.backbone\.model\.", "encoder.model."),
    (r"encoder(\.module)?\.output_transform\.", "projection."),
    (r"processor(\.module)?\.corrector\.", "grouper."),
    (r"processor(\.module)?\.predictor\.", "predictor."),
    (r"decoder(\.module)?\.", "decoder."),
)


def reference_to_local(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a reference VideoSAUR/DINOSAUR state dict to this project's parameter names."""
    renamed = {}
    for key, value in state_dict.items():
        for pattern, local in _REFERENCE_PREFIXES:
            if re.match(pattern, key):
                key = re.sub(f"^{pattern}", local, key)
                break
        renamed[key.replace(".layers.", ".")] = value
    return renamed


def read_state_dict(path: str | Path, key: str = "ckpt", allow_pickle: bool = False) -> dict[str, Tensor]:
    """Model parameters from a Lightning .ckpt (ours or the reference's), a plain state dict or a
    .safetensors file; `key` names the config key that gave `path` (slotsweep.runs.safe_load)."""
    data = load_file(path, key, allow_pickle)
    state = data.get("state_dict", data)
    if any(k.startswith("model.") for k in state):  # ours: the LightningModule holds `model`
        return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    if any(k.startswith(("processor.", "initializer.")) for k in state):
        return reference_to_local(state)
    return dict(state)


def load_model_weights(
    model: nn.Module, path: str | Path, key: str = "ckpt", allow_pickle: bool = False
) -> None:
    """Load every parameter of `model` from `path`, or fail listing what does not match."""
    state = read_state_dict(path, key, allow_pickle)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        raise SlotsweepError(
            f"checkpoint {path} does not fit this model's architecture: "
            f"{len(missing)} missing {_head(missing)}, {len(unexpected)} unexpected {_head(unexpected)}, "
            f"{len(mismatched)} with other shapes {_head(mismatched)}; "
            "compose the same encoder/grouper/decoder options the checkpoint was trained with"
        )
    model.load_state_dict(state)


def _head(items: list[str], n: int = 5) -> str:
    return "[" + ", ".join(items[:n]) + (", ..." if len(items) > n else "") + "]"

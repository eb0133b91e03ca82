"""Loading weights into an ObjectCentricModel (this project's checkpoints or the reference's), and
the frozen encoder that this project's checkpoints leave out.

The reference (videosaur.md §4, fixtures/state_dict_keys.json) nests parts under `.module` for
video (MapOverTime/ScanOverTime) and names Sequential layers `layers.i`; `reference_to_local`
is the one place that knows those names.

A frozen encoder is most of a checkpoint (a ViT-B/8 is 82% of the reference model) and never
changes in training: the run rebuilds it from its recorded source (encoder.weights, the hub, or a
seeded random init; load_weights= when that replaced it). A checkpoint therefore holds the
trainable state only, plus `frozen_record`: where the encoder came from and the sha256 of its
tensors. Loading puts the rebuilt encoder back only if its sha256 is the recorded one.
"""

import re
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from slotsweep.cache import weights_sha256
from slotsweep.errors import SlotsweepError
from slotsweep.runs.safe_load import load_file

__all__ = [
    "FROZEN_RECORD",
    "frozen_record",
    "frozen_source",
    "leave_out_frozen",
    "load_model_weights",
    "put_back_frozen",
    "read_state_dict",
    "reference_to_local",
]

FROZEN_RECORD = "frozen"  # key of the record in a checkpoint's `slotsweep` section
_FROZEN_PART = "encoder."  # the model's part a checkpoint leaves out when it is frozen

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


def _model_state(data: dict[str, Any]) -> dict[str, Tensor]:
    state = data.get("state_dict", data)
    if any(k.startswith("model.") for k in state):  # ours: the LightningModule holds `model`
        return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    if any(k.startswith(("processor.", "initializer.")) for k in state):
        return reference_to_local(state)
    return dict(state)


def read_state_dict(path: str | Path, key: str = "ckpt", allow_pickle: bool = False) -> dict[str, Tensor]:
    """Model parameters from a Lightning .ckpt (ours or the reference's), a plain state dict or a
    .safetensors file; `key` names the config key that gave `path` (slotsweep.runs.safe_load).
    A frozen encoder that one of our checkpoints left out is not among them."""
    return _model_state(load_file(path, key, allow_pickle))


def left_out_frozen(path: str | Path, key: str = "ckpt", allow_pickle: bool = False) -> bool:
    """Whether the checkpoint at `path` left its frozen encoder out (to be rebuilt from its source)."""
    data = load_file(path, key, allow_pickle)
    return isinstance(data, dict) and _record(data) is not None


def _record(data: dict[str, Any]) -> dict[str, str] | None:
    section = data.get("slotsweep")
    return section.get(FROZEN_RECORD) if isinstance(section, dict) else None


def load_model_weights(
    model: nn.Module,
    path: str | Path,
    key: str = "ckpt",
    allow_pickle: bool = False,
    rebuilt_from: str = "this config",
) -> None:
    """Load every parameter of `model` from `path`, or fail listing what does not match. A frozen
    encoder the checkpoint left out is `model`'s own, built from `rebuilt_from` (frozen_source),
    checked against the checkpoint's record (put_back_frozen)."""
    data = load_file(path, key, allow_pickle)
    state = _model_state(data)
    put_back_frozen(state, model, _record(data), "", f"{key}={path}", rebuilt_from)
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


def frozen_source(config: dict[str, Any]) -> str:
    """Where a run's frozen encoder weights come from, in its (resolved) config's keys."""
    encoder = config["encoder"]
    if encoder.get("weights") is not None:
        source = f"encoder.weights={encoder['weights']}"
    elif encoder.get("pretrained"):
        source = f"the timm hub weights of encoder.model_name={encoder.get('model_name')}"
    else:
        source = f"a random init (encoder.init_seed={encoder.get('init_seed')})"
    if config.get("load_weights") is not None:  # it may replace the encoder's weights too
        source += f", then load_weights={config['load_weights']}"
    return source


def frozen_record(model: nn.Module, source: str) -> dict[str, str] | None:
    """What a checkpoint records of the frozen encoder it leaves out: its `source` (frozen_source)
    and sha256; None when the encoder trains (it is then saved like any other part)."""
    if not model.encoder.frozen:
        return None
    return {"source": source, "sha256": weights_sha256(model.encoder)}


def leave_out_frozen(state: dict[str, Tensor], model: nn.Module, prefix: str = "") -> None:
    """Remove `model`'s frozen encoder from `state` (a state dict holding the model under `prefix`)."""
    if model.encoder.frozen:
        for name in [name for name in state if name.startswith(prefix + _FROZEN_PART)]:
            del state[name]


def put_back_frozen(
    state: dict[str, Tensor],
    model: nn.Module,
    record: dict[str, str] | None,
    prefix: str,
    checkpoint: str,
    rebuilt_from: str,
) -> None:
    """Put `model`'s encoder, rebuilt from `rebuilt_from`, into `state` (a checkpoint's state dict
    holding the model under `prefix`, named `checkpoint` in messages) where the checkpoint left it
    out, as `record` says; unless its sha256 differs from the recorded one. No record: nothing left
    out (a trainable encoder, a reference checkpoint, or one written before records)."""
    if record is None:
        return
    digest = weights_sha256(model.encoder)
    if digest != record["sha256"]:
        raise SlotsweepError(
            f"{checkpoint} left out its frozen encoder, trained from {record['source']} (sha256 "
            f"{record['sha256'][:12]}), but the one rebuilt from {rebuilt_from} differs (sha256 "
            f"{digest[:12]}): rebuild it from the weights it was trained with (a file that moved: "
            'overrides=["encoder.weights=<file>"] for eval.py and infer.py, encoder.weights=<file> '
            "for a resumed run)"
        )
    state.update({prefix + _FROZEN_PART + name: value for name, value in model.encoder.state_dict().items()})

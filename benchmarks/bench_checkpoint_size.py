"""Checkpoint size with and without the frozen encoder, for the shapes default and a preset.

A checkpoint holds the model's state and Adam's two moments per trainable weight; the frozen
encoder is left out and rebuilt from its recorded source on load (slotsweep.models.weights). For
each config this builds the model (a random encoder of the preset's architecture: same size, no
download), gives Adam one step so that its moments exist, and torch.saves that state twice: as
checkpoints are written now (encoder left out) and with the encoder (as they were before). Lightning
adds a few KB of loop state to both. Prints a Markdown table and writes
benchmarks/results/checkpoint_size.md. About a minute on 2 cores.

    python benchmarks/bench_checkpoint_size.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from _common import compose_train, write_table

from slotsweep.build import build_model

CASES = {  # name: overrides of conf/train.yaml
    "shapes default (`trainer=debug`)": ["trainer=debug"],
    "`experiment=videosaur/movi_c` (ViT-B/8)": ["experiment=videosaur/movi_c", "encoder.pretrained=false"],
}


def _saved_mib(state: dict, path: Path) -> float:
    torch.save(state, path)
    return path.stat().st_size / 2**20


def measure(overrides: list[str], directory: Path) -> tuple[float, float, float]:
    """(MiB with the encoder, MiB without it, the encoder's share of the former)."""
    model, _ = build_model(compose_train(*overrides))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable)
    for p in trainable:
        p.grad = torch.zeros_like(p)
    optimizer.step()  # Adam's moments: two tensors per trainable weight
    state = model.state_dict()
    kept = {k: v for k, v in state.items() if not k.startswith("encoder.")}
    full = _saved_mib({"state_dict": state, "optimizer_states": [optimizer.state_dict()]}, directory / "a")
    lean = _saved_mib({"state_dict": kept, "optimizer_states": [optimizer.state_dict()]}, directory / "b")
    return full, lean, 1 - lean / full


def main() -> None:
    rows = [
        "| config | with the frozen encoder (MiB) | as saved now (MiB) | encoder's share |",
        "|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as directory:
        for name, overrides in CASES.items():
            full, lean, share = measure(overrides, Path(directory))
            rows.append(f"| {name} | {full:.1f} | {lean:.1f} | {share:.0%} |")
    table = "\n".join(rows)
    print(table)
    print(f"wrote {write_table('checkpoint_size', table)}")


if __name__ == "__main__":
    main()

"""Layers that several parts of the model build: the reference's MLP, the feature projection, folding.

Attention and transformer blocks, shared by the predictor and the SlotMixer decoder, are in
transformer.py.
"""

from torch import Tensor, nn

__all__ = ["feature_projection", "fold_time", "mlp"]


def mlp(inp_dim: int, hidden_dims: list[int], outp_dim: int, final_relu: bool = False) -> nn.Sequential:
    """Linear/ReLU stack with zero biases and default weights (reference `networks.MLP`)."""
    dims = [inp_dim, *hidden_dims, outp_dim]
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        linear = nn.Linear(d_in, d_out)
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if i < len(dims) - 2 or final_relu:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def feature_projection(feat_dim: int, slot_dim: int) -> nn.Sequential:
    """LN -> Linear(F, 2F) -> ReLU -> Linear(2F, D): the reference encoder `output_transform`."""
    return nn.Sequential(nn.LayerNorm(feat_dim), *mlp(feat_dim, [2 * feat_dim], slot_dim))


def fold_time(x: Tensor) -> Tensor:
    """(B, T, ...) -> (B·T, ...): frames processed independently share the batch axis."""
    return x.flatten(0, 1)

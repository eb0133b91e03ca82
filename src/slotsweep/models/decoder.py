"""Decoders from slots to per-patch outputs; their mixing weights are the evaluation masks (§2.5)."""

import torch
from torch import Tensor, nn

from slotsweep.models.layers import mlp
from slotsweep.models.transformer import TransformerEncoder

__all__ = ["SlotMixerDecoder", "MLPDecoder"]


class SlotMixerDecoder(nn.Module):
    """OSRT-style SlotMixer: an allocator turns patch positions into per-patch slot mixtures.

    Args:
        inp_dim: slot width D.
        outp_dim: output channels C per patch (set by the losses: features and/or similarity logits).
        n_patches: P, number of encoder patches.
        embed_dim: width E of the positional queries; defaults to D.
        n_blocks: allocator depth (MOVi 2, YT-VIS 3).
        n_heads: allocator heads.
        renderer_hidden_dims: hidden widths of the renderer MLP (MOVi 3x1024, YT-VIS 2x1024).
        renderer_dim: renderer output width before the final linear map.
        inverted_scale: [Q] the allocator's attention scales logits by sqrt(head_dim), §2.4.
        fused: use PyTorch's fused attention kernel in the allocator.
    """

    def __init__(
        self,
        inp_dim: int,
        outp_dim: int,
        n_patches: int,
        embed_dim: int | None = None,
        n_blocks: int = 2,
        n_heads: int = 4,
        renderer_hidden_dims: tuple[int, ...] = (1024, 1024, 1024),
        renderer_dim: int = 1024,
        inverted_scale: bool = True,
        fused: bool = True,
    ) -> None:
        super().__init__()
        embed_dim = embed_dim or inp_dim
        att_dim = max(embed_dim, inp_dim)
        self.scale = att_dim**-0.5
        self.pos_emb = nn.Parameter(torch.randn(1, n_patches, embed_dim) * embed_dim**-0.5)
        self.norm_memory = nn.LayerNorm(embed_dim)
        self.allocator = TransformerEncoder(
            embed_dim, n_blocks, n_heads, inverted_scale=inverted_scale, fused=fused
        )
        self.norm_q = nn.LayerNorm(embed_dim)
        self.norm_k = nn.LayerNorm(inp_dim)
        self.to_q = nn.Linear(embed_dim, att_dim, bias=False)
        self.to_k = nn.Linear(inp_dim, att_dim, bias=False)
        nn.init.xavier_uniform_(self.to_q.weight)
        nn.init.xavier_uniform_(self.to_k.weight)
        self.renderer = mlp(inp_dim, list(renderer_hidden_dims), renderer_dim, final_relu=True)
        self.output_transform = nn.Linear(renderer_dim, outp_dim)
        nn.init.xavier_uniform_(self.output_transform.weight)
        nn.init.zeros_(self.output_transform.bias)

    def forward(self, slots: Tensor) -> tuple[Tensor, Tensor]:
        """slots (B, S, D) -> reconstruction (B, P, C) and masks (B, S, P), the mixing weights."""
        B = slots.shape[0]
        queries = self.pos_emb.expand(B, -1, -1)  # (B, P, E)
        allocation = self.allocator(queries, memory=self.norm_memory(slots))
        q = self.to_q(self.norm_q(allocation))  # (B, P, att)
        k = self.to_k(self.norm_k(slots))  # (B, S, att)
        # fp32 under autocast too (CUDA's does so anyway, the CPU's not): the mixing weights are the masks
        mixing = (q @ k.transpose(1, 2) * self.scale).float().softmax(dim=-1)  # (B, P, S), over slots
        mixed = mixing @ slots + self.pos_emb  # raw slots are mixed, then positions added
        return self.output_transform(self.renderer(mixed)), mixing.transpose(1, 2)


class MLPDecoder(nn.Module):
    """DINOSAUR's spatial-broadcast MLP decoder; alpha channels softmaxed over slots are the masks.

    Args:
        inp_dim: slot width D.
        outp_dim: output channels C per patch.
        n_patches: P.
        hidden_dims: MLP hidden widths (reference COCO: 3x2048).
    """

    def __init__(
        self,
        inp_dim: int,
        outp_dim: int,
        n_patches: int,
        hidden_dims: tuple[int, ...] = (2048, 2048, 2048),
    ) -> None:
        super().__init__()
        self.pos_emb = nn.Parameter(torch.randn(1, 1, n_patches, inp_dim) * inp_dim**-0.5)
        self.mlp = mlp(inp_dim, list(hidden_dims), outp_dim + 1)

    def forward(self, slots: Tensor) -> tuple[Tensor, Tensor]:
        """slots (B, S, D) -> reconstruction (B, P, C) and masks (B, S, P)."""
        out = self.mlp(slots.unsqueeze(2) + self.pos_emb)  # (B, S, P, C + 1)
        per_slot, alpha = out[..., :-1], out[..., -1]
        masks = alpha.float().softmax(dim=1)  # (B, S, P); fp32 under autocast: they are the masks
        return torch.einsum("bsp,bspc->bpc", masks, per_slot), masks

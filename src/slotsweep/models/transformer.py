"""Multi-head attention and the pre-LN transformer used as predictor and SlotMixer allocator.

Parameter names follow the reference (`blocks.i.self_attn.qkv`, `linear1`, `norm1`, ...) so that
released checkpoints map one-to-one.
"""

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Attention", "TransformerBlock", "TransformerEncoder"]


class Attention(nn.Module):
    """Multi-head attention with one fused qkv projection, used for self- and cross-attention.

    Args:
        dim: token width D (memory tokens must have the same width: k and v come from the fused qkv).
        n_heads: number of heads; D must be divisible by it.
        qkv_bias: bias on the qkv projection.
        inverted_scale: [Q] the reference divides q by head_dim**-0.5, i.e. scales logits by
            sqrt(head_dim) instead of 1/sqrt(head_dim) (videosaur.md §2.4). Released checkpoints need it.
        fused: use F.scaled_dot_product_attention; the written-out path gives the same numbers and is
            used when attention weights are requested.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        qkv_bias: bool = True,
        inverted_scale: bool = True,
        fused: bool = True,
    ) -> None:
        super().__init__()
        if dim % n_heads != 0:
            raise ValueError(f"attention dim={dim} must be divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.scale = self.head_dim**0.5 if inverted_scale else self.head_dim**-0.5
        self.fused = fused
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.out_proj = nn.Linear(dim, dim)
        for chunk in self.qkv.weight.data.chunk(3):  # Xavier per q/k/v block, as the reference
            nn.init.xavier_uniform_(chunk)
        nn.init.xavier_uniform_(self.out_proj.weight)
        if qkv_bias:
            nn.init.zeros_(self.qkv.bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(
        self, x: Tensor, memory: Tensor | None = None, return_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from x to itself, or to memory.

        Args:
            x: (B, N, D) queries.
            memory: (B, M, D) keys/values; None for self-attention.
            return_weights: also return the head-averaged attention (B, N, M).
        Returns:
            (B, N, D) output and the weights or None.
        """
        B, N, D = x.shape
        w_q, w_kv = self.qkv.weight.split([D, 2 * D])
        b_q, b_kv = self.qkv.bias.split([D, 2 * D]) if self.qkv.bias is not None else (None, None)
        source = x if memory is None else memory
        q = F.linear(x, w_q, b_q).view(B, N, self.n_heads, self.head_dim).transpose(1, 2)
        k, v = F.linear(source, w_kv, b_kv).view(B, -1, 2, self.n_heads, self.head_dim).unbind(2)
        k, v = k.transpose(1, 2), v.transpose(1, 2)  # (B, nh, M, hd)
        if self.fused and not return_weights:
            out, weights = F.scaled_dot_product_attention(q, k, v, scale=self.scale), None
        else:
            attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)  # (B, nh, N, M)
            out, weights = attn @ v, attn.mean(dim=1) if return_weights else None
        out = out.transpose(1, 2).reshape(B, N, D)  # (B, N, D)
        return self.out_proj(out), weights


class TransformerBlock(nn.Module):
    """Pre-LN block: x + Attn(LN(x) [, memory]) then x + FFN(LN(x)).

    With memory the block is cross-attention only (no self-attention among queries) and the memory is
    not re-normalised, as the reference SlotMixer allocator (videosaur.md §2.5).
    """

    def __init__(
        self, dim: int, n_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, **attn_kwargs
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, n_heads, qkv_bias=qkv_bias, **attn_kwargs)
        self.norm2 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, int(dim * mlp_ratio))
        self.linear2 = nn.Linear(int(dim * mlp_ratio), dim)

    def forward(self, x: Tensor, memory: Tensor | None = None) -> Tensor:
        """x: (B, N, D), memory: (B, M, D) or None -> (B, N, D)."""
        x = x + self.self_attn(self.norm1(x), memory)[0]
        return x + self.linear2(F.relu(self.linear1(self.norm2(x))))


class TransformerEncoder(nn.Module):
    """A stack of `TransformerBlock`s; the predictor over the slots of one frame.

    Args:
        dim: slot width D.
        n_blocks: number of blocks.
        n_heads: attention heads per block.
        mlp_ratio: FFN hidden width as a multiple of D.
        qkv_bias: bias on the fused qkv projection.
        inverted_scale: [Q] attention logits times sqrt(head_dim), videosaur.md §2.4.
        fused: use PyTorch's fused attention kernel.
    """

    def __init__(
        self,
        dim: int,
        n_blocks: int = 1,
        n_heads: int = 4,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        inverted_scale: bool = True,
        fused: bool = True,
    ) -> None:
        super().__init__()
        if n_blocks < 1:
            raise ValueError(f"predictor.n_blocks={n_blocks} must be >= 1 (use predictor=none)")
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, n_heads, mlp_ratio, qkv_bias, inverted_scale=inverted_scale, fused=fused)
            for _ in range(n_blocks)
        )

    def forward(self, x: Tensor, memory: Tensor | None = None) -> Tensor:
        """x: (B, N, D) tokens (slots or queries); memory: (B, M, D) for cross-attention."""
        for block in self.blocks:
            x = block(x, memory)
        return x

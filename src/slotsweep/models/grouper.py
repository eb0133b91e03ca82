"""Slot attention (videosaur.md §2.1 step 3, §2.3): a contracts.Grouper."""

from collections.abc import Callable

import torch
from torch import Tensor, nn

from slotsweep.contracts import SlotInitializer
from slotsweep.models.initializers import RandomInit
from slotsweep.models.layers import mlp

__all__ = ["SlotAttention"]


class SlotAttention(nn.Module):
    """Slot attention with the reference's details, plus the slot initializer it starts from.

    Args:
        n_slots: number of slots S (>= 1); an evaluation override is `SlotRequest.n_slots`.
        slot_dim: slot width D; the encoder features are projected to this width.
        n_iters: iterations on every frame after the first.
        n_iters_first: iterations on the first frame (the reference uses 3, later frames 2).
        inp_dim: input feature width; defaults to slot_dim (the model projects features to it).
        kvq_dim: attention width; defaults to slot_dim.
        use_mlp: residual MLP after the GRU (DINOSAUR/COCO on, VideoSAUR off).
        mlp_hidden_dim: hidden width of that MLP; defaults to 4 * slot_dim.
        eps: added to the attention before renormalising over tokens.
        gru_on_normed_slots: [Q] the reference feeds LN(slots) as the GRU hidden state instead of
            the raw slots (videosaur.md §2.3, §10.2); needed for released checkpoints.
        kmeans_init_scale: not in the reference (null = its default init). A number c starts the
            weights as soft k-means: q = c·LN(slot), k = c·LN(token), v = LN(token), and the GRU
            passes tanh(update) on, so an untrained grouper already clusters tokens by cosine
            similarity with logits up to c²·sqrt(D). Needs inp_dim == kvq_dim == slot_dim. Used by
            the CPU demo, where the reference init collapses all slots into one within ~50 steps.
        initializer: called as initializer(n_slots=S, dim=D) to build the contracts.SlotInitializer
            (conf/grouper/initializer/); None: the reference's learned Gaussian (RandomInit).
    """

    def __init__(
        self,
        n_slots: int,
        slot_dim: int,
        n_iters: int = 2,
        n_iters_first: int | None = None,
        inp_dim: int | None = None,
        kvq_dim: int | None = None,
        use_mlp: bool = False,
        mlp_hidden_dim: int | None = None,
        eps: float = 1e-8,
        gru_on_normed_slots: bool = True,
        kmeans_init_scale: float | None = None,
        initializer: Callable[..., SlotInitializer] | None = None,
    ) -> None:
        super().__init__()
        for key, value in (("slot_dim", slot_dim), ("n_iters", n_iters)):
            if value < 1:
                raise ValueError(f"grouper.{key}={value} must be >= 1")
        if n_iters_first is not None and n_iters_first < 1:
            raise ValueError(f"grouper.n_iters_first={n_iters_first} must be >= 1 (or null)")
        inp_dim, kvq_dim = inp_dim or slot_dim, kvq_dim or slot_dim
        self.slot_dim = slot_dim
        self.n_iters = n_iters
        self.n_iters_first = n_iters_first or n_iters
        self.eps = eps
        self.gru_on_normed_slots = gru_on_normed_slots
        self.scale = kvq_dim**-0.5
        self.initializer = (RandomInit if initializer is None else initializer)(n_slots=n_slots, dim=slot_dim)
        self.norm_features = nn.LayerNorm(inp_dim)
        self.norm_slots = nn.LayerNorm(slot_dim)
        self.to_q = nn.Linear(slot_dim, kvq_dim, bias=False)
        self.to_k = nn.Linear(inp_dim, kvq_dim, bias=False)
        self.to_v = nn.Linear(inp_dim, slot_dim, bias=False)
        self.gru = nn.GRUCell(slot_dim, slot_dim)
        self.mlp = None
        if use_mlp:
            hidden = mlp_hidden_dim or 4 * slot_dim
            self.mlp = nn.Sequential(nn.LayerNorm(slot_dim), *mlp(slot_dim, [hidden], slot_dim))
        if kmeans_init_scale is not None:
            if not inp_dim == kvq_dim == slot_dim:
                raise ValueError(
                    f"grouper.kmeans_init_scale needs inp_dim == kvq_dim == slot_dim, got {inp_dim}, "
                    f"{kvq_dim}, {slot_dim}: set kvq_dim and inp_dim to null"
                )
            self._init_as_kmeans(kmeans_init_scale)

    @torch.no_grad()
    def _init_as_kmeans(self, scale: float) -> None:
        """Identity projections and a GRU whose output is tanh(update): soft k-means before training."""
        eye = torch.eye(self.slot_dim)
        self.to_q.weight.copy_(scale * eye)
        self.to_k.weight.copy_(scale * eye)
        self.to_v.weight.copy_(eye)
        for weight_or_bias in (self.gru.weight_ih, self.gru.weight_hh, self.gru.bias_ih, self.gru.bias_hh):
            weight_or_bias.zero_()
        D = self.slot_dim  # GRU rows are the [reset, update, new] gates
        self.gru.bias_ih[D : 2 * D] = -5.0  # update gate ~0.007: the new state replaces the old one
        self.gru.weight_ih[2 * D :] = eye  # candidate state = tanh(update)

    @property
    def n_slots(self) -> int:
        return self.initializer.n_slots

    def group(self, features: Tensor, slots: Tensor, first_frame: bool) -> tuple[Tensor, Tensor]:
        """One frame with `n_iters_first` iterations on a first frame, else `n_iters` (contracts.Grouper)."""
        return self(features, slots, self.n_iters_first if first_frame else self.n_iters)

    def forward(self, features: Tensor, slots: Tensor, n_iters: int | None = None) -> tuple[Tensor, Tensor]:
        """Group one frame's tokens into slots.

        Args:
            features: (B, P, D_in) projected encoder tokens.
            slots: (B, S, D) initial slots (from the initializer or the predictor).
            n_iters: iterations; defaults to `self.n_iters`.
        Returns:
            slots (B, S, D) and masks (B, S, P): the last iteration's attention, softmaxed over slots.
        """
        B, S, D = slots.shape
        x = self.norm_features(features)
        k, v = self.to_k(x), self.to_v(x)  # (B, P, kvq), (B, P, D)
        masks = slots.new_empty(0)
        for _ in range(n_iters or self.n_iters):
            normed = self.norm_slots(slots)
            logits = self.to_q(normed) @ k.transpose(1, 2) * self.scale  # (B, S, P)
            masks = logits.float().softmax(dim=1)  # slots compete for each token; fp32 under autocast
            weights = masks + self.eps
            weights = weights / weights.sum(dim=-1, keepdim=True)  # weighted mean over tokens
            updates = weights @ v  # (B, S, D)
            hidden = normed if self.gru_on_normed_slots else slots
            slots = self.gru(updates.reshape(B * S, D), hidden.reshape(B * S, D)).view(B, S, D)
            if self.mlp is not None:
                slots = slots + self.mlp(slots)
        return slots, masks

"""The assembled model: encoder -> projection -> grouper over time -> predictor -> decoder.

It uses the parts only through their contracts (slotsweep.contracts), which build.py checks
before it assembles them.
"""

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from slotsweep.contracts import (
    Decoder,
    Encoder,
    EncoderOutput,
    Grouper,
    ModelOutput,
    Predictor,
    SlotRequest,
)
from slotsweep.models.layers import feature_projection, fold_time

__all__ = ["ObjectCentricModel"]


class ObjectCentricModel(nn.Module):
    """VideoSAUR (T > 1, with a predictor) or DINOSAUR (T = 1) from built parts.

    Args:
        encoder: a contracts.Encoder (a frozen ViT giving features and keys).
        grouper: a contracts.Grouper (owns the initial slots, iteration counts and slot width D).
        predictor: called as predictor(dim=D): maps frame-t slots to frame t+1's initial slots.
        decoder: called as decoder(inp_dim=D, outp_dim=C, n_patches=P): a contracts.Decoder.
        decoder_channels: C, the output channels the losses need (losses.channel_layout).
    """

    def __init__(
        self,
        encoder: Encoder,
        grouper: Grouper,
        predictor: Callable[..., Predictor],
        decoder: Callable[..., Decoder],
        decoder_channels: int,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.projection = feature_projection(encoder.feat_dim, grouper.slot_dim)
        self.grouper = grouper
        self.predictor = predictor(dim=grouper.slot_dim)
        self.decoder = decoder(
            inp_dim=grouper.slot_dim, outp_dim=decoder_channels, n_patches=encoder.n_patches
        )

    def compile_parts(self, **options: Any) -> None:
        """torch.compile the encoder and each trainable part in place, one graph each: the loop
        over frames stays in Python, so the first frame's and the later frames' iteration counts
        compile as two graphs of the grouper rather than one unrolled clip per clip length.
        `options` go to torch.compile (e.g. backend, mode)."""
        for part in (self.encoder, self.projection, self.grouper, self.predictor, self.decoder):
            part.compile(**options)

    def encode(self, video: Tensor) -> EncoderOutput:
        """video (B, T, 3, H, W) -> EncoderOutput of (B, T, P, D_feat) tensors."""
        B, T = video.shape[:2]
        out = self.encoder(fold_time(video))
        return EncoderOutput(*(x.unflatten(0, (B, T)) for x in (out.features, out.keys)))

    def forward(
        self,
        video: Tensor | None = None,
        features: EncoderOutput | None = None,
        initial_slots: Tensor | None = None,
        carried_slots: Tensor | None = None,
        n_slots: int | None = None,
        generator: torch.Generator | None = None,
        conditions: Mapping[str, Tensor] | None = None,
    ) -> ModelOutput:
        """Run one clip. Pass `video` (B, T, 3, H, W) or precomputed `features` (a feature cache).

        Frame 0's slots, at most one of:
        initial_slots: (B, S, D) given first-frame slots; frame 0 is a first frame, as with
            sampled slots (the grouper's first-frame iteration count).
        carried_slots: (B, S, D) the predicted slots of a previous chunk of the same video; frame 0
            continues it (the later-frame iteration count).
        Neither: the grouper's initializer gives them (n_slots of them, drawn with `generator` for
            repeatable evaluation, conditioned on `conditions` (the batch's first-frame
            annotations, e.g. "masks" (B, K, H, W)) where the initializer reads them).
        """
        if initial_slots is not None and carried_slots is not None:
            raise ValueError("pass initial_slots (a first frame) or carried_slots (a continuation), not both")
        if features is None:
            features = self.encode(video)
        B, T, P, _ = features.features.shape
        x = self.projection(features.features)  # (B, T, P, D)
        first_frame = carried_slots is None
        slots = initial_slots if first_frame else carried_slots
        if slots is None:
            slots = self.grouper.initializer(SlotRequest(B, n_slots, generator, conditions))
        slots_t, predicted, masks = self.scan(x, slots, first_frame)
        reconstruction, decoder_masks = self.decoder(fold_time(slots_t))
        return ModelOutput(
            encoder=features,
            slots=slots_t,
            slots_predicted=predicted,
            grouping_masks=masks,
            reconstruction=reconstruction.unflatten(0, (B, T)),
            decoder_masks=decoder_masks.unflatten(0, (B, T)),
        )

    def scan(self, x: Tensor, slots: Tensor, first_frame: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        """Group frame by frame; frame t + 1 starts from the predictor's output for frame t.

        The reference's ScanOverTime(LatentProcessor(corrector, predictor)), videosaur.md §2.1 step 4.

        Args:
            x: (B, T, P, D) projected features.
            slots: (B, S, D) initial slots of frame 0.
            first_frame: frame 0 starts a video (the grouper may iterate more on it).
        Returns:
            slots (B, T, S, D), predicted slots (B, T, S, D) and grouping masks (B, T, S, P).
        """
        slots_t, predicted, masks = [], [], []
        for t in range(x.shape[1]):
            s, m = self.grouper.group(x[:, t], slots, first_frame=t == 0 and first_frame)
            slots = self.predictor(s)
            slots_t.append(s), predicted.append(slots), masks.append(m)
        return tuple(torch.stack(seq, dim=1) for seq in (slots_t, predicted, masks))  # (B, T, ...)

"""Parts written outside src/, as docs/extending.md describes: a grouper, a loss and a datamodule.

Their YAMLs are in conf/ next to this file; tests/integration/test_extension.py puts that folder on
Hydra's search path and this one on PYTHONPATH, then trains through src/train.py.
"""

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from slotsweep.contracts import ModelOutput
from slotsweep.data.streams import map_stream
from slotsweep.models.initializers import RandomInit


class SoftKMeansGrouper(nn.Module):
    """Slots as soft k-means centres of the projected tokens (a slotsweep.contracts.Grouper).

    Args:
        n_slots: S. slot_dim: D.
        n_iters: iterations on a first frame; later frames start from the predictor and take one.
        temperature: of the cosine assignment.
    """

    def __init__(self, n_slots: int, slot_dim: int, n_iters: int = 3, temperature: float = 0.1) -> None:
        super().__init__()
        self.slot_dim, self.n_iters, self.temperature = slot_dim, n_iters, temperature
        self.initializer = RandomInit(n_slots, slot_dim)
        self.step = nn.Linear(slot_dim, slot_dim)  # learned move towards the assigned tokens' mean

    @property
    def n_slots(self) -> int:
        return self.initializer.n_slots

    def group(self, features: Tensor, slots: Tensor, first_frame: bool) -> tuple[Tensor, Tensor]:
        """features (B, P, D), slots (B, S, D) -> slots (B, S, D), masks (B, S, P)."""
        tokens = F.normalize(features, dim=-1)
        for _ in range(self.n_iters if first_frame else 1):
            logits = F.normalize(slots, dim=-1) @ tokens.transpose(1, 2) / self.temperature  # (B, S, P)
            masks = logits.softmax(dim=1)  # tokens are shared out among the slots
            means = masks @ features / (masks.sum(dim=-1, keepdim=True) + 1e-8)  # (B, S, D)
            slots = slots + self.step(means - slots)
        return slots, masks


class MaskEntropyLoss(nn.Module):
    """Entropy of the decoder masks over slots, per patch: pushes each patch to one slot.

    It reads the model output's masks, not decoder channels (n_channels 0).
    """

    def __init__(self, weight: float = 0.01) -> None:
        super().__init__()
        self.weight = weight

    def n_channels(self, feat_dim: int, n_patches: int) -> int:
        return 0

    def check_clip(self, name: str, n_frames: int) -> None:
        """Any clip length."""

    def forward(self, prediction: Tensor, out: ModelOutput) -> Tensor:
        p = out.decoder_masks.clamp_min(1e-8)  # (B, T, S, P)
        return -(p * p.log()).sum(dim=2).mean()


class BlobsDataModule(L.LightningDataModule):
    """Clips of coloured squares moving in straight lines, made in memory; masks in every batch.

    Batches: {"video": (B, T, 3, H, W) float in [0, 1], "masks": (B, T, K, H, W) bool}, K =
    n_objects + 1 with channel 0 the background; train clips are the first train_clip_frames frames.

    Args:
        n_train_clips, n_val_clips: clips per split. n_frames: T of a val clip. resolution: H = W.
        n_objects: squares per clip. train_clip_frames, batch_size, val_batch_size, num_workers,
        seed: as the built-in datamodules' keys of the same names.
    """

    # the facts of contracts.DataModule
    dataset_name = "blobs"
    val_frames = "whole videos"
    val_batch_keys = ("video", "masks", "index")
    ignore_background = True  # channel 0 is the background
    ignore_overlaps = False  # a later square hides an earlier one: one channel per pixel

    def __init__(
        self,
        n_train_clips: int,
        n_val_clips: int,
        n_frames: int,
        resolution: int,
        n_objects: int,
        train_clip_frames: int,
        batch_size: int,
        val_batch_size: int,
        num_workers: int,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not 1 <= train_clip_frames <= n_frames:
            raise ValueError(f"dataset.train_clip_frames={train_clip_frames} must be in [1, {n_frames}]")
        generator = torch.Generator().manual_seed(seed)
        self.train = self._clips(n_train_clips, train_clip_frames, resolution, n_objects, generator)
        self.val = self._clips(n_val_clips, n_frames, resolution, n_objects, generator)
        self.batch_size, self.val_batch_size, self.num_workers = batch_size, val_batch_size, num_workers
        self.train_clip_frames, self.mask_size = train_clip_frames, resolution

    @staticmethod
    def _clips(n: int, T: int, size: int, K: int, generator: torch.Generator) -> list[dict[str, Tensor]]:
        clips = []
        for _ in range(n):
            labels = torch.zeros(T, size, size, dtype=torch.long)
            video = torch.full((T, 3, size, size), 0.2)
            side = size // 4
            start = torch.randint(0, size - side, (K, 2), generator=generator)
            speed = torch.randint(-2, 3, (K, 2), generator=generator)
            colours = torch.rand(K, 3, generator=generator)
            for t in range(T):
                for k in range(K):
                    y, x = (start[k] + t * speed[k]).clamp(0, size - side).tolist()
                    labels[t, y : y + side, x : x + side] = k + 1
                    video[t, :, y : y + side, x : x + side] = colours[k, :, None, None]
            masks = F.one_hot(labels, K + 1).permute(0, 3, 1, 2).bool()  # (T, K + 1, H, W)
            clips.append({"video": video, "masks": masks})
        return clips

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train, self.batch_size, shuffle=True, drop_last=True, num_workers=self.num_workers
        )

    def val_dataloader(self) -> DataLoader:
        # map_stream: every clip once over DDP ranks, each with its "index" (contracts.DataModule)
        return DataLoader(
            map_stream(self.val, self.val_batch_size), batch_size=None, num_workers=self.num_workers
        )

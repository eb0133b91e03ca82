"""Frozen timm ViT returning block-N tokens (pre-norm) and block-N attention keys (§2.1-2.2)."""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slotsweep.contracts import EncoderOutput
from slotsweep.errors import SlotsweepError
from slotsweep.lean_timm import timm
from slotsweep.runs.safe_load import refuse_unpickling

__all__ = ["ViTEncoder", "sincos_2d"]


def sincos_2d(grid: tuple[int, int], dim: int) -> Tensor:
    """Fixed 2-D sin-cos position embedding (P, D), P = h * w in row-major order; D % 4 == 0."""
    freqs = 1.0 / 10000 ** (torch.arange(dim // 4) / (dim // 4))  # (D/4,)
    y, x = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    angles = [c.flatten()[:, None].float() * freqs for c in (y, x)]  # 2 x (P, D/4)
    return torch.cat([f(a) for a in angles for f in (torch.sin, torch.cos)], dim=1)


def _unloadable(weights: str, model_name: str, error: Exception) -> SlotsweepError:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return SlotsweepError(
        f"encoder.weights={weights} cannot be loaded into {model_name} ({type(error).__name__}: {reason}): "
        "give a complete .safetensors/.pth file of this architecture"
    )


class ViTEncoder(nn.Module):
    """A timm ViT cut after block N. Weights come from the hub, a local file, or a seeded random init.

    Args:
        model_name: timm model name, e.g. `vit_base_patch8_224.dino`, `vit_base_patch14_dinov2.lvd142m`.
        img_size: input resolution H = W in pixels.
        block: 1-based index N of the block whose tokens and keys are returned; None = last block.
        pretrained: load timm's pretrained weights (needs the hub, or `weights`).
        weights: local weights file (.safetensors/.pth/.npz) for offline nodes; implies pretrained.
        frozen: no gradients and always in eval mode (the reference setting).
        pos_embed_size: [Q] size of the stored position table when it differs from img_size; the table
            is then resampled on every forward (reference COCO: DINOv2 518-px table at 224 px, §2.1).
        init_seed: seed of the random init when not pretrained, so every run gets the same encoder.
        sincos_pos_scale: random encoders only: replace the position table by a fixed 2-D sin-cos
            embedding times this factor. A random ViT's default table is ~20x weaker than its patch
            embeddings, which leaves the tokens without the position that slots must encode.
        model_kwargs: extra timm constructor arguments (e.g. patch_size, depth for a small encoder).
        allow_pickle: read a `weights` file that needs arbitrary unpickling (runs code from the file;
            slotsweep.runs.safe_load). Set from the top-level `allow_pickle` by the task builder.
    """

    def __init__(
        self,
        model_name: str,
        img_size: int,
        block: int | None = None,
        pretrained: bool = True,
        weights: str | None = None,
        frozen: bool = True,
        pos_embed_size: int | None = None,
        init_seed: int = 0,
        sincos_pos_scale: float | None = None,
        model_kwargs: dict | None = None,
        allow_pickle: bool = False,
    ) -> None:
        super().__init__()
        if weights is not None and not Path(weights).is_file():
            raise SlotsweepError(
                f"encoder.weights={weights} does not exist: give the path of a local weights file "
                "(.safetensors/.pth) or set encoder.weights=null"
            )
        kwargs = dict(model_kwargs or {}, num_classes=0, img_size=pos_embed_size or img_size)
        if pos_embed_size not in (None, img_size):
            kwargs["dynamic_img_size"] = True
        try:
            if weights is not None and Path(weights).suffix != ".npz":  # .npz: numpy arrays, timm's loader
                with refuse_unpickling("encoder.weights", weights):
                    state = timm.models.load_state_dict(weights, weights_only=not allow_pickle)
                kwargs["pretrained_cfg_overlay"] = {"state_dict": state}
            elif weights is not None:
                kwargs["pretrained_cfg_overlay"] = {"file": str(weights)}
            with torch.random.fork_rng():
                torch.manual_seed(init_seed)
                model = timm.create_model(model_name, pretrained=pretrained or bool(weights), **kwargs)
        except SlotsweepError:  # refuse_unpickling's: names the file and the opt-in already
            raise
        except Exception as e:  # noqa: BLE001 - re-raised unless it is one of the user's cases
            if isinstance(e, RuntimeError) and "Unknown model" in str(e):
                raise SlotsweepError(f"encoder.model_name={model_name} is not a timm model") from e
            if weights is not None:  # torch's zip reader, safetensors...: a truncated or foreign file
                raise _unloadable(weights, model_name, e) from e
            if not isinstance(e, OSError):
                raise
            # hub unreachable: never fall back to random weights silently
            raise SlotsweepError(
                f"could not fetch pretrained weights for encoder.model_name={model_name} ({e}); "
                "on an offline node pass encoder.weights=/path/to/file.safetensors"
            ) from e
        if sincos_pos_scale is not None:
            if pretrained or weights:
                raise SlotsweepError("encoder.sincos_pos_scale is for random encoders: set it to null")
            grid = model.patch_embed.grid_size
            table = sincos_2d(grid, model.embed_dim) * sincos_pos_scale  # (P, D)
            with torch.no_grad():
                model.pos_embed[0, -table.shape[0] :] = table  # prefix-token positions stay as they are
        depth = len(model.blocks)
        block = depth if block is None else block
        if not 1 <= block <= depth:
            raise SlotsweepError(f"encoder.block={block} must be in [1, {depth}] for {model_name}")
        # a list: timm reads an int as "keep the last n blocks", not as a block index
        model.prune_intermediate_layers([block - 1], prune_norm=True, prune_head=True)
        self.model = model
        self.img_size = img_size
        self.feat_dim: int = model.embed_dim
        patch = model.patch_embed.patch_size[0]
        if img_size % patch != 0:
            raise SlotsweepError(f"encoder.img_size={img_size} must be a multiple of the patch size {patch}")
        self.grid_size = (img_size // patch, img_size // patch)
        self.frozen = frozen
        if not isinstance(getattr(model.blocks[-1].attn, "qkv", None), nn.Linear):
            raise SlotsweepError(
                f"encoder.model_name={model_name}: its attention has no fused qkv projection to take "
                "the keys from; use a timm VisionTransformer (DINO, DINOv2)"
            )
        if frozen:
            self.requires_grad_(False)
            self.eval()

    @property
    def n_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    def train(self, mode: bool = True) -> "ViTEncoder":
        return super().train(mode and not self.frozen)  # a frozen backbone stays in eval mode

    def forward(self, images: Tensor) -> EncoderOutput:
        """images: (B, 3, H, W) normalised -> EncoderOutput with (B, P, D_feat) tensors.

        timm's forward_features written out, so that block N's keys are returned rather than
        captured by a hook (a side effect torch.compile cannot trace, which also kept block N's whole
        qkv output alive)."""
        vit = self.model
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(images))))  # (B, N, D)
            *inner, last = vit.blocks
            for block in inner:
                x = block(x)
            keys = self._keys(last, x)  # (B, N, D)
            tokens = vit.norm(last(x))  # norm pruned: block-N output, (B, N, D)
        n_prefix = vit.num_prefix_tokens
        return EncoderOutput(features=tokens[:, n_prefix:], keys=keys[:, n_prefix:])

    def _keys(self, block: nn.Module, x: Tensor) -> Tensor:
        """Block N's attention keys, all heads (B, N, D): the middle third of its qkv projection of
        norm1(x), computed alone (norm1 twice and a D x D product, ~0.6% of a ViT-B's FLOPs)."""
        qkv, D = block.attn.qkv, self.feat_dim
        bias = None if qkv.bias is None else qkv.bias[D : 2 * D]
        return F.linear(block.norm1(x), qkv.weight[D : 2 * D], bias)

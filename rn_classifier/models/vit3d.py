"""Vision Transformer for 2D or 3D images, with the timm encoder interface.

Dosovitskiy et al. 2021 (ViT), as timm's ``VisionTransformer``: an N-D patch embedding
(``patch_embed.PatchEmbed``), a class token, an absolute positional embedding, timm ``Block``s
(pre-norm, fused ``F.scaled_dot_product_attention``) and a final LayerNorm.

Interface (timm ``vision_transformer.py``): ``forward_features`` → tokens, ``forward_head(tokens,
pre_logits=True)`` → pooled embedding, ``no_weight_decay()``, ``reset_classifier()``,
``set_grad_checkpointing()``. One encoder serves the DINO head, the MAE decoder and the classifier.

Crops whose size differs from ``img_size`` (DINO local crops) get the positional embedding
resampled linearly to their grid (``pos_embed.resample_pos_embed``); a crop size that is not a
multiple of the patch size raises ``InputError``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from .axes import ensure_tuple_rep
from timm.models.vision_transformer import Block, init_weights_vit_timm
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import InputError, check_choice
from .conv_stem import ConvStemPatchEmbed
from .mask_regions import MASK_ENCODINGS, MaskRegionEncoding, encoded_channels
from .patch_embed import PatchEmbed, check_spatial_dims, grid_for, unpatchify
from .pos_embed import resample_pos_embed, sincos_pos_embed

GLOBAL_POOLS = ("token", "avg")
POS_EMBED_TYPES = ("learn", "sincos")
# How voxels become tokens: "linear" = one matrix per patch (ViT, MAE); "conv" = stride-2 3×3
# convolutions (Xiao et al. 2021), which read details inside a patch.
STEMS = {"linear": PatchEmbed, "conv": ConvStemPatchEmbed}


class VisionTransformer3D(nn.Module):
    """ViT encoder for ``(B, C, *spatial)`` images with ``spatial_dims`` ∈ {2, 3}.

    Args:
        img_size: crop size in voxels the model is built for (int or one per axis).
        patch_size: patch size in voxels (int or one per axis); ``img_size`` must be a multiple.
        in_chans: input channels (1: T1CE; 2: T1CE + lesion mask).
        num_classes: size of the linear head; 0 → no head (``forward`` returns the embedding).
        embed_dim, depth, num_heads, mlp_ratio, qkv_bias: transformer size, as timm.
        drop_path_rate: stochastic depth, rising linearly from 0 to this value over the blocks.
        spatial_dims: 2 or 3.
        global_pool: ``"token"`` (class token, DINO) or ``"avg"`` (mean of patch tokens).
        pos_embed_type: ``"learn"`` (trainable, truncated-normal init as timm and DINO) or
            ``"sincos"`` (fixed 2D/3D sin-cos as MAE; needs ``embed_dim`` divisible by 4 / 6).
        stem: ``"linear"`` (patchify + linear projection) or ``"conv"`` (``conv_stem``; the
            patch size must be a power of two).
        mask_encoding: ``"binary"`` (the input channels go to the stem as they are) or
            ``"regions"`` (``mask_regions``: the T1CE of the lesion's core, rim and two shells as
            extra channels made from the mask; needs ``in_chans=2``).
    """

    def __init__(self, img_size: int | Sequence[int] = 96, patch_size: int | Sequence[int] = 16,
                 in_chans: int = 1, num_classes: int = 0, embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path_rate: float = 0.0, spatial_dims: int = 3, global_pool: str = "token",
                 pos_embed_type: str = "learn", stem: str = "linear",
                 mask_encoding: str = "binary"):
        super().__init__()
        check_spatial_dims(spatial_dims)
        check_choice(global_pool, "global_pool", GLOBAL_POOLS)
        check_choice(pos_embed_type, "pos_embed_type", POS_EMBED_TYPES)
        check_choice(stem, "stem", list(STEMS))
        check_choice(mask_encoding, "mask_encoding", MASK_ENCODINGS)
        if in_chans < 1:
            raise InputError(f"in_chans must be at least 1, got {in_chans}")
        if embed_dim % num_heads:
            raise InputError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        img_size = tuple(int(s) for s in ensure_tuple_rep(img_size, spatial_dims))
        patch_size = tuple(int(p) for p in ensure_tuple_rep(patch_size, spatial_dims))
        # Everything needed to rebuild this model (export.save_encoder writes it to encoder.json).
        self.init_kwargs: dict[str, Any] = dict(
            img_size=list(img_size), patch_size=list(patch_size), in_chans=int(in_chans),
            num_classes=int(num_classes), embed_dim=int(embed_dim), depth=int(depth),
            num_heads=int(num_heads), mlp_ratio=float(mlp_ratio), qkv_bias=bool(qkv_bias),
            drop_path_rate=float(drop_path_rate), spatial_dims=int(spatial_dims),
            global_pool=global_pool, pos_embed_type=pos_embed_type, stem=stem,
            mask_encoding=mask_encoding)

        self.spatial_dims = spatial_dims
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.embed_dim = self.num_features = embed_dim
        self.num_prefix_tokens = 1
        self.grad_checkpointing = False

        self.stem = stem
        self.mask_encoding = mask_encoding
        self.encode_input = MaskRegionEncoding() if mask_encoding == "regions" else nn.Identity()
        self.patch_embed = STEMS[stem](img_size, patch_size, encoded_channels(in_chans, mask_encoding),
                                       embed_dim, spatial_dims)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        num_tokens = self.num_prefix_tokens + self.patch_embed.num_patches
        if pos_embed_type == "sincos":
            self.pos_embed = nn.Parameter(sincos_pos_embed(self.grid_size, embed_dim), requires_grad=False)
        else:
            self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, embed_dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=qkv_bias, drop_path=rate,
                  norm_layer=norm_layer)
            for rate in rates])
        self.norm = norm_layer(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

        nn.init.normal_(self.cls_token, std=1e-6)  # as timm
        self.apply(init_weights_vit_timm)
        if stem == "linear":  # initialised like a linear layer on flattened patches (MAE, xavier)
            w = self.patch_embed.proj.weight.data
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))

    # -- attributes of the timm interface -------------------------------------------------
    @property
    def patch_size(self) -> tuple[int, ...]:
        return self.patch_embed.patch_size

    @property
    def img_size(self) -> tuple[int, ...]:
        return self.patch_embed.img_size

    @property
    def grid_size(self) -> tuple[int, ...]:
        return self.patch_embed.grid_size

    @property
    def in_chans(self) -> int:
        """Channels of the model's input (before any mask encoding)."""
        if self.mask_encoding == "regions":
            return 2
        return self.patch_embed.input_conv.in_channels

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters excluded from weight decay (timm convention); norms/biases are 1-D anyway."""
        return {"pos_embed", "cls_token"}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations."""
        self.grad_checkpointing = enable

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head by a fresh ``Linear(embed_dim, num_classes)`` (0 → no head)."""
        if global_pool is not None:
            self.global_pool = check_choice(global_pool, "global_pool", GLOBAL_POOLS)
            self.init_kwargs["global_pool"] = global_pool
        self.num_classes = num_classes
        self.init_kwargs["num_classes"] = int(num_classes)
        head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            init_weights_vit_timm(head)
        self.head = head.to(self.cls_token.device)

    # -- embedding ------------------------------------------------------------------------
    def grid_for(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        """Patch grid of a crop of ``spatial_shape`` voxels (``InputError`` if not divisible)."""
        return grid_for(spatial_shape, self.patch_size)

    def pos_embed_for(self, grid: Sequence[int]) -> torch.Tensor:
        """Positional embedding ``(1, 1 + prod(grid), D)`` for a patch grid, resampled if needed."""
        return resample_pos_embed(self.pos_embed, self.grid_size, grid, self.num_prefix_tokens)

    def embed_patches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch tokens and the class token, each with its positional embedding added.

        ``x: (B, C, *spatial)`` → ``(patch_tokens (B, L, D), cls_token (1, 1, D))``.
        """
        tokens = self.patch_embed(self.encode_input(x))
        pos = self.pos_embed_for(self.grid_for(x.shape[2:]))
        return tokens + pos[:, self.num_prefix_tokens:], self.cls_token + pos[:, :self.num_prefix_tokens]

    def _blocks_and_norm(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return self.norm(x)

    # -- forward --------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, C, *spatial)`` → normalised tokens ``(B, 1 + L, D)``, class token first."""
        tokens, cls = self.embed_patches(x)
        x = torch.cat([cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return self._blocks_and_norm(x)

    def forward_features_masked(self, x: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """Encode only the visible patches (MAE, He et al. 2022).

        ``x: (B, C, *spatial)``; ``ids_keep: (B, K)`` indices of the patches to keep (in the
        row-major patch order of ``patchify``) → tokens ``(B, 1 + K, D)``, class token first.
        The positional embedding is added before the gather, so kept tokens keep their position.
        """
        if self.stem != "linear":
            x = x * self._visible_voxels(x, ids_keep)
        tokens, cls = self.embed_patches(x)
        index = ids_keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])
        visible = torch.gather(tokens, dim=1, index=index)
        x = torch.cat([cls.expand(visible.shape[0], -1, -1), visible], dim=1)
        return self._blocks_and_norm(x)

    def _visible_voxels(self, x: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """``(B, 1, *spatial)`` 1 on the kept patches, 0 on the masked ones.

        A convolutional stem's receptive field crosses patch borders; zeroing the masked patches
        before it keeps their voxels out of the visible tokens (what MAE reconstructs stays hidden).
        """
        grid = self.grid_for(x.shape[2:])
        keep = torch.zeros(x.shape[0], math.prod(grid), 1, dtype=x.dtype, device=x.device)
        keep.scatter_(1, ids_keep.unsqueeze(-1), 1.0)
        patch_voxels = math.prod(self.patch_size)
        return unpatchify(keep.expand(-1, -1, patch_voxels), self.patch_size, grid)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``x: (B, 1 + L, D)`` → pooled ``(B, D)`` if ``pre_logits`` else head output ``(B, classes)``."""
        pooled = x[:, self.num_prefix_tokens:].mean(dim=1) if self.global_pool == "avg" else x[:, 0]
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, C, *spatial)`` → logits ``(B, num_classes)``, or the embedding ``(B, D)`` without head."""
        return self.forward_head(self.forward_features(x))

    def extra_repr(self) -> str:
        return (f"spatial_dims={self.spatial_dims}, img_size={self.img_size}, "
                f"patch_size={self.patch_size}, grid_size={self.grid_size}, "
                f"tokens={math.prod(self.grid_size) + self.num_prefix_tokens}")

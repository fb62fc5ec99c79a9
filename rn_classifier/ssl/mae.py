"""Masked autoencoder for 2D / 3D ViT encoders (MAE, He et al. 2022).

Split as in facebookresearch/mae ``models_mae.py``: ``forward_encoder`` (random masking by argsort
of noise drawn on the input's device, then the encoder on the visible patches only),
``forward_decoder`` (mask tokens re-inserted, timm ``Block``s, per-patch voxel prediction) and
``forward_loss`` (mean squared error on the removed patches only, optionally on per-patch
normalised voxels). The decoder's parameter names follow lightly's 2D ``MAEDecoderTIMM`` so that the
2D case is tested equal to it with the same weights; lightly's version only builds 2D square grids.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
from timm.models.vision_transformer import Block
from torch import nn

from ..errors import InputError
from ..models.patch_embed import patchify
from ..models.pos_embed import resample_pos_embed, sincos_pos_embed
from ..models.vit3d import VisionTransformer3D


def check_mask_ratio(r: float) -> float:
    if not 0.0 < float(r) < 1.0:
        raise InputError(f"mask_ratio must be in (0, 1), got {r}")
    return float(r)


def random_masking(batch_size: int, num_patches: int, mask_ratio: float, device: torch.device | str,
                   generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample random masking by argsort of uniform noise (``models_mae.random_masking``).

    Returns ``ids_keep (B, K)`` (visible patches, in shuffled order), ``mask (B, L)`` with
    1 = removed and 0 = kept, and ``ids_restore (B, L)`` which un-shuffles. Exactly
    ``K = int(L * (1 - mask_ratio))`` patches are kept in every sample.
    """
    check_mask_ratio(mask_ratio)
    len_keep = int(num_patches * (1 - mask_ratio))
    if not 0 < len_keep < num_patches:
        raise InputError(f"mask_ratio {mask_ratio} keeps {len_keep} of {num_patches} patches; "
                         f"at least one patch must be kept and one removed")
    noise = torch.rand(batch_size, num_patches, device=device, generator=generator)
    ids_shuffle = torch.argsort(noise, dim=1)  # ascending: the smallest noise is kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    mask = torch.ones(batch_size, num_patches, device=device)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, dim=1, index=ids_restore)
    return ids_keep, mask, ids_restore


class MAEDecoder(nn.Module):
    """The MAE decoder: ``embed`` → (mask tokens inserted by the caller) → ``decode`` → ``predict``.

    Shapes: ``embed (B, N, embed_dim) → (B, N, D_dec)``; ``decode (B, 1 + L, D_dec) → same``;
    ``predict (B, N, D_dec) → (B, N, prod(patch_size) * in_chans)``. The positional embedding is
    the fixed 2D/3D sin-cos one, resampled when the grid differs from ``grid_size``.
    """

    def __init__(self, grid_size: Sequence[int], patch_size: Sequence[int], in_chans: int,
                 embed_dim: int, decoder_embed_dim: int = 384, decoder_depth: int = 8,
                 decoder_num_heads: int = 12, mlp_ratio: float = 4.0):
        super().__init__()
        self.grid_size = tuple(int(g) for g in grid_size)
        self.num_prefix_tokens = 1
        if decoder_embed_dim % decoder_num_heads:
            raise InputError(f"decoder_embed_dim ({decoder_embed_dim}) must be divisible by "
                             f"decoder_num_heads ({decoder_num_heads})")
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(
            sincos_pos_embed(self.grid_size, decoder_embed_dim, self.num_prefix_tokens),
            requires_grad=False)
        self.decoder_blocks = nn.Sequential(*[
            Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
            for _ in range(decoder_depth)])
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, math.prod(patch_size) * in_chans, bias=True)

        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(_init_xavier)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder_embed(x)

    def decode(self, x: torch.Tensor, grid: Sequence[int] | None = None) -> torch.Tensor:
        pos = resample_pos_embed(self.decoder_pos_embed, self.grid_size, grid or self.grid_size,
                                 self.num_prefix_tokens)
        return self.decoder_norm(self.decoder_blocks(x + pos))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder_pred(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, 1 + L, embed_dim)`` (all tokens, class token first) → ``(B, 1 + L, patch voxels)``."""
        return self.predict(self.decode(self.embed(x)))


def _init_xavier(module: nn.Module) -> None:
    """Linear layers xavier-uniform, LayerNorm identity (facebookresearch/mae ``_init_weights``)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class MAE3D(nn.Module):
    """Masked autoencoder around a ``VisionTransformer3D`` encoder (2D or 3D).

    Args:
        encoder: the ViT to pretrain (its ``forward_features_masked`` runs on visible patches).
        decoder_embed_dim, decoder_depth, decoder_num_heads: decoder size; the defaults (384, 8,
            12) follow 3D MAE for medical images (SelfMedMAE, Zhou et al. 2023); 384 is divisible
            by 6 as the 3D sin-cos embedding needs.
        mask_ratio: fraction of patches removed, in (0, 1); 0.75 as MAE.
        norm_pix_loss: regress per-patch normalised voxels (mean 0, variance 1 per patch).
    """

    def __init__(self, encoder: VisionTransformer3D, decoder_embed_dim: int = 384,
                 decoder_depth: int = 8, decoder_num_heads: int = 12, mask_ratio: float = 0.75,
                 norm_pix_loss: bool = False, mlp_ratio: float = 4.0):
        super().__init__()
        self.encoder = encoder
        self.mask_ratio = check_mask_ratio(mask_ratio)
        self.norm_pix_loss = bool(norm_pix_loss)
        self.decoder = MAEDecoder(encoder.grid_size, encoder.patch_size, encoder.in_chans,
                                  encoder.embed_dim, decoder_embed_dim, decoder_depth,
                                  decoder_num_heads, mlp_ratio)

    def forward_encoder(self, x: torch.Tensor, mask_ratio: float | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x: (B, C, *spatial)`` → ``latent (B, 1 + K, D)``, ``mask (B, L)`` (1 = removed),
        ``ids_restore (B, L)``."""
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        grid = self.encoder.grid_for(x.shape[2:])
        ids_keep, mask, ids_restore = random_masking(x.shape[0], math.prod(grid), ratio, x.device)
        latent = self.encoder.forward_features_masked(x, ids_keep)
        return latent, mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor,
                        grid: Sequence[int] | None = None) -> torch.Tensor:
        """``latent (B, 1 + K, D)``, ``ids_restore (B, L)`` → ``pred (B, L, prod(patch) * C)``.

        ``grid`` is the patch grid of the input (default: the encoder's built grid).
        """
        grid = tuple(grid) if grid is not None else self.encoder.grid_size
        if ids_restore.shape[1] != math.prod(grid):
            raise InputError(f"ids_restore has {ids_restore.shape[1]} patches, grid {grid} has "
                             f"{math.prod(grid)}; pass the input's grid")
        x = self.decoder.embed(latent)
        b, num_patches = ids_restore.shape
        n_visible = x.shape[1] - 1
        mask_tokens = self.decoder.mask_token.expand(b, num_patches - n_visible, -1)
        patches = torch.cat([x[:, 1:], mask_tokens], dim=1)  # shuffled order: visible first
        index = ids_restore.unsqueeze(-1).expand(-1, -1, patches.shape[-1])
        patches = torch.gather(patches, dim=1, index=index)  # back to grid order
        x = torch.cat([x[:, :1], patches], dim=1)
        x = self.decoder.predict(self.decoder.decode(x, grid))
        return x[:, 1:]

    def forward_loss(self, x: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error over the removed patches only.

        ``x: (B, C, *spatial)``; ``pred: (B, L, prod(patch) * C)``; ``mask: (B, L)``, 1 = removed.
        """
        target = patchify(x, self.encoder.patch_size)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        per_patch = ((pred - target) ** 2).mean(dim=-1)
        return (per_patch * mask).sum() / mask.sum()

    def forward(self, x: torch.Tensor, mask_ratio: float | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x: (B, C, *spatial)`` → ``(loss, pred (B, L, prod(patch) * C), mask (B, L))``."""
        latent, mask, ids_restore = self.forward_encoder(x, mask_ratio)
        pred = self.forward_decoder(latent, ids_restore, self.encoder.grid_for(x.shape[2:]))
        return self.forward_loss(x, pred, mask), pred, mask

"""N-D patch embedding: a convolution whose kernel and stride are the patch size.

The 2D case is exactly timm's ``PatchEmbed`` (``timm/layers/patch_embed.py``); the test
``tests/test_models_patch_embed.py`` loads the same weights into both and compares outputs.
The 3D case is the same idea with ``nn.Conv3d`` (as MONAI's ``PatchEmbeddingBlock`` with
``proj_type="conv"``), without MONAI's built-in positional embedding, because the encoder
interpolates its positional embedding for crops of another size (DINO local crops).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.utils import ensure_tuple_rep
from torch import nn

from ..errors import InputError

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}


def check_spatial_dims(spatial_dims: int) -> int:
    if spatial_dims not in _CONV:
        raise InputError(f"spatial_dims must be one of {sorted(_CONV)}, got {spatial_dims}")
    return spatial_dims


def grid_for(spatial_shape: Sequence[int], patch_size: Sequence[int]) -> tuple[int, ...]:
    """Number of patches along each axis; every axis must be a multiple of the patch size.

    Raises ``InputError`` naming the crop size and the patch size otherwise.
    """
    spatial_shape, patch_size = tuple(int(s) for s in spatial_shape), tuple(patch_size)
    if len(spatial_shape) != len(patch_size):
        raise InputError(f"input has {len(spatial_shape)} spatial axes {spatial_shape}, the model "
                         f"expects {len(patch_size)} (patch size {patch_size})")
    if any(s % p for s, p in zip(spatial_shape, patch_size)) or any(s <= 0 for s in spatial_shape):
        raise InputError(f"crop size {spatial_shape} is not a positive multiple of the patch size "
                         f"{patch_size} on every axis; choose a crop size divisible by the patch size")
    return tuple(s // p for s, p in zip(spatial_shape, patch_size))


class PatchEmbed(nn.Module):
    """Cut an image into non-overlapping patches and project each to ``embed_dim``.

    ``x: (B, C, *spatial)`` → ``(B, L, embed_dim)`` with ``L = prod(spatial / patch)``; tokens are in
    row-major order of the patch grid (last axis fastest), the order ``ssl.patchify`` uses.
    ``proj`` is the ``nn.Conv{2,3}d``; fine-tuning inflates its input channels (T1CE → T1CE + mask).
    """

    def __init__(self, img_size: int | Sequence[int], patch_size: int | Sequence[int],
                 in_chans: int = 1, embed_dim: int = 768, spatial_dims: int = 3, bias: bool = True):
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.patch_size = tuple(int(p) for p in ensure_tuple_rep(patch_size, spatial_dims))
        self.img_size = tuple(int(s) for s in ensure_tuple_rep(img_size, spatial_dims))
        self.grid_size = grid_for(self.img_size, self.patch_size)
        self.num_patches = math.prod(self.grid_size)
        self.in_chans = int(in_chans)
        self.proj = _CONV[spatial_dims](in_chans, embed_dim, kernel_size=self.patch_size,
                                        stride=self.patch_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, C, *spatial)`` → ``(B, L, D)``."""
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.proj.in_channels:
            raise InputError(f"expected input of shape (B, {self.proj.in_channels}, "
                             f"{', '.join('*' * self.spatial_dims)}) for a {self.spatial_dims}D model "
                             f"with {self.proj.in_channels} channel(s), got {tuple(x.shape)}")
        grid_for(x.shape[2:], self.patch_size)
        return self.proj(x).flatten(2).transpose(1, 2)

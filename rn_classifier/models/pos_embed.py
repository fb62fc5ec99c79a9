"""Absolute positional embeddings for an N-D patch grid: fixed sin-cos and resampling.

* ``sincos_pos_embed``: the fixed sin-cos embedding of MAE (He et al. 2022), built by MONAI's
  ``build_sincos_position_embedding`` (2D and 3D), with zero rows prepended for the class token as
  in facebookresearch/mae ``util/pos_embed.py``. In 2D it equals lightly's
  ``get_2d_sine_cosine_positional_embedding`` (tested).
* ``resample_pos_embed``: linear (bilinear / trilinear) interpolation of the patch part of a
  positional embedding to another grid, e.g. a model built for 32³ crops seeing 16³ DINO local
  crops. In 2D it equals timm's ``resample_abs_pos_embed(..., interpolation="bilinear",
  antialias=False)`` (tested); timm's default bicubic has no 3D counterpart in PyTorch.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..errors import InputError

_LINEAR_MODE = {1: "linear", 2: "bilinear", 3: "trilinear"}


def sincos_pos_embed(grid_size: Sequence[int], embed_dim: int, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Fixed sin-cos embedding ``(1, num_prefix_tokens + prod(grid_size), embed_dim)``.

    Prefix (class) token rows are zero. ``embed_dim`` must be divisible by ``2 * spatial_dims * ...``
    as MONAI requires: by 4 in 2D, by 6 in 3D.
    """
    from monai.networks.blocks.pos_embed_utils import build_sincos_position_embedding  # only here: a fixed embedding

    grid_size = [int(g) for g in grid_size]
    spatial_dims = len(grid_size)
    divisor = {2: 4, 3: 6}.get(spatial_dims)
    if divisor is None:
        raise InputError(f"sin-cos positional embedding supports 2D or 3D grids, got grid {grid_size}")
    if embed_dim % divisor:
        raise InputError(f"a fixed sin-cos positional embedding in {spatial_dims}D needs an embedding "
                         f"dimension divisible by {divisor}, got {embed_dim}; use pos_embed_type='learn' "
                         f"or another embed_dim")
    with warnings.catch_warnings():  # MONAI calls torch.meshgrid without `indexing` (it means "ij")
        warnings.simplefilter("ignore", UserWarning)
        patch_part = build_sincos_position_embedding(grid_size, embed_dim, spatial_dims=spatial_dims)
    patch_part = patch_part.detach().float()
    prefix = torch.zeros(1, num_prefix_tokens, embed_dim)
    return torch.cat([prefix, patch_part], dim=1)


def resample_pos_embed(pos_embed: torch.Tensor, old_grid: Sequence[int], new_grid: Sequence[int],
                       num_prefix_tokens: int = 1) -> torch.Tensor:
    """Interpolate ``pos_embed: (1, P + prod(old_grid), D)`` to ``(1, P + prod(new_grid), D)``.

    The ``P`` prefix (class token) rows are kept as they are. Interpolation is linear in each axis
    with ``align_corners=False`` (patch centres, as timm); returns ``pos_embed`` itself when the
    grids agree, so the common case costs nothing.
    """
    old_grid, new_grid = tuple(int(g) for g in old_grid), tuple(int(g) for g in new_grid)
    if old_grid == new_grid:
        return pos_embed
    prefix, patch_part = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = pos_embed.shape[-1]
    orig_dtype = patch_part.dtype
    # (1, L, D) → (1, D, *old_grid) → interpolate → (1, L', D)
    grid = patch_part.float().reshape(1, *old_grid, dim).movedim(-1, 1)
    grid = F.interpolate(grid, size=new_grid, mode=_LINEAR_MODE[len(old_grid)], align_corners=False)
    patch_part = grid.movedim(1, -1).reshape(1, -1, dim).to(orig_dtype)
    return torch.cat([prefix, patch_part], dim=1)

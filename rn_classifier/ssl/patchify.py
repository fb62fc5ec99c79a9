"""N-D patchify / unpatchify: images ↔ sequences of flattened patches.

Generalises lightly's 2D ``lightly.models.utils.patchify`` / ``unpatchify`` (which require square
2D images) to any number of spatial axes and non-square crops. Patch order is row-major over the
patch grid (last axis fastest), the order of ``PatchEmbed`` tokens; within a patch the voxels come
first (row-major) and the channel last, as lightly and facebookresearch/mae. The 2D case is tested
equal to lightly's functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.utils import ensure_tuple_rep

from ..errors import InputError
from ..models.patch_embed import grid_for


def patchify(x: torch.Tensor, patch_size: int | Sequence[int]) -> torch.Tensor:
    """``x: (B, C, *spatial)`` → patches ``(B, L, prod(patch_size) * C)``, ``L = prod(spatial / patch)``."""
    spatial_dims = x.ndim - 2
    patch = tuple(int(p) for p in ensure_tuple_rep(patch_size, spatial_dims))
    grid = grid_for(x.shape[2:], patch)
    b, c = x.shape[:2]
    # (B, C, g1, p1, g2, p2, ...) → (B, g1, g2, ..., p1, p2, ..., C)
    x = x.reshape(b, c, *[n for gp in zip(grid, patch) for n in gp])
    grid_axes = [2 + 2 * i for i in range(spatial_dims)]
    patch_axes = [3 + 2 * i for i in range(spatial_dims)]
    x = x.permute(0, *grid_axes, *patch_axes, 1)
    return x.reshape(b, math.prod(grid), math.prod(patch) * c)


def unpatchify(x: torch.Tensor, patch_size: int | Sequence[int], grid: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``x: (B, L, prod(patch) * C)`` → ``(B, C, *(grid * patch))``.

    ``grid`` is the number of patches along each axis; the channel count is inferred.
    """
    grid = tuple(int(g) for g in grid)
    spatial_dims = len(grid)
    patch = tuple(int(p) for p in ensure_tuple_rep(patch_size, spatial_dims))
    b, length, width = x.shape
    if length != math.prod(grid) or width % math.prod(patch):
        raise InputError(f"cannot unpatchify a ({b}, {length}, {width}) patch sequence onto grid "
                         f"{grid} with patch size {patch}: expected {math.prod(grid)} patches of a "
                         f"multiple of {math.prod(patch)} values")
    c = width // math.prod(patch)
    x = x.reshape(b, *grid, *patch, c)
    # (B, g1, .., gn, p1, .., pn, C) → (B, C, g1, p1, g2, p2, ...)
    order = [0, 2 * spatial_dims + 1]
    for i in range(spatial_dims):
        order += [1 + i, 1 + spatial_dims + i]
    x = x.permute(*order)
    return x.reshape(b, c, *[g * p for g, p in zip(grid, patch)])

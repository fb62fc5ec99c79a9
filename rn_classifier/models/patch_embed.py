"""N-D patches: cutting images into patches (patchify / unpatchify) and embedding them.

* ``patchify`` / ``unpatchify`` generalise lightly's 2D ``lightly.models.utils.patchify`` /
  ``unpatchify`` (square 2D images only) to any number of spatial axes and non-square crops; the
  MAE loss uses them for its targets. Patch order is row-major over the patch grid (last axis
  fastest), the order of the embedded tokens; within a patch the voxels come first (row-major) and
  the channel last, as lightly and facebookresearch/mae. Tested equal to lightly's in 2D.
* ``PatchEmbed`` is timm's ``PatchEmbed`` (a convolution whose kernel and stride are the patch
  size) in N-D, tested equal to timm's in 2D. Its parameters live in an ``nn.Conv{2,3}d`` called
  ``proj`` (as timm and MONAI's ``PatchEmbeddingBlock``; fine-tuning inflates its input
  channels), but the product is computed as ``patchify`` + one matrix multiply, which is the same
  operation, and faster: forward + backward of a 16³-patch embedding of 96³ crops took about
  2× (fp32) and 6× (bf16) longer as ``Conv3d`` on the 2-core development CPU (batch 4), and 7×
  (fp32) and 3× (bf16) on an H200 (batch 32; ``benchmarks/model_speed.py``). It carries no positional
  embedding (unlike MONAI's block) because the encoder resamples that for other crop sizes.

These live with the encoder, not in ``ssl``, because the encoder itself patchifies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from .axes import ensure_tuple_rep
from torch import nn

from ..errors import InputError

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}


def check_spatial_dims(spatial_dims: int) -> int:
    if spatial_dims not in _CONV:
        raise InputError(f"spatial_dims must be one of {sorted(_CONV)}, got {spatial_dims}")
    return spatial_dims


def check_input(x: torch.Tensor, spatial_dims: int, in_chans: int) -> None:
    """``InputError`` unless ``x`` is ``(B, in_chans, *spatial)`` with ``spatial_dims`` axes."""
    if x.ndim != spatial_dims + 2 or x.shape[1] != in_chans:
        raise InputError(f"expected input of shape (B, {in_chans}, {', '.join('*' * spatial_dims)}) "
                         f"for a {spatial_dims}D model with {in_chans} channel(s), got {tuple(x.shape)}")


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
    row-major order of the patch grid (last axis fastest), the order of :func:`patchify`.
    ``proj`` is the ``nn.Conv{2,3}d`` holding the weights; fine-tuning inflates its input channels
    (T1CE → T1CE + mask). ``proj(x).flatten(2).transpose(1, 2)`` gives the same tokens.
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

    @property
    def input_conv(self) -> nn.Conv2d | nn.Conv3d:
        """The convolution that reads the image channels (the one inflation widens)."""
        return self.proj

    def replace_input_conv(self, conv: nn.Conv2d | nn.Conv3d) -> None:
        self.proj = conv
        self.in_chans = conv.in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, C, *spatial)`` → ``(B, L, D)``."""
        check_input(x, self.spatial_dims, self.proj.in_channels)
        # conv(kernel = stride = patch) == patchify + linear; the (D, C, *patch) kernel is laid
        # out as (D, *patch, C) to match patchify's voxel-then-channel order.
        weight = self.proj.weight.movedim(1, -1).reshape(self.proj.out_channels, -1)
        return F.linear(patchify(x, self.patch_size), weight, self.proj.bias)

"""A convolutional stem in place of the linear patchify (Xiao et al. 2021, "Early convolutions
help transformers see better").

The linear patch embedding sees each 8³ patch as one flat vector: the 1–2-voxel details that
separate radiation necrosis from progression (a thin enhancing rim, a feathered margin, small
cavities) can only be read by features that look inside a token, and a tiny ViT trained from
scratch on flat patches did not fit its own training lesions (issue 14, lead 9). A stack of
stride-2 3×3 convolutions gives every token such features at the same token count.

* ``ConvStem`` is timm's ``vision_transformer_hybrid.ConvStem`` (``ConvNormAct`` layers: conv
  without bias → norm → ReLU, the last conv with bias and neither) for 2 or 3 spatial axes;
  tested equal to timm's in 2D. timm's version builds ``nn.Conv2d`` / ``BatchNorm2d`` only.
* ``ConvStemPatchEmbed`` puts it where ``PatchEmbed`` sits in the encoder: same input checks,
  same output ``(B, L, D)`` in the row-major token order of ``patchify``, the stride product
  equal to the patch size. Its first convolution is ``input_conv`` (the one fine-tuning inflates
  from T1CE to T1CE + mask, as ``PatchEmbed.proj``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from .axes import ensure_tuple_rep
from timm.layers import get_padding
from torch import nn

from ..errors import InputError
from .patch_embed import check_input, check_spatial_dims, grid_for

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_BATCH_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


class ConvNormAct(nn.Module):
    """timm's ``ConvNormAct`` in N-D: ``conv`` → ``bn`` → ReLU (norm and act optional)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int, spatial_dims: int,
                 bias: bool, apply_norm_act: bool):
        super().__init__()
        self.conv = _CONV[spatial_dims](in_chs, out_chs, kernel_size, stride=stride,
                                        padding=get_padding(kernel_size, stride), bias=bias)
        self.bn = _BATCH_NORM[spatial_dims](out_chs) if apply_norm_act else nn.Identity()
        self.act = nn.ReLU(inplace=True) if apply_norm_act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class ConvStem(nn.Sequential):
    """``depth`` stride-2 convolutions; ``channels`` per layer (an int gives timm's tiers
    ``(c / 2^(depth-1), ..., c / 2, c)``). Module names ``0.conv``, ``0.bn``, ... as timm's."""

    def __init__(self, in_chans: int, channels: int | Sequence[int], depth: int = 3,
                 kernel_size: int = 3, spatial_dims: int = 3):
        super().__init__()
        check_spatial_dims(spatial_dims)
        if isinstance(channels, int):
            channels = tuple(channels // 2 ** i for i in range(depth))[::-1]
        if len(channels) != depth or min(channels) < 1:
            raise InputError(f"conv stem: {depth} layers need {depth} positive channel counts, "
                             f"got {list(channels)}")
        in_chs = in_chans
        for i, out_chs in enumerate(channels):
            last = i == depth - 1
            self.add_module(str(i), ConvNormAct(in_chs, out_chs, kernel_size, 2, spatial_dims,
                                                bias=last, apply_norm_act=not last))
            in_chs = out_chs


class ConvStemPatchEmbed(nn.Module):
    """Tokens from a ``ConvStem`` whose strides multiply to the patch size (``2^depth``).

    ``x: (B, C, *spatial)`` → ``(B, L, embed_dim)``, ``L = prod(spatial / patch)``, tokens in
    row-major order of the patch grid, as ``PatchEmbed``.
    """

    def __init__(self, img_size: int | Sequence[int], patch_size: int | Sequence[int],
                 in_chans: int = 1, embed_dim: int = 768, spatial_dims: int = 3):
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.patch_size = tuple(int(p) for p in ensure_tuple_rep(patch_size, spatial_dims))
        self.img_size = tuple(int(s) for s in ensure_tuple_rep(img_size, spatial_dims))
        if len(set(self.patch_size)) != 1 or self.patch_size[0] < 4 \
                or self.patch_size[0] & (self.patch_size[0] - 1):
            raise InputError(f"the conv stem needs one patch size that is a power of two >= 4 on "
                             f"every axis (its stride-2 layers), got {list(self.patch_size)}")
        self.grid_size = grid_for(self.img_size, self.patch_size)
        self.num_patches = math.prod(self.grid_size)
        self.in_chans = int(in_chans)
        depth = int(math.log2(self.patch_size[0]))
        self.stem = ConvStem(in_chans, embed_dim, depth=depth, spatial_dims=spatial_dims)

    @property
    def input_conv(self) -> nn.Conv2d | nn.Conv3d:
        """The convolution that reads the image channels (the one inflation widens)."""
        return self.stem[0].conv

    def replace_input_conv(self, conv: nn.Conv2d | nn.Conv3d) -> None:
        self.stem[0].conv = conv
        self.in_chans = conv.in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, C, *spatial)`` → ``(B, L, D)``."""
        check_input(x, self.spatial_dims, self.input_conv.in_channels)
        grid_for(x.shape[2:], self.patch_size)  # the same error as PatchEmbed for a bad crop size
        return self.stem(x).flatten(2).transpose(1, 2)

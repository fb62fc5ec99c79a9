"""The lesion mask as region channels: the image inside the lesion's core, its rim and two
shells around it, as separate input channels of the encoder (issue 14).

A radiologist separates necrosis from progression by how the lesion looks in its core, along its
enhancing rim and in the oedema around it; the crop statistics that beat the ViT on the synthetic
diagnostic are exactly such per-region intensity distributions (``pretrain.probe.crop_statistics``).
A binary mask channel leaves the network to discover those regions from the mask's edges with
its first convolutions; this encoding hands them over: from the input ``(T1CE, mask)`` it makes

    T1CE, mask, T1CE·core, T1CE·rim, T1CE·inner shell, T1CE·outer shell

with the regions of ``crop_statistics``: core = the mask eroded once, rim = mask minus core,
inner shell = 2 dilations minus the mask, outer shell = 5 dilations minus 2. Erosion and dilation
use the 6-connected cross (SciPy's default ``generate_binary_structure(3, 1)``) with SciPy's
border convention (outside the crop is background), written as max-pools so they run on the
batch inside the network; tested equal to ``scipy.ndimage.binary_dilation`` / ``binary_erosion``.
The encoding has no parameters: a model input stays ``(B, 2, X, Y, Z)`` and ``predict`` feeds it
as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

MASK_ENCODINGS = ("binary", "regions")
REGIONS = ("core", "rim", "inner_shell", "outer_shell")
INNER_SHELL, OUTER_SHELL = 2, 5  # dilations (voxels) bounding the two shells, as crop_statistics


def dilate(mask: torch.Tensor, iterations: int = 1) -> torch.Tensor:
    """Binary dilation of ``mask: (B, 1, *spatial)`` (0/1 floats) by the 6-connected cross,
    ``iterations`` times; outside the crop counts as background."""
    spatial_dims = mask.dim() - 2
    pool = F.max_pool3d if spatial_dims == 3 else F.max_pool2d
    for _ in range(iterations):
        # The cross is the union of one 3-voxel line per axis through the centre.
        lines = []
        for axis in range(spatial_dims):
            kernel = [1] * spatial_dims
            kernel[axis] = 3
            padding = [0] * spatial_dims
            padding[axis] = 1
            lines.append(pool(mask, kernel_size=kernel, stride=1, padding=padding))
        mask = torch.stack(lines).amax(dim=0)
    return mask


def erode(mask: torch.Tensor, iterations: int = 1) -> torch.Tensor:
    """Binary erosion by the 6-connected cross; outside the crop counts as background, so the
    mask erodes at the crop border (SciPy's ``border_value=0``)."""
    spatial_dims = mask.dim() - 2
    padded = F.pad(1.0 - mask, [iterations] * (2 * spatial_dims), value=1.0)
    eroded = 1.0 - dilate(padded, iterations)
    crop = tuple(slice(iterations, -iterations) for _ in range(spatial_dims))
    return eroded[(slice(None), slice(None), *crop)]


def lesion_regions(mask: torch.Tensor) -> list[torch.Tensor]:
    """``mask: (B, 1, *spatial)`` 0/1 → core, rim, inner shell, outer shell (each 0/1, same shape).

    A lesion too thin to keep a core after one erosion has the whole mask as its core and an
    empty rim (``crop_statistics`` does the same).
    """
    core = erode(mask)
    has_core = core.flatten(1).amax(dim=1).view(-1, *[1] * (mask.dim() - 1)) > 0
    core = torch.where(has_core, core, mask)
    grown_inner = dilate(mask, INNER_SHELL)
    grown_outer = dilate(grown_inner, OUTER_SHELL - INNER_SHELL)
    return [core, mask - core, grown_inner - mask, grown_outer - grown_inner]


class MaskRegionEncoding(nn.Module):
    """``(B, 2, *spatial)`` (T1CE, mask) → ``(B, 6, *spatial)``: T1CE, mask, T1CE per region."""

    out_channels = 2 + len(REGIONS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 2:
            raise InputError(f"the region mask encoding reads (T1CE, lesion mask) inputs, got "
                             f"{x.shape[1]} channel(s)")
        image, mask = x[:, :1], (x[:, 1:2] > 0.5).to(x.dtype)
        return torch.cat([image, mask, *(image * region for region in lesion_regions(mask))], dim=1)


def encoded_channels(in_chans: int, mask_encoding: str) -> int:
    """Channels the patch embedding reads for a model input of ``in_chans`` channels."""
    if mask_encoding == "binary":
        return in_chans
    if in_chans != 2:
        raise InputError(f"mask_encoding='regions' needs the two input channels T1CE + lesion mask, "
                         f"got in_chans={in_chans}; use mask_encoding='binary' for T1CE alone")
    return MaskRegionEncoding.out_channels

"""N-D patchify / unpatchify equal lightly's 2D functions and invert each other in 3D."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightly.models.utils import patchify as lightly_patchify
from lightly.models.utils import unpatchify as lightly_unpatchify

from rn_classifier.errors import InputError
from rn_classifier.models.patch_embed import PatchEmbed, patchify, unpatchify


def test_patchify_equals_lightly_in_2d():
    x = torch.randn(2, 3, 24, 24)
    ours = patchify(x, 8)
    torch.testing.assert_close(ours, lightly_patchify(x, 8), rtol=0, atol=0)
    torch.testing.assert_close(unpatchify(ours, 8, (3, 3)), lightly_unpatchify(ours, 8, channels=3),
                               rtol=0, atol=0)


def test_unpatchify_inverts_patchify_in_3d_non_cubic():
    x = torch.randn(2, 2, 16, 8, 24)
    patches = patchify(x, (8, 4, 8))
    assert patches.shape == (2, 2 * 2 * 3, 8 * 4 * 8 * 2)
    assert torch.equal(unpatchify(patches, (8, 4, 8), (2, 2, 3)), x)


def test_patch_order_matches_patch_embed_tokens():
    # A patch embedding whose conv copies each voxel to one output channel (in patchify's
    # voxel-then-channel order) reproduces patchify exactly: tokens and patches align.
    patch, chans = (2, 2, 2), 2
    width = 8 * chans
    pe = PatchEmbed(img_size=(4, 6, 4), patch_size=patch, in_chans=chans, embed_dim=width, spatial_dims=3)
    with torch.no_grad():
        pe.proj.bias.zero_()
        pe.proj.weight.zero_()
        for out in range(width):
            voxel, channel = divmod(out, chans)
            i, j, k = voxel // 4, (voxel // 2) % 2, voxel % 2
            pe.proj.weight[out, channel, i, j, k] = 1.0
    x = torch.randn(1, chans, 4, 6, 4)
    torch.testing.assert_close(pe(x), patchify(x, patch))


def test_shape_errors_name_the_values():
    with pytest.raises(InputError, match=r"crop size \(10, 16, 16\).*patch size \(8, 8, 8\)"):
        patchify(torch.randn(1, 1, 10, 16, 16), 8)
    with pytest.raises(InputError, match=r"grid \(2, 2, 2\) with patch size \(8, 8, 8\)"):
        unpatchify(torch.randn(1, 7, 512), 8, (2, 2, 2))


@pytest.mark.parametrize("value", [3, (2, 4, 6), [5, 5, 5], np.array([1, 2, 3]), 2.5])
def test_ensure_tuple_rep_is_monais(value):
    """models.axes keeps MONAI out of model building; it repeats as MONAI's does."""
    from monai.utils import ensure_tuple_rep as monai_rep

    from rn_classifier.models.axes import ensure_tuple_rep

    assert ensure_tuple_rep(value, 3) == monai_rep(value, 3)
    with pytest.raises(ValueError):
        ensure_tuple_rep((1, 2), 3)

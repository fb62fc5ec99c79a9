"""The N-D patch and positional embeddings equal the 2D library versions (timm, lightly)."""

from __future__ import annotations

import pytest
import torch
from lightly.models.utils import get_2d_sine_cosine_positional_embedding
from timm.layers import PatchEmbed as TimmPatchEmbed
from timm.layers import resample_abs_pos_embed

from rn_classifier.errors import InputError
from rn_classifier.models.patch_embed import PatchEmbed
from rn_classifier.models.pos_embed import resample_pos_embed, sincos_pos_embed


def test_patch_embed_equals_timm_in_2d():
    torch.manual_seed(0)
    ours = PatchEmbed(img_size=(32, 48), patch_size=8, in_chans=2, embed_dim=24, spatial_dims=2)
    timm_pe = TimmPatchEmbed(img_size=(32, 48), patch_size=8, in_chans=2, embed_dim=24)
    timm_pe.proj.load_state_dict(ours.proj.state_dict())
    x = torch.randn(3, 2, 32, 48)
    torch.testing.assert_close(ours(x), timm_pe(x))
    assert ours.grid_size == timm_pe.grid_size and ours.num_patches == timm_pe.num_patches


def test_patch_embed_3d_tokens_follow_row_major_patch_order():
    torch.manual_seed(0)
    pe = PatchEmbed(img_size=16, patch_size=8, in_chans=1, embed_dim=4, spatial_dims=3)
    x = torch.randn(1, 1, 16, 16, 16)
    tokens = pe(x)
    assert tokens.shape == (1, 8, 4)
    # the matmul route equals the convolution it stands for
    torch.testing.assert_close(tokens, pe.proj(x).flatten(2).transpose(1, 2))
    # token 1 is patch (0, 0, 1): voxels [0:8, 0:8, 8:16]
    patch = x[:, :, 0:8, 0:8, 8:16]
    expected = torch.einsum("bcxyz,dcxyz->bd", patch, pe.proj.weight) + pe.proj.bias
    torch.testing.assert_close(tokens[:, 1], expected)


def test_sincos_equals_lightly_in_2d():
    ours = sincos_pos_embed((6, 6), embed_dim=32)
    ref = torch.from_numpy(get_2d_sine_cosine_positional_embedding(32, 6, cls_token=True)).float()
    torch.testing.assert_close(ours[0], ref)


def test_sincos_3d_distinct_positions_and_divisibility():
    pe = sincos_pos_embed((2, 3, 4), embed_dim=48)
    assert pe.shape == (1, 1 + 24, 48)
    assert torch.equal(pe[0, 0], torch.zeros(48))  # class token row
    assert torch.unique(pe[0, 1:], dim=0).shape[0] == 24  # every patch position is distinct
    with pytest.raises(InputError, match="divisible by 6, got 32"):
        sincos_pos_embed((2, 2, 2), embed_dim=32)


def test_resample_equals_timm_bilinear_in_2d():
    torch.manual_seed(0)
    pos = torch.randn(1, 1 + 6 * 4, 16)
    ours = resample_pos_embed(pos, (6, 4), (3, 5))
    ref = resample_abs_pos_embed(pos, new_size=[3, 5], old_size=[6, 4], num_prefix_tokens=1,
                                 interpolation="bilinear", antialias=False)
    torch.testing.assert_close(ours, ref)
    assert resample_pos_embed(pos, (6, 4), (6, 4)) is pos


def test_resample_3d_of_a_linear_ramp_stays_linear():
    # A positional embedding linear in one axis is preserved by linear interpolation: resampling
    # 4 → 2 patches averages pairs (align_corners=False), e.g. (0, 1, 2, 3) → (0.5, 2.5).
    ramp = torch.arange(4.0).view(4, 1, 1).expand(4, 2, 2).reshape(1, 16, 1)
    pos = torch.cat([torch.full((1, 1, 1), 7.0), ramp], dim=1)
    out = resample_pos_embed(pos, (4, 2, 2), (2, 2, 2))
    assert out[0, 0, 0] == 7.0
    torch.testing.assert_close(out[0, 1:, 0].view(2, 2, 2)[:, 0, 0], torch.tensor([0.5, 2.5]))

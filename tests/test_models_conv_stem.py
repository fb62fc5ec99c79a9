"""The convolutional stem: timm's ConvStem in 2D, the encoder with it in 3D, inflation, MAE masking."""

from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer_hybrid import ConvStem as TimmConvStem

from rn_classifier.errors import InputError
from rn_classifier.finetune.inflate import inflate_patch_embedding
from rn_classifier.models.conv_stem import ConvStem, ConvStemPatchEmbed
from rn_classifier.models.vit3d import VisionTransformer3D


def test_conv_stem_equals_timms_in_2d():
    torch.manual_seed(0)
    ours = ConvStem(in_chans=2, channels=32, depth=3, spatial_dims=2)
    theirs = TimmConvStem(in_chans=2, depth=3, channels=32, stride=(2, 2, 2))
    # Same layer order and shapes; timm names the parts conv / bn (ConvNormAct) as ours.
    assert [v.shape for v in ours.state_dict().values()] == \
        [v.shape for v in theirs.state_dict().values()]
    theirs.load_state_dict(dict(zip(theirs.state_dict(), ours.state_dict().values())))
    x = torch.randn(3, 2, 24, 40)
    for mode in ("train", "eval"):
        getattr(ours, mode)(), getattr(theirs, mode)()
        torch.testing.assert_close(ours(x), theirs(x))


def test_conv_stem_tokens_in_patch_order_3d():
    pe = ConvStemPatchEmbed(img_size=(16, 24, 32), patch_size=8, in_chans=2, embed_dim=24)
    pe.eval()
    x = torch.randn(2, 2, 16, 24, 32)
    tokens = pe(x)
    assert tokens.shape == (2, 2 * 3 * 4, 24)
    fmap = pe.stem(x)  # (B, D, 2, 3, 4): token (i, j, k) is row-major index (i * 3 + j) * 4 + k
    torch.testing.assert_close(tokens[:, (1 * 3 + 2) * 4 + 3], fmap[:, :, 1, 2, 3])


@pytest.mark.parametrize("patch", [6, (8, 8, 4), 2])
def test_conv_stem_refuses_a_patch_it_cannot_stride_to(patch):
    with pytest.raises(InputError, match="power of two"):
        ConvStemPatchEmbed(img_size=24, patch_size=patch)


def test_encoder_with_conv_stem_runs_on_other_crop_sizes():
    model = VisionTransformer3D(img_size=40, patch_size=8, in_chans=2, embed_dim=48, depth=2,
                                num_heads=3, stem="conv")
    assert model.init_kwargs["stem"] == "conv"
    assert model(torch.randn(2, 2, 40, 40, 40)).shape == (2, 48)
    assert model.forward_features(torch.randn(1, 2, 24, 32, 40)).shape == (1, 1 + 3 * 4 * 5, 48)
    with pytest.raises(InputError, match="multiple of the patch size"):
        model(torch.randn(1, 2, 36, 40, 40))
    with pytest.raises(InputError, match="stem must be one of"):
        VisionTransformer3D(img_size=32, patch_size=8, stem="resnet")


def test_inflating_a_conv_stem_keeps_what_it_computed_on_t1ce():
    torch.manual_seed(0)
    model = VisionTransformer3D(img_size=32, patch_size=8, in_chans=1, embed_dim=48, depth=1,
                                num_heads=3, stem="conv").eval()
    t1ce = torch.randn(2, 1, 32, 32, 32)
    before = model(t1ce)
    inflate_patch_embedding(model, 2)
    assert model.in_chans == 2 and model.init_kwargs["in_chans"] == 2
    mask = (torch.rand(2, 1, 32, 32, 32) > 0.5).float()
    torch.testing.assert_close(model(torch.cat([t1ce, mask], 1)), before)


def test_masked_patches_do_not_reach_the_visible_tokens():
    torch.manual_seed(0)
    model = VisionTransformer3D(img_size=16, patch_size=8, embed_dim=48, depth=1, num_heads=3,
                                stem="conv").eval()
    x = torch.randn(1, 1, 16, 16, 16)
    ids_keep = torch.tensor([[0, 3, 5]])
    changed = x.clone()
    changed[..., 8:, :8, :8] += 5.0  # patch (1, 0, 0) = index 4, masked
    torch.testing.assert_close(model.forward_features_masked(x, ids_keep),
                               model.forward_features_masked(changed, ids_keep))
    changed[..., :8, :8, 8:] += 5.0  # patch (0, 0, 1) = index 1... masked too: still equal
    torch.testing.assert_close(model.forward_features_masked(x, ids_keep),
                               model.forward_features_masked(changed, ids_keep))
    changed[..., :8, 8:, 8:] += 5.0  # patch (0, 1, 1) = index 3, visible: changes the tokens
    assert not torch.allclose(model.forward_features_masked(x, ids_keep),
                              model.forward_features_masked(changed, ids_keep))

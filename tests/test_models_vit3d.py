"""Contract tests over the model registry (timm tests/test_models.py style), 2D and 3D."""

from __future__ import annotations

import functools

import pytest
import torch

from rn_classifier.errors import InputError
from rn_classifier.models import VisionTransformer3D, create_model, list_models, model_defaults

# Small/base keep their width and depth but are built for 32-voxel crops (2 patches per axis), so
# the contract runs in seconds; the tiny variant is built at its full size.
_FAST_SIZE = {"vit3d_small_p16": 32, "vit3d_base_p16": 32, "vit3d_tiny_conv_p8": 32,
              "vit3d_tiny_conv_regions_p8": 32}


@functools.cache
def _model(name: str, spatial_dims: int) -> VisionTransformer3D:
    torch.manual_seed(0)
    img = _FAST_SIZE.get(name, model_defaults(name)["img_size"])
    return create_model(name, spatial_dims=spatial_dims, img_size=(img,) * spatial_dims,
                        num_classes=3).eval()


CASES = [(name, dims) for name in list_models() for dims in (2, 3)]


def test_registry_has_the_documented_variants():
    assert {"vit3d_tiny_p8", "vit3d_small_p16", "vit3d_base_p16"} <= set(list_models())
    assert list_models("vit3d_tiny*") == ["vit3d_tiny_conv_p8", "vit3d_tiny_conv_regions_p8",
                                          "vit3d_tiny_p8"]
    assert create_model("vit3d_tiny_conv_p8").stem == "conv"
    assert create_model("vit3d_tiny_conv_regions_p8").mask_encoding == "regions"


@pytest.mark.parametrize("name,dims", CASES)
def test_forward_shapes_and_finite(name, dims):
    model = _model(name, dims)
    x = torch.randn(2, model.in_chans, *model.img_size)
    with torch.no_grad():
        tokens = model.forward_features(x)
        logits = model.forward_head(tokens)
        pooled = model.forward_head(tokens, pre_logits=True)
    n_patches = 1
    for s, p in zip(model.img_size, model.patch_size):
        n_patches *= s // p
    assert tokens.shape == (2, 1 + n_patches, model.embed_dim)
    assert logits.shape == (2, 3) and pooled.shape == (2, model.num_features)
    assert torch.isfinite(tokens).all() and torch.isfinite(logits).all()
    assert torch.equal(pooled, tokens[:, 0])
    assert model.grid_size == tuple(s // p for s, p in zip(model.img_size, model.patch_size))
    assert len(model.patch_size) == len(model.img_size) == model.spatial_dims == dims


@pytest.mark.parametrize("name,dims", CASES)
def test_smaller_crop_uses_resampled_pos_embed(name, dims):
    model = _model(name, dims)
    small = tuple(s // 2 for s in model.img_size)
    grid = model.grid_for(small)
    pos = model.pos_embed_for(grid)
    assert pos.shape == (1, 1 + torch.Size(grid).numel(), model.embed_dim)
    with torch.no_grad():
        tokens = model.forward_features(torch.randn(2, model.in_chans, *small))
    assert tokens.shape == (2, pos.shape[1], model.embed_dim) and torch.isfinite(tokens).all()


@pytest.mark.parametrize("name,dims", CASES)
def test_no_weight_decay_names_exist(name, dims):
    model = _model(name, dims)
    names = dict(model.named_parameters())
    assert model.no_weight_decay() and model.no_weight_decay() <= set(names)


@pytest.mark.parametrize("name,dims", [(n, d) for n, d in CASES if n == "vit3d_tiny_p8"]
                         + [("vit3d_small_p16", 3)])
def test_grad_checkpointing_gives_same_output_and_grads(name, dims):
    model = _model(name, dims)
    x = torch.randn(2, model.in_chans, *model.img_size)
    outputs, grads = [], []
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        model.zero_grad(set_to_none=True)
        out = model(x)
        out.square().sum().backward()
        outputs.append(out.detach())
        grads.append(model.blocks[0].attn.qkv.weight.grad.clone())
    model.set_grad_checkpointing(False)
    model.zero_grad(set_to_none=True)
    torch.testing.assert_close(outputs[0], outputs[1])
    torch.testing.assert_close(grads[0], grads[1])


def test_uses_timm_blocks_with_fused_attention():
    from timm.models.vision_transformer import Block
    model = _model("vit3d_tiny_p8", 3)
    assert all(isinstance(b, Block) for b in model.blocks)
    assert all(b.attn.fused_attn for b in model.blocks)  # F.scaled_dot_product_attention


def test_masked_forward_with_every_patch_kept_equals_forward_features():
    model = _model("vit3d_tiny_p8", 3)
    x = torch.randn(2, 1, 32, 32, 32)
    ids_all = torch.arange(64).expand(2, -1)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features_masked(x, ids_all), model.forward_features(x))
        # keeping a subset gives the class token + those tokens
        assert model.forward_features_masked(x, ids_all[:, :5]).shape == (2, 6, 192)


def test_two_channel_input_and_reset_classifier():
    model = create_model("vit3d_tiny_p8", in_chans=2)
    assert model.in_chans == 2 and model.patch_embed.proj.in_channels == 2
    assert model(torch.randn(1, 2, 32, 32, 32)).shape == (1, 192)  # no head → embedding
    model.reset_classifier(1)
    assert model(torch.randn(1, 2, 32, 32, 32)).shape == (1, 1)
    model.reset_classifier(0, global_pool="avg")
    tokens = model.forward_features(torch.randn(1, 2, 32, 32, 32))
    torch.testing.assert_close(model.forward_head(tokens), tokens[:, 1:].mean(1))


def test_fixed_sincos_pos_embed_is_frozen():
    model = create_model("vit3d_tiny_p8", pos_embed_type="sincos")
    assert not model.pos_embed.requires_grad
    assert create_model("vit3d_tiny_p8").pos_embed.requires_grad


def test_none_overrides_keep_model_defaults():
    model = create_model("vit3d_tiny_p8", embed_dim=None, depth=None, drop_path_rate=None)
    assert model.embed_dim == 192 and len(model.blocks) == 4 and model.img_size == (32, 32, 32)
    assert create_model("vit3d_tiny_p8", depth=2).init_kwargs["depth"] == 2


def test_bad_inputs_raise_input_error_with_values():
    with pytest.raises(InputError, match=r"unknown model 'vit_nope'.*vit3d_base_p16, vit3d_small_p16, vit3d_tiny_conv_p8, vit3d_tiny_conv_regions_p8, vit3d_tiny_p8"):
        create_model("vit_nope")
    with pytest.raises(InputError, match="cannot build model 'vit3d_tiny_p8'.*colour"):
        create_model("vit3d_tiny_p8", colour="red")
    model = _model("vit3d_tiny_p8", 3)
    with pytest.raises(InputError, match=r"crop size \(30, 32, 32\).*patch size \(8, 8, 8\)"):
        model(torch.randn(1, 1, 30, 32, 32))
    with pytest.raises(InputError, match=r"1 channel\(s\), got \(1, 2, 32, 32, 32\)"):
        model(torch.randn(1, 2, 32, 32, 32))
    with pytest.raises(InputError, match=r"img_size|crop size \(36, 36, 36\)"):
        create_model("vit3d_tiny_p8", img_size=36)
    with pytest.raises(InputError, match="spatial_dims must be one of"):
        create_model("vit3d_tiny_p8", spatial_dims=4)
    with pytest.raises(InputError, match="global_pool must be one of"):
        create_model("vit3d_tiny_p8", global_pool="max")
    with pytest.raises(InputError, match="divisible by 6, got 200"):
        create_model("vit3d_tiny_p8", embed_dim=200, num_heads=4, pos_embed_type="sincos")

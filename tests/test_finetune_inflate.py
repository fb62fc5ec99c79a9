"""Channel inflation of the patch embedding and loading a pretrained encoder for fine-tuning."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from rn_classifier.config import load_config
from rn_classifier.data.cache import CropCache, write_cache
from rn_classifier.errors import InputError
from rn_classifier.finetune.config import FinetuneConfig
from rn_classifier.finetune.inflate import inflate_conv_channels, inflate_patch_embedding
from rn_classifier.finetune.module import ImageClassifier
from rn_classifier.finetune.run import encoder_builder
from rn_classifier.models import create_model
from rn_classifier.models.export import save_encoder

NORM = {"method": "zscore_foreground", "clip_percentiles": [0.5, 99.5]}


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_inflation_preserves_the_pretrained_output(spatial_dims):
    torch.manual_seed(0)
    size = 16
    pretrained = create_model("vit3d_tiny_p8", img_size=size, in_chans=1, spatial_dims=spatial_dims).eval()
    inflated = inflate_patch_embedding(copy.deepcopy(pretrained), 2).eval()
    assert inflated.in_chans == 2 and inflated.init_kwargs["in_chans"] == 2
    t1ce = torch.randn(3, 1, *(size,) * spatial_dims)
    mask = (torch.rand(3, 1, *(size,) * spatial_dims) > 0.5).float() * 7.0  # any mask values
    with torch.no_grad():
        ref = pretrained.forward_features(t1ce)
        out = inflated.forward_features(torch.cat([t1ce, mask], dim=1))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # the mask channel is a trainable zero-initialised weight, not a frozen constant
    w = inflated.patch_embed.proj.weight
    assert torch.all(w[:, 1] == 0) and w.requires_grad
    torch.testing.assert_close(w[:, :1], pretrained.patch_embed.proj.weight)


def test_inflation_refuses_fewer_channels():
    conv = torch.nn.Conv3d(2, 8, kernel_size=4, stride=4)
    with pytest.raises(InputError, match="from 2 to 1"):
        inflate_conv_channels(conv, 1)


def _cache(tmp_path, crop=24, spacing=(2.0, 2.0, 2.0), normalisation=NORM):
    rng = np.random.default_rng(0)
    crops = rng.normal(size=(2, 2, crop, crop, crop)).astype(np.float32)
    index = pd.DataFrame({"case_id": ["a", "b"], "patient_id": ["p", "q"], "center": "c",
                          "label": [0, 1], "synthetic": 1})
    return CropCache(write_cache(tmp_path / "cache", crops, index,
                                 {"spacing": list(spacing), "channels": ["t1ce", "mask"],
                                  "normalisation": normalisation, "synthetic": True}))


def _export(tmp_path, crop=16, **kw):
    torch.manual_seed(1)
    model = create_model("vit3d_tiny_p8", img_size=crop, in_chans=1, **kw)
    save_encoder(model, tmp_path / "pretrain_run", arch="vit3d_tiny_p8", crop_size=[crop] * 3,
                 spacing=[2.0, 2.0, 2.0], normalisation=NORM, config={})
    return model.eval(), tmp_path / "pretrain_run"


def _cfg(*overrides):
    return load_config(FinetuneConfig, None, ["data.internal_manifest=m.csv", "data.internal_cache=c",
                                              "model.crop_size=[16,16,16]", *overrides])


def test_finetune_network_at_step_zero_computes_the_pretrained_t1ce_embedding(tmp_path):
    pretrained, folder = _export(tmp_path)
    build, origin = encoder_builder(_cfg(f"model.pretrained={folder}"), _cache(tmp_path))
    assert origin["pretrained_in_chans"] == 1
    network = ImageClassifier(build()).eval()
    x = torch.randn(2, 2, 16, 16, 16)
    with torch.no_grad():
        _, pooled = network.embed(x)
        ref = pretrained.forward_head(pretrained.forward_features(x[:, :1]), pre_logits=True)
    torch.testing.assert_close(pooled, ref, rtol=1e-5, atol=1e-5)
    # each call gives a fresh copy: training one fold never changes the next fold's start
    a, b = build(), build()
    with torch.no_grad():
        a.patch_embed.proj.weight.add_(1.0)
    assert not torch.equal(a.patch_embed.proj.weight, b.patch_embed.proj.weight)


def test_supervised_baseline_builds_the_same_architecture_from_random_init(tmp_path):
    pretrained, _ = _export(tmp_path)
    build, origin = encoder_builder(_cfg("model.pretrained=null"), _cache(tmp_path))
    model = build()
    assert origin["pretrained"] is None and model.in_chans == 2
    assert {k: v.shape for k, v in model.state_dict().items() if k != "patch_embed.proj.weight"} == \
        {k: v.shape for k, v in pretrained.state_dict().items() if k != "patch_embed.proj.weight"}
    assert not torch.equal(model.blocks[0].attn.qkv.weight, pretrained.blocks[0].attn.qkv.weight)


def test_supervised_baseline_takes_the_positional_embedding_of_the_ssl_encoder(tmp_path):
    """An MAE encoder carries a fixed sin-cos positional embedding; a baseline with a learned
    one would differ from the SSL model in more than its pretraining."""
    pretrained, _ = _export(tmp_path, pos_embed_type="sincos")
    build, origin = encoder_builder(_cfg("model.pretrained=null", "model.pos_embed_type=sincos"),
                                    _cache(tmp_path))
    model = build()
    assert origin["pos_embed_type"] == "sincos" and not model.pos_embed.requires_grad
    torch.testing.assert_close(model.pos_embed, pretrained.pos_embed)  # fixed, not learned
    _, origin = encoder_builder(_cfg("model.pretrained=null"), _cache(tmp_path))
    assert origin["pos_embed_type"] == "learn"


@pytest.mark.parametrize("override, message", [
    ("model.pos_embed_type=learn", "positional embedding is 'sincos' but model.pos_embed_type is 'learn'"),
    ("model.crop_size=[24,24,24]", r"crop size is \[16, 16, 16\] voxels but model.crop_size is \[24, 24, 24\]"),
    ("model.patch_size=16", r"patch size is \[8, 8, 8\] but model.patch_size is 16"),
    ("model.arch=vit3d_small_p16", "architecture is 'vit3d_tiny_p8' but model.arch is 'vit3d_small_p16'"),
])
def test_encoder_that_disagrees_with_the_config_is_refused(tmp_path, override, message):
    _, folder = _export(tmp_path, pos_embed_type="sincos")
    with pytest.raises(InputError, match=message):
        encoder_builder(_cfg(f"model.pretrained={folder}", override), _cache(tmp_path))


def test_encoder_with_other_spacing_than_the_cache_is_refused(tmp_path):
    _, folder = _export(tmp_path)
    with pytest.raises(InputError, match=r"spacing \[1.0, 1.0, 1.0\] mm but encoder export .* asks for \[2.0, 2.0, 2.0\]"):
        encoder_builder(_cfg(f"model.pretrained={folder}"), _cache(tmp_path, spacing=(1.0, 1.0, 1.0)))


def test_region_mask_encoding_is_the_same_network_for_the_ssl_model_and_its_twin(tmp_path):
    """``model.mask_encoding=regions``: the pretrained one-channel encoder gets the region
    channels (zero at step 0, so it still computes its T1CE embedding); the supervised twin is
    built with the same encoding and the same parameter shapes."""
    pretrained, folder = _export(tmp_path)
    build, origin = encoder_builder(_cfg(f"model.pretrained={folder}", "model.mask_encoding=regions"),
                                    _cache(tmp_path))
    ssl = build().eval()
    assert origin["mask_encoding"] == "regions" and ssl.patch_embed.input_conv.in_channels == 6
    x = torch.randn(2, 2, 16, 16, 16)
    x[:, 1] = (x[:, 1] > 0.5).float()
    with torch.no_grad():
        torch.testing.assert_close(ssl.forward_features(x), pretrained.forward_features(x[:, :1]),
                                   rtol=1e-5, atol=1e-5)
    build_twin, twin_origin = encoder_builder(_cfg("model.pretrained=null", "model.mask_encoding=regions"),
                                              _cache(tmp_path))
    twin = build_twin()
    assert twin_origin["mask_encoding"] == "regions" and twin.mask_encoding == "regions"
    assert {k: v.shape for k, v in twin.state_dict().items()} == \
        {k: v.shape for k, v in ssl.state_dict().items()}
    from rn_classifier.errors import ConfigError
    from rn_classifier.finetune.config import validate_config

    with pytest.raises(ConfigError, match="model.mask_encoding"):
        validate_config(_cfg("model.pretrained=null", "model.mask_encoding=rings"))

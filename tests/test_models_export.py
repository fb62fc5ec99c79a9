"""Encoder export (seam 3): save → load gives identical embeddings; bad files fail clearly."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from rn_classifier.errors import InputError
from rn_classifier.models import create_model
from rn_classifier.models.export import load_encoder, save_encoder


def _export(folder, **overrides):
    torch.manual_seed(0)
    model = create_model("vit3d_tiny_p8", depth=2, num_classes=2, **overrides).eval()
    save_encoder(model, folder, arch="vit3d_tiny_p8", crop_size=(32, 32, 32), spacing=(1.0, 1.0, 1.5),
                 normalisation={"method": "zscore_in_brain"}, config={"pretrain": {"method": "dino"}})
    return model


def test_round_trip_gives_identical_embeddings(tmp_path):
    model = _export(tmp_path, in_chans=2, pos_embed_type="sincos")
    loaded, meta = load_encoder(tmp_path)
    loaded.eval()
    x = torch.randn(2, 2, 32, 32, 32)
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(x), pre_logits=True)
        assert torch.equal(loaded(x), expected)  # head dropped: forward returns the embedding
    assert meta["architecture"] == "vit3d_tiny_p8" and meta["in_chans"] == 2
    assert meta["patch_size"] == [8, 8, 8] and meta["crop_size"] == [32, 32, 32]
    assert meta["spacing"] == [1.0, 1.0, 1.5] and meta["embed_dim"] == 192
    assert meta["normalisation"] == {"method": "zscore_in_brain"}
    assert meta["config"] == {"pretrain": {"method": "dino"}} and meta["git_sha"]
    assert not any(k.startswith("head.") for k in load_file(tmp_path / "encoder.safetensors"))
    assert len(loaded.blocks) == 2 and loaded.num_classes == 0
    assert not loaded.pos_embed.requires_grad  # fixed sin-cos stays fixed


def test_wrong_shaped_or_missing_tensor_is_named(tmp_path):
    _export(tmp_path)
    weights = tmp_path / "encoder.safetensors"
    tensors = load_file(weights)
    tensors["cls_token"] = torch.zeros(1, 1, 96)
    del tensors["norm.bias"]
    save_file(tensors, str(weights))
    with pytest.raises(InputError) as err:
        load_encoder(tmp_path)
    msg = str(err.value)
    assert "encoder.safetensors" in msg
    assert "'cls_token' has shape [1, 1, 96], expected [1, 1, 192]" in msg
    assert "'norm.bias' is missing (expected shape [192])" in msg


def test_missing_files_and_bad_metadata(tmp_path):
    with pytest.raises(InputError, match="encoder.json does not exist"):
        load_encoder(tmp_path)
    _export(tmp_path)
    meta = json.loads((tmp_path / "encoder.json").read_text())
    meta["format_version"] = 99
    (tmp_path / "encoder.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="format_version 99"):
        load_encoder(tmp_path)
    _export(tmp_path)
    (tmp_path / "encoder.safetensors").unlink()
    with pytest.raises(InputError, match="encoder.safetensors does not exist"):
        load_encoder(tmp_path)


def test_crop_size_must_fit_the_patch_size(tmp_path):
    model = create_model("vit3d_tiny_p8", depth=1)
    with pytest.raises(InputError, match=r"crop size \(30, 32, 32\)"):
        save_encoder(model, tmp_path, arch="vit3d_tiny_p8", crop_size=(30, 32, 32), spacing=(1, 1, 1),
                     normalisation={}, config={})
    assert not list(tmp_path.iterdir())  # nothing written

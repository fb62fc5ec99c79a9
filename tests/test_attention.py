"""Attention maps: the hook against timm's own attention, rollout, and placement in the image.

* The recorder's ``softmax(q kᵀ)`` equals the matrix timm's non-fused path computes (captured at
  its ``attn_drop``), and multiplied with v and projected it reproduces the fused output.
* Rollout matches a direct implementation of Abnar & Zuidema's recursion.
* Geometry: a planted attention (patch mean of the T1CE, i.e. a map that follows a bright
  spot) goes through the real preprocessing and mapping on images with non-canonical affines;
  the saved NIfTI has the image's affine and its maximum lies on the bright spot.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from builders import head_volume, save_nifti, sphere

from rn_classifier.explain.attention import AttentionRecorder, attention_rollout, cls_attention
from rn_classifier.explain.focus import attention_focus
from rn_classifier.explain.geometry import (Grid, crop_to_grid, save_map_nifti, stored_grid,
                                            upsample_to_crop)
from rn_classifier.models import create_model
from rn_classifier.predict.inputs import prepare_case
from rn_classifier.models.bundle import Preprocessing


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    model = create_model("vit3d_tiny_p8", in_chans=2).eval()
    return model, torch.randn(2, 2, 32, 32, 32)


def test_recorded_attention_equals_timms_own_attention_matrix(vit):
    model, x = vit
    timm_maps = []
    handles = []
    for block in model.blocks:
        block.attn.fused_attn = False          # timm's explicit path; its attn_drop sees the matrix
        handles.append(block.attn.attn_drop.register_forward_hook(
            lambda m, args, out: timm_maps.append(args[0].detach())))
    with torch.no_grad():
        reference_out = model.forward_features(x)
    for h in handles:
        h.remove()
    for block in model.blocks:
        block.attn.fused_attn = True
    with torch.no_grad(), AttentionRecorder(model) as recorder:
        fused_out = model.forward_features(x)
    assert len(recorder.maps) == len(model.blocks) == len(timm_maps)
    for ours, theirs in zip(recorder.maps, timm_maps):
        assert ours.shape == (2, 3, 65, 65)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ours.sum(-1), torch.ones(2, 3, 65))
    torch.testing.assert_close(fused_out, reference_out, rtol=1e-4, atol=1e-5)


def test_recorded_attention_reproduces_the_fused_output(vit):
    model, x = vit
    attn = model.blocks[0].attn
    tokens, cls = model.embed_patches(x)
    h = model.blocks[0].norm1(torch.cat([cls.expand(2, -1, -1), tokens], dim=1))
    with torch.no_grad():
        fused = attn(h)                                    # F.scaled_dot_product_attention
        weights = AttentionRecorder.attention_weights(attn, h)
        b, n, c = h.shape
        v = attn.qkv(h).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)[2]
        manual = attn.proj((weights @ v).transpose(1, 2).reshape(b, n, c))
    torch.testing.assert_close(manual, fused, rtol=1e-4, atol=1e-5)


def test_hooks_exist_only_inside_the_recorder(vit):
    model, x = vit
    with AttentionRecorder(model):
        assert all(len(b.attn.qkv._forward_hooks) == 1 for b in model.blocks)
        assert all(len(b.attn._forward_pre_hooks) == 1 for b in model.blocks)
    assert all(len(b.attn.qkv._forward_hooks) == 0 and len(b.attn._forward_pre_hooks) == 0
               for b in model.blocks)
    assert all(b.attn.fused_attn for b in model.blocks)      # training keeps the fused kernel


def test_rollout_matches_the_recursion_of_abnar_and_zuidema():
    rng = np.random.default_rng(0)
    maps = []
    for _ in range(3):
        logits = rng.normal(size=(1, 2, 5, 5))
        a = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        maps.append(torch.as_tensor(a, dtype=torch.float64))
    expected = np.eye(5)
    for a in maps:
        layer = 0.5 * a[0].mean(0).numpy() + 0.5 * np.eye(5)
        layer /= layer.sum(-1, keepdims=True)
        expected = layer @ expected
    got = attention_rollout(maps)
    np.testing.assert_allclose(got[0].numpy(), expected[0, 1:], rtol=1e-12)
    np.testing.assert_allclose(cls_attention(maps)[0].numpy(), maps[-1][0, :, 0, 1:].numpy())
    # all weight on the residual path: the class token keeps all flow to itself
    assert torch.allclose(attention_rollout(maps, residual=1.0), torch.zeros(1, 4, dtype=torch.float64))


def test_focus_of_a_uniform_map_is_the_volume_share():
    lesion = np.zeros((10, 10, 10), bool)
    lesion[3:6, 3:6, 3:6] = True
    focus = attention_focus(np.ones((10, 10, 10)), lesion, (2.0, 2.0, 2.0), margin_mm=2.0)
    assert focus["in_mask"] == pytest.approx(27 / 1000) == focus["mask_fraction"]
    assert focus["enrichment"] == pytest.approx(1.0)
    assert focus["in_margin"] == pytest.approx(focus["margin_fraction"]) and focus["in_margin"] > focus["in_mask"]
    on_lesion = attention_focus(lesion.astype(float), lesion, (2.0, 2.0, 2.0))
    assert on_lesion["in_mask"] == pytest.approx(1.0)


def _planted_map(crop: np.ndarray, patch: int = 8) -> np.ndarray:
    """A map following the T1CE brightness: softmax over patches of the patch-mean intensity."""
    t1 = crop[0]
    g = [s // patch for s in t1.shape]
    means = t1.reshape(g[0], patch, g[1], patch, g[2], patch).mean(axis=(1, 3, 5))
    weights = np.exp(4.0 * (means - means.max()))
    return weights / weights.sum()


AFFINES = {
    "RAS 1 mm": np.diag([1.0, 1.0, 1.0, 1.0]),
    "LPS-like, anisotropic, shifted": np.array([[-1.0, 0, 0, 40.0], [0, -0.9, 0, 55.0],
                                                [0, 0, 2.5, -30.0], [0, 0, 0, 1]]),
    "axes permuted (sagittal stack)": np.array([[0, 0, 2.0, -20.0], [1.1, 0, 0, -30.0],
                                                [0, -1.1, 0, 40.0], [0, 0, 0, 1]]),
}


@pytest.mark.parametrize("name", list(AFFINES))
def test_planted_bright_spot_is_the_maximum_of_the_saved_map(tmp_path, name):
    affine = AFFINES[name]
    shape = (64, 60, 30) if name != "axes permuted (sagittal stack)" else (60, 60, 32)
    image = head_volume(shape, seed=1).astype(np.float32)
    center = np.asarray(shape) / 2
    lesion = sphere(shape, center, 6)
    spot_voxel = center + np.array([7.0, -6.0, 3.0]) * np.array([1, 1, 0.5])
    # a bright spot inside the crop, off-centre; large enough (> 0.5 % of the head) that the
    # normalisation's 99.5th-percentile clip does not flatten it into the brightest tissue
    spot = sphere(shape, spot_voxel, 4.5)
    image[spot] = 4000
    img_path = save_nifti(image.astype(np.int16), tmp_path / "img.nii.gz", affine)
    mask_path = save_nifti(lesion.astype(np.uint8), tmp_path / "mask.nii.gz", affine)
    prep = Preprocessing((2.0, 2.0, 2.0), (32, 32, 32), {"method": "zscore_foreground",
                                                         "clip_percentiles": [0.5, 99.5]})
    case = prepare_case(img_path, mask_path, [1], prep)
    crop_map = upsample_to_crop(_planted_map(case.crop), case.crop.shape[1:])
    grid = stored_grid(img_path)
    out = save_map_nifti(crop_to_grid(crop_map, case.crop_affine, grid), grid, tmp_path / "att.nii.gz", "test")
    saved = nib.load(str(out))
    np.testing.assert_allclose(saved.affine, nib.load(str(img_path)).affine, atol=1e-5)
    assert saved.shape == shape
    data = np.asarray(saved.dataobj)
    peak = np.unravel_index(int(np.argmax(data)), data.shape)
    peak_world = saved.affine[:3, :3] @ np.asarray(peak) + saved.affine[:3, 3]
    spot_world = affine[:3, :3] @ spot_voxel + affine[:3, 3]
    # the map is patch-resolution (8 voxels × 2 mm): the peak lies within one patch of the spot
    assert np.linalg.norm(peak_world - spot_world) < 8.0
    # and the map is higher on the spot than at the (not bright) lesion centre
    assert data[tuple(np.round(spot_voxel).astype(int))] > 2 * data[tuple(np.round(center).astype(int))]


def test_map_outside_the_crop_is_zero_and_inside_matches_the_crop():
    crop_map = np.random.default_rng(0).random((8, 8, 8)).astype(np.float32)
    crop_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    crop_affine[:3, 3] = [10.0, 20.0, 30.0]
    grid = Grid((40, 40, 40), np.eye(4))                # 1 mm image grid
    mapped = crop_to_grid(crop_map, crop_affine, grid)
    assert mapped[:5].max() == 0 and mapped[30:].max() == 0
    # image voxel (10 + 2i) lies on crop voxel i: sampled exactly
    np.testing.assert_allclose(mapped[10:26:2, 20:36:2, 30:40:2], crop_map[:, :, :5], rtol=1e-6)


def test_maps_follow_the_pooling_the_classifier_decides_on():
    """Under ``model.pool: mask`` the class token does not feed the decision: the maps' query is
    the mask-weighted patches (the same weights as the pooled embedding); under ``cls`` it is the
    class token, as in the original methods."""
    from rn_classifier.explain.maps import logits_and_attention
    from rn_classifier.models.classifiers import ImageClassifier

    torch.manual_seed(0)
    x = torch.randn(1, 2, 32, 32, 32)
    x[:, 1] = 0.0
    x[:, 1, :8, :8, :16] = 1.0            # the lesion fills patches (0, 0, 0) and (0, 0, 1)
    for pool in ("cls", "mask"):
        network = ImageClassifier(create_model("vit3d_tiny_p8", in_chans=2), pool=pool).eval()
        _, maps = logits_and_attention(network, x)
        with torch.no_grad(), AttentionRecorder(network.encoder) as recorder:
            network(x)
        last = recorder.maps[-1][0]                                # (H, N, N)
        if pool == "cls":
            expected = last[:, 0, 1:]
        else:                                                      # mean of the two lesion rows
            expected = (last[:, 1, 1:] + last[:, 2, 1:]) / 2
        np.testing.assert_allclose(maps[0].cls_heads.reshape(last.shape[0], -1),
                                   expected.numpy(), rtol=1e-5, atol=1e-7)
        rollout_cls = attention_rollout(recorder.maps, 1)[0].numpy()
        same_as_cls = np.allclose(maps[0].rollout.ravel(), rollout_cls, atol=1e-7)
        assert same_as_cls == (pool == "cls")

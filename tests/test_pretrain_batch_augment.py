"""Batched on-device augmentations equal MONAI's transforms for the same parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import (
    AdjustContrast,
    Flip,
    GaussianSmooth,
    RandBiasField,
    Resize,
    Rotate90,
    SpatialCrop,
)

from pretrain_fakes import tiny_config
from rn_classifier.pretrain.batch_augment import (
    BatchMAECrop,
    BatchMultiCrop,
    adjust_gamma,
    bias_field,
    bias_field_terms,
    flip_matrix,
    gaussian_blur,
    resample,
    rot90_matrix,
    sampling_grid,
)


def volume(shape=(20, 18, 22), seed=0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(1, *shape)).astype(np.float32))


@pytest.mark.parametrize("out_size, box", [(8, ((14, 12, 16), (3, 2, 5))),     # downsampling
                                           (10, ((10, 10, 10), (4, 0, 7)))])   # same size
def test_crop_flip_rotate_grid_equals_monai(out_size, box):
    img = volume()
    size, start = box
    flips, rotations = (0, 2), (((0, 1), 1), ((1, 2), 3))
    # MONAI, in the order of augment._geometry: crop, resize, flips, rotations
    ref = SpatialCrop(roi_start=start, roi_end=[a + s for a, s in zip(start, size)])(img)
    ref = Resize((out_size,) * 3, mode="trilinear", align_corners=False)(ref)
    for axis in flips:
        ref = Flip(spatial_axis=axis)(ref)
    for plane, k in rotations:
        ref = Rotate90(k=k, spatial_axes=plane)(ref)
    m = torch.eye(3, dtype=torch.float64)
    for axis in flips:
        m = m @ flip_matrix(axis)
    for plane, k in rotations:
        m = m @ rot90_matrix(k, plane)
    grid = sampling_grid(torch.tensor([size], dtype=torch.float64), torch.tensor([start], dtype=torch.float64),
                         m[None], img.shape[1:], out_size, "cpu")
    ours = resample(img[None], grid)[0]
    torch.testing.assert_close(ours, torch.as_tensor(ref), atol=1e-5, rtol=1e-5)


def test_bias_field_equals_monai():
    img = volume((12, 10, 14)).abs() + 0.5
    coeffs = np.random.default_rng(1).uniform(0, 0.1, len(bias_field_terms())).tolist()
    monai = RandBiasField(prob=1.0, coeff_range=(0.0, 0.1))
    monai._do_transform, monai._coeff = True, coeffs
    ref = monai(img, randomize=False)
    ours = bias_field(img[None], torch.tensor([coeffs]))[0]
    torch.testing.assert_close(ours, torch.as_tensor(ref), atol=1e-5, rtol=1e-5)


def test_gamma_with_retained_stats_equals_monai():
    img = volume((10, 10, 10))
    ref = AdjustContrast(gamma=1.4, retain_stats=True)(img)
    ours = adjust_gamma(img[None], torch.tensor([1.4]))[0]
    torch.testing.assert_close(ours, torch.as_tensor(ref), atol=1e-5, rtol=1e-4)


def test_blur_equals_monai_per_sample_sigma():
    imgs = torch.stack([volume((12, 12, 12), seed=s) for s in range(2)])
    sigmas = torch.tensor([[0.5, 0.8, 1.0], [0.3, 0.6, 0.9]])
    ours = gaussian_blur(imgs, sigmas)
    for i in range(2):
        ref = GaussianSmooth(sigma=sigmas[i].tolist(), approx="erf")(imgs[i])
        torch.testing.assert_close(ours[i], torch.as_tensor(ref), atol=1e-5, rtol=1e-5)


def test_batch_multicrop_shapes_seeding_and_per_sample_randomness():
    cfg = tiny_config("unused")
    cfg.dino.n_local_crops = 3
    x = torch.stack([volume((24, 24, 24), seed=s) for s in range(4)])
    crop = BatchMultiCrop(cfg.dino, cfg.augment)
    views = crop(x, (0, 7))
    assert [tuple(v.shape) for v in views] == [(4, 1, 16, 16, 16)] * 2 + [(4, 1, 8, 8, 8)] * 3
    assert all(torch.equal(a, b) for a, b in zip(views, crop(x, (0, 7))))
    assert not torch.equal(views[0], crop(x, (0, 8))[0])
    same = x[:1].repeat(4, 1, 1, 1, 1)             # one sub-volume four times: four different views
    v = crop(same, 1)[0]
    assert len({tuple(np.round(t.flatten()[:50].numpy(), 4)) for t in v}) == 4
    (mae,) = BatchMAECrop(cfg.mae, cfg.augment)(x, 3)
    assert mae.shape == (4, 1, 16, 16, 16) and torch.isfinite(mae).all()

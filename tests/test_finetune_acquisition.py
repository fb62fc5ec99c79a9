"""Acquisition-robust augmentations: each simulates one trait of another scanner on the T1CE
channel only, is off by default, and leaves old runs' keys alone when off."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from rn_classifier.config import to_dict
from rn_classifier.data.cache import CropCache, write_cache
from rn_classifier.errors import ConfigError
from rn_classifier.finetune.acquisition import acquisition_transforms, check_acquisition, thick_slices
from rn_classifier.finetune.config import (AcquisitionAugmentConfig, AugmentConfig, FinetuneConfig,
                                           without_default_acquisition)
from rn_classifier.finetune.datamodule import train_transform
from rn_classifier.shift.features import crop_features


def _noise_cache(tmp_path, crop=24):
    rng = np.random.default_rng(0)
    image = rng.normal(0.0, 1.0, (4, crop, crop, crop)).astype(np.float32)
    mask = np.zeros_like(image)
    mask[:, 8:16, 8:16, 8:16] = 1.0
    index = pd.DataFrame({"case_id": list("abcd"), "patient_id": list("abcd"), "center": "c",
                          "label": [0, 1, 0, 1], "synthetic": 1})
    return CropCache(write_cache(tmp_path / "cache", np.stack([image, mask], axis=1), index,
                                 {"spacing": [2.0] * 3, "channels": ["t1ce", "mask"],
                                  "normalisation": {"method": "none"}, "synthetic": True}))


def test_off_by_default_and_the_pipeline_is_unchanged(tmp_path):
    acq = AcquisitionAugmentConfig()
    assert acquisition_transforms(acq, (2.0, 2.0, 2.0)) == []
    cache = _noise_cache(tmp_path)
    plain = train_transform(cache, [16, 16, 16], AugmentConfig())
    with_all = train_transform(cache, [16, 16, 16], AugmentConfig(acquisition=AcquisitionAugmentConfig(
        slice_prob=1.0, bias_prob=1.0, rician_prob=1.0, contrast_prob=1.0)))
    assert len(with_all.transforms) == len(plain.transforms) + 4
    # an all-off config hashes as a config from before the option existed
    d = to_dict(FinetuneConfig())
    assert "acquisition" not in without_default_acquisition(d)["augment"]
    d["augment"]["acquisition"]["slice_prob"] = 0.5
    assert without_default_acquisition(d)["augment"]["acquisition"]["slice_prob"] == 0.5


def test_thick_slices_smooth_along_the_slice_axis_only():
    rng = np.random.default_rng(1)
    image = rng.normal(size=(24, 24, 24)).astype(np.float32)
    thick = thick_slices(image, 2.5, axis=2)                     # 5 mm slices on a 2 mm grid
    assert thick.shape == image.shape
    before, after = crop_features(image[None]), crop_features(thick[None])
    assert before["z_smoothness"] == pytest.approx(1.0, abs=0.1)
    assert after["z_smoothness"] < 0.5                            # as the 5 mm external centre
    assert thick_slices(image, 1.0, axis=2) is image


@pytest.mark.parametrize("name", ["slice", "bias", "rician", "contrast"])
def test_each_simulation_changes_the_t1ce_only_and_is_seeded(tmp_path, name):
    cache = _noise_cache(tmp_path)
    acq = AcquisitionAugmentConfig(**{f"{name}_prob": 1.0})
    base = AugmentConfig(enabled=True, flip_prob=0.0, rotate90_prob=0.0, affine_prob=0.0,
                         intensity_prob=0.0, acquisition=acq)
    outputs = []
    for _ in range(2):
        transform = train_transform(cache, [24, 24, 24], base)
        transform.set_random_state(seed=3)
        outputs.append(transform({"row": 0, "label": 0})["input"])
    torch.testing.assert_close(outputs[0], outputs[1])           # seeded: the same draw
    x = outputs[0]
    original = torch.as_tensor(cache[0])
    torch.testing.assert_close(x[1], original[1])                # the mask is never touched
    assert not torch.allclose(x[0], original[0])


def test_bad_acquisition_settings_name_the_key():
    with pytest.raises(ConfigError, match="augment.acquisition.slice_prob must be a probability"):
        check_acquisition(AcquisitionAugmentConfig(slice_prob=1.5))
    with pytest.raises(ConfigError, match="augment.acquisition.contrast_gamma must be"):
        check_acquisition(AcquisitionAugmentConfig(contrast_gamma=[1.2, 0.8]))
    with pytest.raises(ConfigError, match="slice_axis must be 0, 1 or 2"):
        check_acquisition(AcquisitionAugmentConfig(slice_axis=3))

"""Lesion crop placement (issue 15, item 7): centred on the centroid, shifted the least to hold
the whole lesion where it fits, so only crops that cut a lesion change; the model's view of a
cached crop stays the crop cut at the model's size (seam 6: training and serving agree)."""

from __future__ import annotations

import numpy as np
import pytest

from rn_classifier.data.crop import (Case, CropSetting, centre_crop, crop_start, lesion_crop,
                                     lesion_crop_start, read_case)
from rn_classifier.data.ingest import Volume
from rn_classifier.data.readers import LesionMask


def _comet(shape=(64, 64, 64)) -> np.ndarray:
    """A lesion whose mass sits at one end: a big head at x 10..21 and a thin tail to x 33."""
    lesion = np.zeros(shape, bool)
    lesion[10:22, 26:38, 26:38] = True
    lesion[22:34, 31:33, 31:33] = True
    return lesion


def _case(lesion: np.ndarray) -> Case:
    rng = np.random.default_rng(0)
    image = rng.normal(100, 10, lesion.shape).astype(np.float32) + 50 * lesion
    volume = Volume(image, np.eye(4), "synthetic.nii.gz")
    return Case(image=volume, mask=LesionMask(lesion, (1,), (1,), "synthetic_mask.nii.gz"))


def test_a_lesion_the_centroid_crop_holds_is_not_moved():
    voxels = np.argwhere(_comet())
    assert (lesion_crop_start(voxels, (40, 40, 40)) == crop_start(voxels.mean(0), (40, 40, 40))).all()


def test_a_lesion_that_fits_but_the_centroid_crop_cuts_is_held_whole():
    voxels = np.argwhere(_comet())                 # 24 voxels long, centroid near x = 17
    size = np.array([24, 24, 24])
    centroid_start = crop_start(voxels.mean(0), size)
    assert centroid_start[0] + size[0] <= voxels[:, 0].max()       # the centroid crop cuts the tail
    start = lesion_crop_start(voxels, size)
    assert (voxels.min(0) >= start).all() and (voxels.max(0) < start + size).all()
    assert start[0] - centroid_start[0] == voxels[:, 0].max() - (centroid_start[0] + size[0] - 1)  # least shift
    assert (start[1:] == centroid_start[1:]).all()                 # the axes that held it stay


def test_a_lesion_longer_than_the_crop_keeps_the_centroid_crop():
    voxels = np.argwhere(_comet())
    assert (lesion_crop_start(voxels, (16, 16, 16)) == crop_start(voxels.mean(0), (16, 16, 16))).all()


@pytest.mark.parametrize("cached", [32, 40])
def test_the_centre_of_a_cached_crop_is_the_crop_at_the_model_size(cached):
    """With ``lesion_view`` = the model's size, the shift is the same in both crops."""
    case = _case(_comet())
    model = lesion_crop(case, CropSetting((1.0, 1.0, 1.0), (24, 24, 24)))
    stored = lesion_crop(case, CropSetting((1.0, 1.0, 1.0), (cached,) * 3, lesion_view=(24, 24, 24)))
    assert model.lesion_inside_crop
    assert np.array_equal(np.asarray(centre_crop(stored.array, (24, 24, 24))), model.array)


def test_brain1_lesion_of_49_mm_is_held_whole_by_the_64_mm_crop(brain1):
    """pyradiomics' brain1: the centroid-centred 32-voxel crop at 2 mm cut its lesion."""
    case = read_case(brain1["image"], brain1["mask"])
    setting = CropSetting((2.0, 2.0, 2.0), (32, 32, 32))
    crop = lesion_crop(case, setting)
    assert crop.lesion_inside_crop
    assert int(crop.array[1].astype(bool).sum()) == crop.lesion_voxels    # no lesion voxel left out

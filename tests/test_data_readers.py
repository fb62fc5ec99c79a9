"""The one case reader and the one crop road (data.readers, data.crop).

* a mask format registered from this file alone (world-space spheres named like RTSTRUCT ROIs)
  is read by check-data, preprocessing and radiomics without any edit of their code;
* the centre of a cached lesion crop is exactly the crop prediction cuts at the model's size;
* the grid handed to pyradiomics is the file's world grid whatever the voxel order.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from builders import head_volume, save_nifti, sphere
from rn_classifier.data import readers
from rn_classifier.data.crop import CropSetting, centre_crop, lesion_crop, model_input, read_case
from rn_classifier.data.readers import LesionMask, MaskFormat, read_image, read_mask
from rn_classifier.errors import InputError

AFFINE = np.array([[-2.0, 0, 0, 40.0], [0, 2.0, 0, -30.0], [0, 0, 2.0, -20.0], [0, 0, 0, 1]])  # LAS


def _claims_spheres(path: Path) -> bool:
    return path.is_file() and path.name.endswith(".spheres.json")


def _read_spheres(path: Path, labels, image) -> LesionMask:
    """ROIs given as world-space spheres ``{"name": [x, y, z, radius_mm]}``, rasterised on the
    image's grid (voxel centre inside the sphere), the way an RTSTRUCT reader would."""
    rois = json.loads(path.read_text())
    missing = [name for name in labels if name not in rois]
    if missing:
        raise InputError(f"mask {path} has no ROI {missing}; it holds {sorted(rois)}")
    world = image.voxel_to_world(np.indices(image.shape).reshape(3, -1).T).reshape(*image.shape, 3)
    lesion = np.zeros(image.shape, bool)
    for name in labels or list(rois):
        x, y, z, r = rois[name]
        lesion |= ((world - np.array([x, y, z])) ** 2).sum(axis=-1) <= r ** 2
    return LesionMask(lesion=lesion, labels=tuple(labels), present=tuple(sorted(rois)), path=str(path))


@pytest.fixture()
def sphere_format(monkeypatch):
    """Register the toy format for this test only (the registry is a plain dict)."""
    monkeypatch.setitem(readers.MASK_FORMATS, "spheres",
                        MaskFormat("spheres", _claims_spheres, _read_spheres, "a .spheres.json file"))


@pytest.fixture()
def case_files(tmp_path):
    shape = (40, 44, 36)
    image = head_volume(shape, seed=1)
    lesion = sphere(shape, (18, 22, 17), 5)
    image[lesion] = 1400
    image[sphere(shape, (18, 22, 17), 2)] = 300
    img = save_nifti(image, tmp_path / "t1ce.nii.gz", AFFINE)
    label = save_nifti(lesion.astype(np.int16) * 11, tmp_path / "mask.nii.gz", AFFINE)
    centre = AFFINE[:3, :3] @ np.array([18, 22, 17]) + AFFINE[:3, 3]
    spheres = tmp_path / "lesion.spheres.json"
    spheres.write_text(json.dumps({"GTV_1": [*centre.tolist(), 10.0], "GTV_2": [0.0, 0.0, 0.0, 4.0]}))
    return {"image": img, "label": label, "spheres": spheres, "lesion": lesion}


def test_a_mask_format_registered_outside_the_package_reaches_every_reader(sphere_format, case_files):
    from rn_classifier.baselines.radiomics import extract_case
    from rn_classifier.data.check import check_case
    from rn_classifier.data.preprocess import LESION, PreprocessConfig, process_case

    assert readers.mask_kind(case_files["spheres"]) == "spheres"
    assert readers.mask_kind(case_files["label"]) == "label_image"
    image = read_image(case_files["image"])
    by_roi = read_mask(case_files["spheres"], ["GTV_1"], image)
    by_label = read_mask(case_files["label"], [11], image)
    # the same 10 mm sphere at 2 mm voxels, drawn two ways: the same voxels
    assert by_roi.lesion.sum() == by_label.lesion.sum() and (by_roi.lesion == by_label.lesion).all()

    row = {"case_id": "S1", "patient_id": "P1", "center": "TEST", "label": 1,
           "image_path": str(case_files["image"]), "mask_path": str(case_files["spheres"]),
           "mask_labels": ("GTV_1",)}
    assert check_case(pd.Series(row)) == []
    crop, index = process_case(row, PreprocessConfig(labelled_crop=[24, 24, 24]), LESION)
    reference, _ = process_case({**row, "mask_path": str(case_files["label"]), "mask_labels": (11,)},
                                PreprocessConfig(labelled_crop=[24, 24, 24]), LESION)
    np.testing.assert_array_equal(crop, reference)
    assert index["lesion_voxels"] == int(by_label.lesion.sum())
    features = extract_case(case_files["image"], case_files["spheres"], mask_labels=("GTV_1",),
                            settings={"binWidth": 25}, image_types={"Original": {}})
    assert features["original_shape_VoxelVolume"] == pytest.approx(8.0 * by_label.lesion.sum())
    with pytest.raises(InputError, match=r"lesion\.spheres\.json has no ROI \['GTV_9'\]; it holds "
                                         r"\['GTV_1', 'GTV_2'\]"):
        read_case(case_files["image"], case_files["spheres"], ["GTV_9"])
    (case_files["image"].parent / "x.png").write_bytes(b"1")
    with pytest.raises(InputError, match=r"x\.png: unsupported mask format; .*or a \.spheres\.json file"):
        read_mask(case_files["image"].parent / "x.png", [], image)


def test_a_label_image_refuses_names_and_missing_codes(case_files):
    image = read_image(case_files["image"])
    with pytest.raises(InputError, match=r"mask labels \[.GTV_1.\] are names, which only an RTSTRUCT or DICOM-SEG"):
        read_mask(case_files["label"], ["GTV_1"], image)
    with pytest.raises(InputError, match=r"lacks lesion code\(s\) \[12\]; expected \[11, 12\], found \[11\]"):
        read_mask(case_files["label"], [11, 12], image)
    other = save_nifti(case_files["lesion"].astype(np.int16), case_files["image"].parent / "other.nii.gz")
    with pytest.raises(InputError, match=r"other\.nii\.gz: mask geometry differs .*the mask must be drawn "
                                         r"on the image's voxel grid"):
        read_mask(other, [1], image)


@pytest.mark.parametrize("cached, model", [((40, 40, 40), (32, 32, 32)), ((40, 41, 40), (31, 32, 29))])
def test_the_centre_of_a_cached_crop_is_the_crop_prediction_cuts(case_files, cached, model):
    """Fine-tuning evaluates the centre of the cached crop; prediction cuts the crop at the model's
    size directly: the two are the same array, padding included (even and odd size differences)."""
    case = read_case(case_files["image"], case_files["label"], [11])
    cache_crop = lesion_crop(case, CropSetting((3.0, 3.0, 3.0), cached))
    assert cache_crop.array.dtype == np.float16            # what the cache stores
    served, placed = model_input(case, CropSetting((3.0, 3.0, 3.0), model))
    trained = np.asarray(centre_crop(cache_crop.array.astype(np.float32), model))
    assert served.dtype == np.float32 and served.shape == (2, *model)
    np.testing.assert_array_equal(served, trained)
    offset = np.asarray(cached) // 2 - np.asarray(model) // 2
    np.testing.assert_allclose(placed.affine[:3, 3], cache_crop.affine[:3, :3] @ offset + cache_crop.affine[:3, 3])


def test_pyradiomics_gets_the_files_world_grid(tmp_path):
    """The reader reorders voxels to RAS; the SimpleITK image built from it has the world
    geometry SimpleITK itself reads from the file (an LPS NRRD and an LAS NIfTI)."""
    from rn_classifier.data.readers import to_sitk

    array = head_volume((12, 14, 10), seed=2)
    written = sitk.GetImageFromArray(np.transpose(array, (2, 1, 0)))
    written.SetSpacing((0.8, 0.9, 4.0))
    written.SetOrigin((12.0, -7.0, 3.0))
    written.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    nrrd = tmp_path / "x.nrrd"
    sitk.WriteImage(written, str(nrrd))
    for path in (nrrd, save_nifti(array, tmp_path / "x.nii.gz", AFFINE)):
        direct = sitk.ReadImage(str(path))
        ours = to_sitk(read_image(path))
        for index in [(0, 0, 0), (11, 13, 9), (3, 7, 2)]:
            world = direct.TransformIndexToPhysicalPoint(index)
            mine = ours.TransformPhysicalPointToIndex(world)
            assert ours.GetPixel(mine) == direct.GetPixel(index)
        assert sorted(ours.GetSpacing()) == pytest.approx(sorted(direct.GetSpacing()))

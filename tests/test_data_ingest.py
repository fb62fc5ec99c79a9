"""Reading (data.readers over data.ingest): NIfTI / NRRD into RAS, size and format guards,
resampling, normalisation."""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from rn_classifier.data.ingest import geometry_mismatch, normalise, resample
from rn_classifier.data.readers import read_image, read_mask
from rn_classifier.data.preprocess import LESION, PreprocessConfig, process_case
from rn_classifier.errors import InputError
from builders import save_nifti


def _bright_voxel_volume(shape=(10, 12, 8), at=(2, 9, 5)):
    a = np.zeros(shape, np.int16)
    a[at] = 1000
    return a


def test_nifti_in_las_orientation_is_reoriented_to_ras_and_keeps_world_position(tmp_path):
    a = _bright_voxel_volume()
    las = np.diag([-1.5, 2.0, 3.0, 1.0])
    las[:3, 3] = [30.0, -10.0, 5.0]
    path = save_nifti(a, tmp_path / "las.nii.gz", las)
    vol = read_image(path)
    assert np.all(np.diag(vol.affine)[:3] > 0), "RAS: increasing index moves to R, A, S"
    assert vol.spacing == pytest.approx((1.5, 2.0, 3.0))
    world_in = las[:3, :3] @ np.array([2, 9, 5]) + las[:3, 3]
    ijk = np.argwhere(vol.array == 1000)[0]
    np.testing.assert_allclose(vol.voxel_to_world(ijk), world_in)


def test_nrrd_lps_geometry_converted_to_ras(tmp_path):
    a = _bright_voxel_volume()
    img = sitk.GetImageFromArray(np.transpose(a, (2, 1, 0)))  # sitk arrays are (z, y, x)
    img.SetSpacing((0.8, 0.9, 4.0))
    img.SetOrigin((12.0, -7.0, 3.0))
    img.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    path = tmp_path / "x.nrrd"
    sitk.WriteImage(img, str(path))
    vol = read_image(path)
    lps = np.array(img.TransformIndexToPhysicalPoint((2, 9, 5)))
    ijk = np.argwhere(vol.array == 1000)[0]
    np.testing.assert_allclose(vol.voxel_to_world(ijk), lps * [-1, -1, 1], atol=1e-6)
    assert np.all(np.diag(vol.affine)[:3] > 0)


def test_four_d_image_is_refused_with_file_name(tmp_path):
    path = save_nifti(np.zeros((4, 4, 4, 3), np.int16), tmp_path / "fourd.nii.gz")
    with pytest.raises(InputError, match=r"fourd\.nii\.gz.*3D"):
        read_image(path)


def test_truncated_nifti_is_refused_with_file_name(tmp_path):
    path = save_nifti(np.random.default_rng(0).normal(size=(30, 30, 30)).astype(np.float32),
                      tmp_path / "full.nii.gz")
    raw = gzip.decompress(path.read_bytes())
    cut = tmp_path / "cut.nii"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match=r"cut\.nii"):
        read_image(cut)


def test_huge_header_is_refused_before_reading(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_shape((5000, 5000, 5000))
    header.set_data_dtype(np.int16)
    path = tmp_path / "huge.nii"
    with open(path, "wb") as f:
        f.write(header.binaryblock + b"\x00" * 4 + b"\x00" * 64)
    with pytest.raises(InputError, match=r"huge\.nii.*refusing"):
        read_image(path)


def test_unknown_format_and_missing_file(tmp_path):
    (tmp_path / "x.png").write_bytes(b"123")
    with pytest.raises(InputError, match="unsupported image format"):
        read_image(tmp_path / "x.png")
    with pytest.raises(InputError, match="does not exist"):
        read_image(tmp_path / "nope.nii.gz")


def test_resample_changes_spacing_and_keeps_mask_values(tmp_path):
    m = np.zeros((20, 20, 10), np.int16)
    m[2:12, 2:12, 2:6] = 11
    m[12:18, 12:18, 3:7] = 12
    vol = read_image(save_nifti(m, tmp_path / "m.nii.gz", np.diag([1.0, 1.0, 3.0, 1.0])))
    out = resample(vol, (2.0, 2.0, 2.0), mode="nearest")
    assert out.spacing == pytest.approx((2.0, 2.0, 2.0))
    assert set(np.unique(out.array)) == {0, 11, 12}
    # volume of each code is preserved to within a voxel layer
    for code in (11, 12):
        v_in = (m == code).sum() * 3.0
        v_out = (out.array == code).sum() * 8.0
        assert v_out == pytest.approx(v_in, rel=0.3)


def test_zscore_foreground_normalisation():
    rng = np.random.default_rng(0)
    x = np.zeros((30, 30, 30), np.float32)
    x[5:25, 5:25, 5:25] = rng.normal(500, 50, (20, 20, 20))
    out = normalise(x, "zscore_foreground")
    fg = out[5:25, 5:25, 5:25]
    assert abs(fg.mean()) < 0.05 and abs(fg.std() - 1) < 0.05
    with pytest.raises(InputError, match="normalisation method"):
        normalise(x, "minmax")
    with pytest.raises(InputError, match="no foreground"):
        normalise(np.zeros((4, 4, 4)), "zscore_foreground")


def test_geometry_mismatch_is_described():
    from rn_classifier.data.ingest import Volume

    a = Volume(np.zeros((4, 4, 4)), np.eye(4))
    assert geometry_mismatch(a, Volume(np.zeros((4, 4, 4)), np.eye(4))) is None
    assert "shape" in geometry_mismatch(a, Volume(np.zeros((4, 4, 5)), np.eye(4)))
    shifted = np.eye(4)
    shifted[0, 3] = 1.0
    assert "geometry" in geometry_mismatch(a, Volume(np.zeros((4, 4, 4)), shifted))


@pytest.mark.real_data
def test_brain1_nrrd_to_ras_1mm_lesion_centred_crop(brain1):
    """Real anisotropic LPS NRRD scan: ingest → RAS → 1 mm → crop holding the whole lesion."""
    image = read_image(brain1["image"])
    mask = read_image(brain1["mask"])
    assert image.shape == (256, 256, 25)
    assert image.spacing == pytest.approx((0.78125, 0.78125, 6.5), rel=1e-4)
    assert geometry_mismatch(image, mask) is None

    # lesion centroid in world coordinates equals SimpleITK's physical-point computation
    itk_mask = sitk.ReadImage(str(brain1["mask"]))
    idx = np.argwhere(sitk.GetArrayFromImage(itk_mask) > 0)[:, ::-1].mean(axis=0)
    itk_lps = np.array(itk_mask.TransformContinuousIndexToPhysicalPoint(idx.tolist()))
    ours = mask.voxel_to_world(np.argwhere(read_mask(brain1["mask"], (1,), image).lesion).mean(axis=0))
    np.testing.assert_allclose(ours, itk_lps * [-1, -1, 1], atol=1e-6)

    cfg = PreprocessConfig(spacing=[1.0, 1.0, 1.0], labelled_crop=[96, 96, 96])
    row = {"case_id": "brain1", "patient_id": "brain1", "center": "TCGA", "label": 1,
           "image_path": str(brain1["image"]), "mask_path": str(brain1["mask"]), "mask_labels": (1,)}
    crop, info = process_case(row, cfg, LESION)
    assert crop.shape == (2, 96, 96, 96)
    assert info["lesion_inside_crop"]
    # the whole lesion: crop mask voxels equal the resampled lesion's voxel count
    resampled = resample(mask, (1.0, 1.0, 1.0), mode="nearest")
    assert int(crop[1].astype(np.float32).sum()) == int((resampled.array == 1).sum()) == info["lesion_voxels"]
    # the crop's lesion centroid (world) is still the lesion centroid, within a voxel
    affine = np.array(json.loads(info["affine"])).reshape(4, 4)
    crop_centroid = np.argwhere(crop[1] > 0.5).mean(axis=0) @ affine[:3, :3].T + affine[:3, 3]
    np.testing.assert_allclose(crop_centroid, itk_lps * [-1, -1, 1], atol=1.0)
    assert np.isfinite(crop.astype(np.float32)).all()


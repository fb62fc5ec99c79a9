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



def _oblique_affine(spacing, angles, origin):
    """RAS affine with a rotation about each axis (radians) and per-axis spacing."""
    from scipy.spatial.transform import Rotation

    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xyz", angles).as_matrix() @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


GRIDS = [((20, 24, 9), np.diag([0.78, 0.78, 6.5, 1.0]), (1.0, 1.0, 1.0)),          # brain1-like, upsampled
         ((30, 26, 22), np.diag([1.5, 1.5, 1.5, 1.0]), (1.0, 1.0, 1.0)),            # paper preset
         ((16, 18, 20), np.diag([-1.0, -1.0, 1.2, 1.0]), (2.0, 2.0, 2.0)),          # LPS-like flips, downsampled
         ((14, 15, 13), _oblique_affine((1.1, 0.9, 2.0), (0.2, -0.1, 0.35), (-20.0, 5.0, 33.0)), (1.5, 1.5, 1.5))]


@pytest.mark.parametrize("shape, affine, spacing", GRIDS)
def test_resample_is_monai_spacing_on_its_grid(shape, affine, spacing):
    """Reference equivalence: the grid is MONAI Spacing's (zoom_affine + compute_shape_offset)
    and the values are its bilinear / nearest values (SimpleITK interpolates them)."""
    from monai.data import MetaTensor
    from monai.data.utils import compute_shape_offset, zoom_affine
    from monai.transforms import Spacing

    from rn_classifier.data.ingest import Volume, spacing_grid

    monai_affine = zoom_affine(affine, np.asarray(spacing), diagonal=False)
    monai_shape, offset = compute_shape_offset(shape, affine, monai_affine, scale_extent=False)
    monai_affine[:3, 3] = offset[:3]
    ours_shape, ours_affine = spacing_grid(shape, affine, spacing)
    assert ours_shape == tuple(int(n) for n in monai_shape)
    np.testing.assert_allclose(ours_affine, monai_affine, atol=1e-12)

    rng = np.random.default_rng(0)
    image = rng.normal(100, 30, shape).astype(np.float32)
    labels = rng.integers(0, 3, shape).astype(np.int16)
    for array, mode in ((image, "bilinear"), (labels, "nearest")):
        ours = resample(Volume(array, affine), spacing, mode=mode)
        theirs = Spacing(pixdim=spacing, mode=mode, padding_mode="border" if mode != "nearest" else "zeros",
                         align_corners=True)(MetaTensor(array.astype(np.float32)[None], affine=affine))
        np.testing.assert_allclose(ours.affine, np.asarray(theirs.affine), atol=1e-9)
        if mode == "nearest":
            assert ours.array.dtype == array.dtype
            # a point halfway between two voxels (1.5 in-plane of 2 mm voxels resampled to 1.5 mm)
            # may round either way (SimpleITK and MONAI compute it with different float errors):
            # equal everywhere else
            index = np.linalg.solve(affine, ours.affine) @ np.concatenate(
                [np.indices(ours.array.shape).reshape(3, -1), np.ones((1, ours.array.size))])
            tie = (np.abs(index[:3] % 1.0 - 0.5) < 1e-6).any(axis=0).reshape(ours.array.shape)
            assert not tie.all()
            np.testing.assert_array_equal(ours.array[~tie], np.rint(theirs[0].numpy())[~tie])
        else:
            np.testing.assert_allclose(ours.array, theirs[0].numpy(), rtol=1e-5, atol=1e-3)


def test_zscore_of_a_crop_with_whole_image_statistics_is_the_crop_of_the_normalised_image():
    from rn_classifier.data.crop import crop_with_padding
    from rn_classifier.data.ingest import apply_zscore, zscore_statistics

    rng = np.random.default_rng(1)
    x = np.zeros((40, 44, 36), np.float32)
    x[6:34, 8:38, 5:30] = rng.normal(600, 120, (28, 30, 25))
    x += rng.normal(0, 5, x.shape).astype(np.float32)          # scanner noise in the background
    start, size = np.array([20, -6, 15]), np.array([24, 24, 24])   # leaves the image: padded
    whole = normalise(x, "zscore_foreground", (0.5, 99.5))
    expected = crop_with_padding(whole, start, size, float(whole.min()))
    stats = zscore_statistics(x, (0.5, 99.5))
    got = apply_zscore(crop_with_padding(x, start, size, float(x.min())), stats)
    np.testing.assert_array_equal(got, expected)
    # and the normalisation is MONAI's NormalizeIntensity with those statistics
    from monai.transforms import NormalizeIntensity

    clipped = np.where(x > stats.threshold, np.clip(x, stats.low, stats.high), np.minimum(x, stats.high))
    monai = NormalizeIntensity(subtrahend=stats.mean, divisor=stats.std)(clipped[None])[0]
    np.testing.assert_array_equal(whole, np.asarray(monai, dtype=np.float32))


def test_a_preprocessing_worker_imports_neither_torch_monai_nor_pandas(tmp_path):
    """Spawned preprocessing workers start in a fraction of the time without them."""
    import subprocess
    import sys

    image = np.zeros((24, 24, 16), np.int16)
    image[4:20, 4:20, 3:13] = 500
    mask = np.zeros_like(image)
    mask[10:14, 10:14, 6:9] = 1
    affine = np.diag([1.5, 1.5, 2.5, 1.0])
    img, msk = save_nifti(image, tmp_path / "i.nii.gz", affine), save_nifti(mask, tmp_path / "m.nii.gz", affine)
    # what a worker runs (data.case_crop.crop_or_problem on a row and a CropSetting)
    code = ("import sys\nfrom rn_classifier.data.case_crop import LESION, crop_or_problem\n"
            "from rn_classifier.data.crop import CropSetting\n"
            f"row = dict(case_id='c', patient_id='p', center='A', label=1, image_path={str(img)!r}, "
            f"mask_path={str(msk)!r}, mask_labels=(1,))\n"
            "(crop, _), problem = crop_or_problem((row, CropSetting((1.0, 1.0, 1.0), (16, 16, 16)), LESION))\n"
            "assert problem is None and crop.shape == (2, 16, 16, 16)\n"
            "print(sorted(m for m in ('torch', 'monai', 'pandas') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"

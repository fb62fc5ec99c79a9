"""RTSTRUCT and DICOM-SEG lesion masks on DICOM MR series (rn_classifier.data.dicom_rt).

The series and structure sets are written inside the tests by routes the reader does not share
(tests/dicom_builders.py: SimpleITK's series writer, contours traced along voxel edges and
mapped with SimpleITK's index-to-world transform; highdicom's SEG writer). The real brain1 scan
goes through check-data, preprocess, radiomics and predict as DICOM-RT and as NRRD.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from builders import head_volume, save_nifti, sphere, write_dicom_series
from dicom_builders import write_rtstruct, write_rtstruct_from_mask, write_seg

from rn_classifier.cli import main
from rn_classifier.data.ingest import load_mask, load_volume
from rn_classifier.errors import InputError

SPACING = (0.8, 0.8, 2.0)          # SimpleITK (x, y, z)
ORIGIN = (-30.0, -40.0, -20.0)


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """A 48 × 56 × 24 head as an axial MR series (x 0.8, y 0.8, z 2 mm), read back."""
    folder = tmp_path_factory.mktemp("series") / "MR"
    head = head_volume((24, 56, 48), seed=4)                       # (Z, Y, X)
    write_dicom_series(head, SPACING, ORIGIN, folder)
    return {"folder": folder, "volume": load_volume(folder), "zyx": head}


def _circle(centre, radius, z, n=256):
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.c_[centre[0] + radius * np.cos(angles), centre[1] + radius * np.sin(angles), np.full(n, z)]


def test_sphere_contours_rasterise_to_the_spheres_volume(series, tmp_path):
    """Circles of a 9 mm sphere on every slice it cuts: the voxels whose centre is inside hold
    4/3 π r³ within 3 %."""
    r, centre = 9.0, np.array([-10.7, -18.3, 4.1])
    slices = ORIGIN[2] + SPACING[2] * np.arange(24)
    contours = [_circle(centre, math.sqrt(r**2 - (z - centre[2]) ** 2), z)
                for z in slices if abs(z - centre[2]) < r]
    rs = write_rtstruct(tmp_path / "RS.dcm", {"sphere": contours}, series["folder"])
    mask, codes = load_mask(rs, ["sphere"], series["volume"])
    volume = (mask.array == codes[0]).sum() * np.prod(SPACING)
    assert volume == pytest.approx(4 / 3 * math.pi * r**3, rel=0.03)
    world = series["volume"].voxel_to_world(np.argwhere(mask.array > 0))   # RAS
    lps = world * [-1, -1, 1]
    assert np.linalg.norm(lps.mean(axis=0) - centre) < 0.5                 # in the right place


def test_a_contour_inside_another_is_a_hole(series, tmp_path):
    z = ORIGIN[2] + SPACING[2] * 12
    rs = write_rtstruct(tmp_path / "RS.dcm", {"ring": [_circle((-10, -18), 8, z), _circle((-10, -18), 4, z)]},
                        series["folder"])
    mask, _ = load_mask(rs, ["ring"], series["volume"])
    area = (mask.array > 0).sum() * SPACING[0] * SPACING[1]
    assert area == pytest.approx(math.pi * (8**2 - 4**2), rel=0.05)
    centre = np.rint(series["volume"].world_to_voxel([10.0, 18.0, z])).astype(int)
    assert mask.array[tuple(centre)] == 0


def test_rtstruct_beside_the_series_in_one_folder(series, tmp_path):
    """A planning export puts the RTSTRUCT into the series' folder: the folder is still one series."""
    import shutil

    import SimpleITK as sitk

    folder = tmp_path / "export"
    shutil.copytree(series["folder"], folder)
    lesion = sphere(series["zyx"].shape, (12, 28, 24), 5)
    reference = sitk.ReadImage(sorted(str(p) for p in folder.glob("*.dcm")))
    rs = write_rtstruct_from_mask(folder / "RS.lesion.dcm", reference, {"GTV 1": lesion}, series["folder"])
    image = load_volume(folder)
    mask, _ = load_mask(rs, ["GTV 1"], image)
    assert (mask.array > 0).sum() == lesion.sum()


def test_seg_segments_by_number_or_label(series, tmp_path):
    a = sphere(series["zyx"].shape, (8, 20, 20), 4)
    b = sphere(series["zyx"].shape, (16, 36, 30), 3)
    seg = write_seg(tmp_path / "seg.dcm", series["folder"], {"enhancing": a, "necrosis": b})
    by_label, codes = load_mask(seg, ["necrosis"], series["volume"])
    by_number, _ = load_mask(seg, [2], series["volume"])
    both, both_codes = load_mask(seg, [], series["volume"])
    assert codes == (1,) and both_codes == (1, 2)
    np.testing.assert_array_equal(by_label.array, by_number.array)
    assert (by_label.array > 0).sum() == b.sum() and (both.array > 0).sum() == a.sum() + b.sum()
    # the segment lands where the series' voxels are: the same voxels as the same sphere contoured
    import SimpleITK as sitk

    reference = sitk.ReadImage(sorted(str(p) for p in series["folder"].glob("*.dcm")))
    rs = write_rtstruct_from_mask(tmp_path / "RS.dcm", reference, {"n": b}, series["folder"])
    contoured, _ = load_mask(rs, ["n"], series["volume"])
    np.testing.assert_array_equal(contoured.array > 0, by_label.array > 0)


def test_rtstruct_needs_the_series_as_image(series, tmp_path):
    import SimpleITK as sitk

    reference = sitk.ReadImage(sorted(str(p) for p in series["folder"].glob("*.dcm")))
    rs = write_rtstruct_from_mask(tmp_path / "RS.dcm", reference, {"GTV": sphere(series["zyx"].shape, (12, 28, 24), 4)},
                                  series["folder"])
    nifti = save_nifti(series["volume"].array, tmp_path / "t1.nii.gz", series["volume"].affine)
    with pytest.raises(InputError, match="needs as image the DICOM series folder"):
        load_mask(rs, ["GTV"], load_volume(nifti))
    with pytest.raises(InputError, match=r"are names, which only an RTSTRUCT or DICOM-SEG mask has"):
        load_mask(nifti, ["GTV"], load_volume(nifti))


# -- the real brain1 scan as a planning system would export it -----------------------------------

@pytest.fixture(scope="module")
def brain1_rt(brain1, tmp_path_factory):
    """brain1 as MR series + RTSTRUCT (ROI 'GTV') and as NRRD, each with a one-case manifest."""
    import SimpleITK as sitk

    root = tmp_path_factory.mktemp("brain1_rt")
    image, label = sitk.ReadImage(str(brain1["image"])), sitk.ReadImage(str(brain1["mask"]))
    write_dicom_series(sitk.GetArrayFromImage(image), image.GetSpacing(), image.GetOrigin(),
                       root / "dicom" / "MR", image.GetDirection())
    write_rtstruct_from_mask(root / "dicom" / "RS.dcm", label, {"GTV": sitk.GetArrayFromImage(label) > 0},
                             root / "dicom" / "MR")
    rows = {"dicom": ("dicom/MR", "dicom/RS.dcm", "GTV"), "nrrd": (str(brain1["image"]), str(brain1["mask"]), "1")}
    manifests = {}
    for name, (img, msk, labels) in rows.items():
        manifests[name] = root / f"{name}.csv"
        pd.DataFrame([{"case_id": "brain1", "patient_id": "brain1", "center": "TCGA", "image": img,
                       "mask": msk, "mask_labels": labels, "label": 1}]).to_csv(manifests[name], index=False)
    return {"root": root, "series": root / "dicom" / "MR", "rtstruct": root / "dicom" / "RS.dcm",
            "manifests": manifests}


@pytest.mark.real_data
def test_brain1_dicom_rt_passes_check_data_and_preprocesses_like_the_nrrd(brain1_rt, capsys):
    from rn_classifier.data.cache import CropCache

    assert main(["check-data", str(brain1_rt["manifests"]["dicom"])]) == 0, capsys.readouterr().err
    caches = {}
    for name, manifest in brain1_rt["manifests"].items():
        out = brain1_rt["root"] / f"cache_{name}"
        assert main(["preprocess", str(manifest), "--out", str(out), "--set", "workers=1",
                     "--set", "spacing=[1.0,1.0,1.0]", "--set", "labelled_crop=[48,48,48]"]) == 0
        caches[name] = CropCache(out)
    dicom, nrrd = (pd.read_csv(brain1_rt["root"] / f"cache_{n}" / "index.csv") for n in ("dicom", "nrrd"))
    assert dicom["lesion_volume_ml"][0] == pytest.approx(nrrd["lesion_volume_ml"][0], rel=0.05)
    np.testing.assert_allclose(caches["dicom"][0], caches["nrrd"][0], atol=1e-3)
    np.testing.assert_allclose(json.loads(dicom["affine"][0]), json.loads(nrrd["affine"][0]), atol=1e-4)


@pytest.mark.real_data
def test_brain1_dicom_rt_radiomics_first_order_within_1_percent(brain1_rt, brain1):
    """pyradiomics' own settings for brain1 (its baseline file: no resampling). With resampling
    the features depend on the voxel order the scan is stored in, whatever the container (see
    baselines.radiomics._read_case)."""
    import ast
    import csv

    from rn_classifier.baselines.radiomics import extract_case

    with open(brain1["baseline"], newline="") as fh:
        rows = {row[0]: row[1] for row in csv.reader(fh) if len(row) > 1}
    settings = ast.literal_eval(rows["diagnostics_Configuration_Settings"])
    assert settings["resampledPixelSpacing"] is None
    classes = {"firstorder": [], "shape": ["MeshVolume"]}
    dicom = extract_case(brain1_rt["series"], brain1_rt["rtstruct"], mask_labels=["GTV"], settings=settings,
                         image_types={"Original": {}}, feature_classes=classes, case_id="brain1")
    nrrd = extract_case(brain1["image"], brain1["mask"], mask_labels=[1], settings=settings,
                        image_types={"Original": {}}, feature_classes=classes, case_id="brain1")
    first_order = [k for k in nrrd if "_firstorder_" in k]
    assert len(first_order) >= 18 and set(dicom) == set(nrrd)
    for name in first_order + ["original_shape_MeshVolume"]:
        assert dicom[name] == pytest.approx(nrrd[name], rel=0.01, abs=1e-6), name


@pytest.mark.real_data
def test_brain1_dicom_rt_predicts_like_the_nrrd(brain1_rt, brain1, tiny_study, tmp_path, capsys):
    run = str(tiny_study / "finetune" / "ssl_vit")
    assert main(["predict", "--model", run, "--image", str(brain1_rt["series"]), "--mask",
                 str(brain1_rt["rtstruct"]), "--mask-labels", "GTV", "--out", str(tmp_path / "dicom")]) == 0
    assert main(["predict", "--model", run, "--image", str(brain1["image"]), "--mask", str(brain1["mask"]),
                 "--out", str(tmp_path / "nrrd")]) == 0, capsys.readouterr().err
    dicom, nrrd = (json.loads((tmp_path / d / "prediction.json").read_text()) for d in ("dicom", "nrrd"))
    assert dicom["probability_rn"] == pytest.approx(nrrd["probability_rn"], abs=1e-5)
    assert dicom["input"]["lesion_volume_ml"] == pytest.approx(nrrd["input"]["lesion_volume_ml"], rel=0.05)
    assert dicom["input"]["mask_labels"] == ["GTV"]

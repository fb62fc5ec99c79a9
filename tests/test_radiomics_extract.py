"""extract_case and the config schema: real-data reproduction of pyradiomics' baseline, mask
union, and every bad input named (empty / too small mask, geometry mismatch, bad parameters)."""

from __future__ import annotations

import ast
import csv
from pathlib import Path

import numpy as np
import pytest

from builders import head_volume, save_nifti, sphere
from rn_classifier.baselines.radiomics import extract_case
from rn_classifier.baselines.radiomics_config import (RadiomicsConfig, molab_pyradiomics_params,
                                                      validate_config)
from rn_classifier.config import load_config
from rn_classifier.errors import ConfigError, InputError

REPO = Path(__file__).resolve().parents[1]
MESH_FEATURES = {"original_shape_MeshVolume", "original_shape_SurfaceArea",
                 "original_shape_SurfaceVolumeRatio", "original_shape_Sphericity"}
# fast settings for synthetic cases: original image, no resampling
FAST = {"binWidth": 25, "minimumROISize": 10}
ORIGINAL = {"Original": {}}


def _baseline(path: Path) -> dict[str, str]:
    with open(path, newline="") as fh:
        return {row[0]: row[1] for row in csv.reader(fh) if len(row) > 1}


@pytest.mark.real_data
def test_brain1_reproduces_pyradiomics_baseline(brain1):
    rows = _baseline(brain1["baseline"])
    settings = ast.literal_eval(rows["diagnostics_Configuration_Settings"])
    image_types = ast.literal_eval(rows["diagnostics_Configuration_EnabledImageTypes"])
    features = extract_case(brain1["image"], brain1["mask"], settings=settings, image_types=image_types)

    expected = {k: float(v) for k, v in rows.items() if k.startswith("original_")}
    assert len(expected) == 107
    missing = sorted(set(expected) - set(features))
    assert not missing, f"features not extracted: {missing}"
    exact, mesh = [], []
    for name, want in expected.items():
        rel = abs(features[name] - want) / max(abs(want), 1e-12)
        (mesh if name in MESH_FEATURES else exact).append((rel, name))
    assert len(mesh) == 4
    assert max(exact)[0] <= 1e-6, f"worst: {max(exact)}"
    # mesh-based shape features changed in pyradiomics after the baseline was made
    assert max(mesh)[0] <= 1e-3, f"worst mesh feature: {max(mesh)}"


def write_lesion_case(folder: Path, name: str, lesion_labels=(11, 12), radius=5.0, affine=None,
                      shape=(24, 24, 24), texture_sd=0.0, seed=0):
    """Image with a bright shell around a dark core; mask codes shell 11, core 12 (MOLAB).

    texture_sd: SD of noise added inside the lesion (a heterogeneous lesion). Returns
    (image path, mask path), NIfTI with 2 mm voxels unless ``affine`` says otherwise.
    """
    rng = np.random.default_rng(seed)
    img = head_volume(shape, seed=seed).astype(float)
    msk = np.zeros(shape, np.int16)
    center = [s / 2 for s in shape]
    shell, core = sphere(shape, center, radius), sphere(shape, center, radius / 2)
    img[shell] = 1200 + rng.normal(0, texture_sd, int(shell.sum()))
    img[core] = 300 + rng.normal(0, texture_sd, int(core.sum()))
    if radius > 0:
        msk[shell] = lesion_labels[0]
        msk[core] = lesion_labels[-1]
    return (save_nifti(img.astype(np.int16), folder / f"{name}_img.nii.gz", affine),
            save_nifti(msk, folder / f"{name}_msk.nii.gz", affine))


def test_mask_labels_are_merged_into_one_lesion(tmp_path):
    image, mask = write_lesion_case(tmp_path, "a")
    merged = extract_case(image, mask, settings=FAST, image_types=ORIGINAL, mask_labels=(11, 12))
    # the same lesion as one binary mask file
    import nibabel as nib

    m = nib.load(mask)
    binary = save_nifti((np.asarray(m.dataobj) > 0).astype(np.int16), tmp_path / "bin.nii.gz", m.affine)
    reference = extract_case(image, binary, settings=FAST, image_types=ORIGINAL)
    assert merged == pytest.approx(reference, rel=1e-12)
    shell_only = extract_case(image, mask, settings=FAST, image_types=ORIGINAL, mask_labels=(11,))
    assert shell_only["original_shape_VoxelVolume"] < merged["original_shape_VoxelVolume"]
    # 2 mm voxels: the volume is in mm^3, i.e. the spacing reached pyradiomics
    n_voxels = int((np.asarray(m.dataobj) > 0).sum())
    assert merged["original_shape_VoxelVolume"] == pytest.approx(8.0 * n_voxels)
    assert not any(k.startswith("diagnostics_") for k in merged)


def test_empty_lesion_is_named(tmp_path):
    image, mask = write_lesion_case(tmp_path, "empty")
    with pytest.raises(InputError, match=r"case P7: .*lacks lesion code\(s\) \[21\]; expected \[21\], found \[11, 12\]"):
        extract_case(image, mask, settings=FAST, image_types=ORIGINAL, mask_labels=(21,), case_id="P7")


def test_lesion_below_minimum_roi_size_is_named(tmp_path):
    image, mask = write_lesion_case(tmp_path, "tiny", radius=1.0)  # 7 voxels
    with pytest.raises(InputError, match=r"case tiny1: .*too small"):
        extract_case(image, mask, settings=FAST, image_types=ORIGINAL, mask_labels=(11, 12),
                     case_id="tiny1")
    # as in pyradiomics, the size counts voxels of the grid the features are computed on:
    # resampled to 1 mm the same lesion holds 8x more voxels and passes
    resampled = {**FAST, "resampledPixelSpacing": [1.0, 1.0, 1.0], "interpolator": "sitkBSpline"}
    features = extract_case(image, mask, settings=resampled, image_types=ORIGINAL, mask_labels=(11, 12))
    assert features["original_shape_VoxelVolume"] > 10  # mm^3 = voxels at 1 mm


def test_geometry_mismatch_is_rejected_even_with_resampling(tmp_path):
    image, _ = write_lesion_case(tmp_path, "img")
    shifted = np.diag([2.0, 2.0, 2.0, 1.0])
    shifted[:3, 3] = [3.0, 0.0, 0.0]  # mask 3 mm off the image
    _, mask = write_lesion_case(tmp_path, "msk", affine=shifted)
    # pyradiomics' resampling alone would map both onto the mask's grid and not notice; the
    # case reader refuses it as it does for the ViT's crops
    settings = {**FAST, "resampledPixelSpacing": [2.0, 2.0, 2.0], "interpolator": "sitkBSpline"}
    with pytest.raises(InputError, match=r"case G1: .*geometry differs from the image"):
        extract_case(image, mask, settings=settings, image_types=ORIGINAL, mask_labels=(11, 12),
                     case_id="G1")


def test_missing_file_is_named(tmp_path):
    _, mask = write_lesion_case(tmp_path, "m")
    with pytest.raises(InputError, match=r"case X: .*nope.nii.gz: file does not exist"):
        extract_case(tmp_path / "nope.nii.gz", mask, settings=FAST, image_types=ORIGINAL, case_id="X")


def test_parameters_rejected_by_pyradiomics_schema_pass_its_message_on(tmp_path):
    with pytest.raises(ConfigError, match=r"(?s)pyradiomics' parameter schema.*binWidth"):
        extract_case(tmp_path / "a.nii.gz", tmp_path / "b.nii.gz", settings={"binWidth": -5})
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("extraction:\n  pyradiomics:\n    imageType: {Fancy: {}}\n")
    with pytest.raises(ConfigError, match=r"Image Type Fancy is not recognized"):
        validate_config(load_config(RadiomicsConfig, cfg))


def test_molab_yaml_spells_out_the_default_parameters():
    molab = validate_config(load_config(RadiomicsConfig, REPO / "configs/radiomics/molab.yaml"))
    assert molab.extraction.pyradiomics == molab_pyradiomics_params()
    assert validate_config(RadiomicsConfig()).extraction.pyradiomics == molab_pyradiomics_params()
    demo = validate_config(load_config(RadiomicsConfig, REPO / "configs/radiomics/demo.yaml"))
    # a block in a config replaces the default as a whole (no wavelet sneaking back in)
    assert set(demo.extraction.pyradiomics["imageType"]) == {"Original", "LoG"}

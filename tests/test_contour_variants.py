"""Alternative contours: morphology and jitter on the drawn grid, other raters' masks, and what a
one-voxel change of the contour does to a prediction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from rn_classifier.data.contour_variants import (ContourVariantConfig, ball, contour_variants, dilate,
                                                 erode, jitter, rater_columns, rater_lesions,
                                                 spread_summary, variant_inputs)
from rn_classifier.data.crop import CropSetting, read_case
from rn_classifier.errors import InputError

from builders import save_nifti


def cube(shape, start, side) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[tuple(slice(s, s + side) for s in start)] = True
    return mask


@pytest.mark.parametrize("dims", [2, 3])
def test_ball_is_the_cross_at_one_voxel_and_an_ellipsoid_when_anisotropic(dims):
    assert ball([1.0] * dims, 1.0).sum() == 1 + 2 * dims          # centre + one neighbour per side
    assert ball([1.0] * dims, 0.5).sum() == 1
    anisotropic = ball([1.0] * (dims - 1) + [5.0], 2.0)          # 5 mm slices: no reach along z
    assert anisotropic.shape[-1] == 1 and anisotropic.shape[0] == 5


def test_morphology_moves_the_boundary_by_one_voxel_at_least():
    lesion = cube((12, 12, 12), (4, 4, 4), 4)
    # 1 mm at 2 mm voxels: a sub-voxel change is no change, so one voxel (2 mm) is used
    assert dilate(lesion, (2, 2, 2), 1.0).sum() == 64 + 6 * 16      # one face layer per side
    assert erode(lesion, (2, 2, 2), 1.0).sum() == 8                 # the 2^3 core
    assert dilate(lesion, (1, 1, 1), 1.0).sum() == 64 + 6 * 16
    # with 5 mm slices and 1 mm in-plane, 1 mm grows the lesion in-plane only
    assert dilate(lesion, (1, 1, 5), 1.0).sum() == 64 + 4 * 16


def test_jitter_is_seeded_plausible_and_zero_amplitude_is_the_lesion():
    lesion = np.zeros((24, 24, 24), bool)
    grid = np.indices(lesion.shape) - 11.5
    lesion[(grid ** 2).sum(0) <= 6.0 ** 2] = True
    variants = contour_variants(lesion, (1, 1, 1), ContourVariantConfig(n_jitter=2, seed=0), "case-1")
    assert set(variants) == {"erode", "dilate", "jitter0", "jitter1"}
    again = contour_variants(lesion, (1, 1, 1), ContourVariantConfig(n_jitter=2, seed=0), "case-1")
    assert all((variants[k] == again[k]).all() for k in variants)
    assert (variants["jitter0"] != variants["jitter1"]).any()
    for name in ("jitter0", "jitter1"):
        changed = variants[name] ^ lesion
        assert 0 < changed.sum() < 0.5 * lesion.sum()               # the boundary moved, the lesion stayed
        assert (variants[name] <= dilate(lesion, (1, 1, 1), 4.0)).all()  # within 4 SD of the contour
    rng = np.random.default_rng(0)
    assert (jitter(lesion, (1, 1, 1), 1e-9, 4.0, rng) == lesion).all()
    with pytest.raises(InputError, match="margin_mm must be > 0"):
        contour_variants(lesion, (1, 1, 1), ContourVariantConfig(margin_mm=0))


@pytest.mark.parametrize("seed", range(6))
def test_the_moved_contour_equals_the_whole_image_distance_rule(seed):
    """Distances taken in the lesion's neighbourhood only give the voxels of the whole-image
    rule: lesions at the border and inside, anisotropic voxels, smooth and rough fields."""
    from scipy import ndimage

    from rn_classifier.data.contour_variants import moved_contour, signed_distance_mm

    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(12, 40, 3))
    spacing = tuple(float(s) for s in rng.choice([0.78, 1.0, 2.0, 6.5], 3))
    shape = (shape[0] + 20, shape[1] + 20, shape[2])
    # a rough blob of a few voxels' radius, somewhere in the image (seed 0: at its edge)
    centre = np.array([rng.uniform(0, n) for n in shape]) if seed else np.array([2.0, shape[1] / 2, 1.0])
    radius = rng.uniform(2.0, 5.0) * (1 + 0.3 * ndimage.gaussian_filter(rng.standard_normal(shape), 2.0))
    lesion = (((np.indices(shape).T - centre) ** 2).sum(-1).T < radius ** 2)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 1.0 + seed) * (4.0 if seed % 2 else 1.0)
    field *= 2.0 / max(float(field.std()), 1e-12)
    whole = signed_distance_mm(lesion, spacing) < field
    moved = moved_contour(lesion, spacing, field)
    assert lesion.any() and (whole ^ lesion).any()
    np.testing.assert_array_equal(moved, whole)


def test_a_tiny_lesion_loses_its_erosion_and_says_so_by_its_absence():
    lesion = cube((8, 8, 8), (3, 3, 3), 2)
    assert set(contour_variants(lesion, (1, 1, 1), ContourVariantConfig(n_jitter=0))) == {"dilate"}


def _volume_model(crop: np.ndarray) -> float:
    """A deterministic 'model': P(RN) = sigmoid((lesion voxels in the input − 100) / 50)."""
    return float(expit((crop[1].sum() - 100.0) / 50.0))


def test_one_voxel_dilation_moves_the_prediction_by_the_hand_computed_amount(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 10.0, (20, 20, 20)).astype(np.float32)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    image_path = save_nifti(image, tmp_path / "t1ce.nii.gz", affine)
    mask_path = save_nifti(cube(image.shape, (8, 8, 8), 4).astype(np.uint8), tmp_path / "mask.nii.gz", affine)
    case = read_case(image_path, mask_path, (1,))
    setting = CropSetting((2.0, 2.0, 2.0), (16, 16, 16))
    variants = contour_variants(case.mask.lesion, case.image.spacing,
                                ContourVariantConfig(margin_mm=1.0, n_jitter=0))
    inputs = variant_inputs(case, setting, {"original": case.mask.lesion, **variants})
    probs = {name: _volume_model(x) for name, x in inputs.items()}
    # By hand: 4^3 = 64 voxels; one-voxel dilation adds a 4x4 layer on each of 6 faces -> 160;
    # erosion leaves the 2^3 core -> 8.
    sigmoid = lambda v: expit((v - 100.0) / 50.0)  # noqa: E731
    assert probs["original"] == pytest.approx(sigmoid(64))
    assert probs["dilate"] == pytest.approx(sigmoid(160))
    assert probs["erode"] == pytest.approx(sigmoid(8))
    assert probs["dilate"] - probs["original"] == pytest.approx(sigmoid(160) - sigmoid(64))
    summary = spread_summary(probs)
    expected = [sigmoid(64), sigmoid(8), sigmoid(160)]
    assert summary["sd"] == pytest.approx(np.std(expected))
    assert summary["range"] == pytest.approx([min(expected), max(expected)])
    assert summary["max_shift"] == pytest.approx(max(abs(sigmoid(8) - sigmoid(64)), abs(sigmoid(160) - sigmoid(64))))
    # the T1CE channel is the same whatever the contour (same centre here)
    assert all(np.array_equal(x[0], inputs["original"][0]) for x in inputs.values())


def test_two_raters_masks_from_the_manifest(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.normal(100.0, 10.0, (16, 16, 16)).astype(np.float32)
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    save_nifti(image, tmp_path / "t1ce.nii.gz", affine)
    for name, side in (("mask.nii.gz", 4), ("mask_r2.nii.gz", 5), ("mask_r3.nii.gz", 3)):
        save_nifti(cube(image.shape, (6, 6, 6), side).astype(np.uint8) * 2, tmp_path / name, affine)
    manifest = pd.DataFrame([{"case_id": "C1", "patient_id": "P1", "image": "t1ce.nii.gz",
                              "mask": "mask.nii.gz", "mask_labels": "2", "mask_rater2": "mask_r2.nii.gz",
                              "mask_rater3": "mask_r3.nii.gz"},
                             {"case_id": "C2", "patient_id": "P1", "image": "t1ce.nii.gz",
                              "mask": "mask.nii.gz", "mask_labels": "2", "mask_rater2": "mask_r2.nii.gz",
                              "mask_rater3": ""}])
    columns = rater_columns([*manifest.columns, "mask_path"])
    assert columns == ["mask_rater2", "mask_rater3"]
    case = read_case(tmp_path / "t1ce.nii.gz", tmp_path / "mask.nii.gz", (2,))
    first = rater_lesions(case, {**manifest.iloc[0].to_dict(), "mask_labels": (2,)}, columns, tmp_path)
    assert {k: int(v.sum()) for k, v in first.items()} == {"rater:mask_rater2": 125, "rater:mask_rater3": 27}
    second = rater_lesions(case, {**manifest.iloc[1].to_dict(), "mask_labels": (2,)}, columns, tmp_path)
    assert set(second) == {"rater:mask_rater2"}                    # rater 3 did not contour C2
    with pytest.raises(InputError, match="case C1, column mask_rater2"):
        rater_lesions(case, {**manifest.iloc[0].to_dict(), "mask_rater2": "missing.nii.gz",
                             "mask_labels": (2,)}, columns, tmp_path)


class _VolumeRun:
    """A stand-in for a trained run: two 'fold models' whose P(RN) is a known function of the
    number of lesion voxels in the input (fold k adds k·0.1 to the logit)."""

    clinical_spec: dict = {}

    def __init__(self, setting):
        from types import SimpleNamespace

        self.preprocessing = SimpleNamespace(crop_setting=setting)

    def predict(self, crop, clinical, with_attention=False):
        from types import SimpleNamespace

        logits = np.array([(crop[1].sum() - 100.0) / 50.0 + 0.1 * k for k in range(2)])
        return SimpleNamespace(probs=expit(logits))


def test_cohort_contour_predictions_with_two_raters(tmp_path):
    from rn_classifier.data.manifest import load_manifest
    from rn_classifier.stats.contour import auc_by_variant, contour_spread
    from rn_classifier.study.contour import predict_contours

    rng = np.random.default_rng(2)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    rows = []
    for i, side in enumerate((3, 4, 5, 6)):
        image = rng.normal(100.0, 10.0, (20, 20, 20)).astype(np.float32)
        save_nifti(image, tmp_path / f"t1ce{i}.nii.gz", affine)
        for name, s in ((f"m{i}.nii.gz", side), (f"r2_{i}.nii.gz", side + 1), (f"r3_{i}.nii.gz", side - 1)):
            save_nifti(cube(image.shape, (7, 7, 7), s).astype(np.uint8), tmp_path / name, affine)
        rows.append({"case_id": f"C{i}", "patient_id": f"P{i}", "center": "A", "image": f"t1ce{i}.nii.gz",
                     "mask": f"m{i}.nii.gz", "mask_labels": "1", "label": i % 2, "synthetic": 1,
                     "mask_rater2": f"r2_{i}.nii.gz", "mask_rater3": f"r3_{i}.nii.gz"})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    manifest = load_manifest(tmp_path / "manifest.csv")
    setting = CropSetting((2.0, 2.0, 2.0), (16, 16, 16))
    table = predict_contours({"m": _VolumeRun(setting)}, {"external": (manifest, tmp_path)},
                             ContourVariantConfig(n_jitter=1), echo=lambda line: None)
    assert set(table["variant"]) == {"original", "erode", "dilate", "jitter0",
                                     "rater:mask_rater2", "rater:mask_rater3"}
    by_hand = lambda voxels: np.mean([expit((voxels - 100.0) / 50.0 + 0.1 * k) for k in range(2)])  # noqa: E731
    c2 = table[table["case_id"] == "C2"].set_index("variant")["y_prob"]      # a 5^3 cube
    assert c2["original"] == pytest.approx(by_hand(125))
    assert c2["dilate"] == pytest.approx(by_hand(125 + 6 * 25))
    assert c2["erode"] == pytest.approx(by_hand(27))
    assert c2["rater:mask_rater2"] == pytest.approx(by_hand(216))
    assert c2["rater:mask_rater3"] == pytest.approx(by_hand(64))
    spread = contour_spread(table).set_index("case_id")
    assert spread.loc["C2", "y_contour_std"] == pytest.approx(np.std(c2.to_numpy()))
    aucs = auc_by_variant(table)["m"]["external"]
    assert list(aucs)[0] == "original" and {"rater:mask_rater2", "rater:mask_rater3"} <= set(aucs)
    assert aucs["original"]["n_cases"] == 4 and aucs["original"]["auc"] is not None

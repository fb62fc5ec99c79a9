"""The label-free shift check on the SYNTHETIC cohort: the external centre (another scanner) is
flagged, internal parts held out as if new are not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from rn_classifier.errors import InputError
from rn_classifier.shift.check import RobustScale, score_distance, shift_check
from rn_classifier.shift.features import crop_features


@pytest.fixture(scope="module")
def mini_cohort(tmp_path_factory):
    """The SYNTHETIC ``mini`` preset (20 internal lesions, 8 external at 5 mm slices, another
    scanner), preprocessed at 3 mm into 16³ crops; image features of every case; a split."""
    from rn_classifier.data.cache import CropCache
    from rn_classifier.data.manifest import load_manifest
    from rn_classifier.data.preprocess import PreprocessConfig, preprocess
    from rn_classifier.data.split import make_split
    from rn_classifier.data.synth import make_synthetic_cohort
    from rn_classifier.shift.features import cache_features

    root = tmp_path_factory.mktemp("mini")
    make_synthetic_cohort(root, preset="mini", seed=0, pool_size=0, workers=1)
    cfg = PreprocessConfig(spacing=[3.0, 3.0, 3.0], labelled_crop=[16, 16, 16], workers=1)
    features = []
    for cohort in ("internal", "external"):
        preprocess(root / "manifests" / f"{cohort}.csv", root / "cache" / cohort, cfg)
        features.append(cache_features(CropCache(root / "cache" / cohort)))
    split = make_split(load_manifest(root / "manifests" / "internal.csv"), test_fraction=0.2,
                       n_folds=3, seed=0)
    external = pd.read_csv(root / "manifests" / "external.csv", dtype=str)
    return {"features": pd.concat(features), "split": split, "external": external, "root": root}


def _predictions(split: pd.DataFrame, external: pd.DataFrame, seed=0, external_shift=0.0):
    """Predictions rows (seam 2) of one model: oof for the CV part, mean-of-folds elsewhere."""
    rng = np.random.default_rng(seed)
    rows = []
    for _, r in split.iterrows():
        oof = r["part"] != "internal_test"
        rows.append({"model": "m", "case_id": r["case_id"], "patient_id": r["patient_id"],
                     "cohort": "oof" if oof else "internal_test", "fold": int(r["fold"]) if oof else -1,
                     "y_true": 0, "y_prob": float(rng.beta(2, 2))})
    for _, r in external.iterrows():
        rows.append({"model": "m", "case_id": r["case_id"], "patient_id": r["patient_id"],
                     "cohort": "external", "fold": -1, "y_true": 0,
                     "y_prob": float(np.clip(rng.beta(2, 2) - external_shift, 0, 1))})
    return pd.DataFrame(rows)


def test_external_centre_is_flagged_and_internal_parts_are_not(mini_cohort):
    features = mini_cohort["features"]
    assert set(features.loc[features.index.str.startswith("SYN-EXT"), "slice_mm"]) == {5.0}
    preds = _predictions(mini_cohort["split"], mini_cohort["external"])
    result = shift_check(features, preds, n_draws=100)
    image = result["image"]
    assert image["cohorts"]["external"]["flagged"]
    assert not image["cohorts"]["internal_test"]["flagged"]
    assert len(image["folds"]) == 3 and not any(f["flagged"] for f in image["folds"])
    ext = image["cohorts"]["external"]
    assert ext["distance"] > 2 * ext["threshold"]
    # The slice thickness and the through-plane smoothness say why.
    furthest = sorted(ext["per_feature"], key=ext["per_feature"].get, reverse=True)[:3]
    assert "slice_mm" in furthest
    cases = image["cases"]
    assert cases["n_flagged"]["external"] >= 7 and cases["n_flagged"]["internal_test"] <= 1
    assert cases["internal_flagged_fraction"] <= 0.1


def test_score_distribution_shift_is_flagged():
    rng = np.random.default_rng(3)
    n_oof, n_ext = 90, 28
    split = pd.DataFrame({"case_id": [f"I{i}" for i in range(n_oof)],
                          "patient_id": [f"P{i // 2}" for i in range(n_oof)],
                          "part": "train", "fold": [(i // 2) % 3 for i in range(n_oof)]})
    external = pd.DataFrame({"case_id": [f"E{i}" for i in range(n_ext)],
                             "patient_id": [f"Q{i}" for i in range(n_ext)]})
    same = shift_check(pd.DataFrame({"patient_id": split["patient_id"].tolist() + external["patient_id"].tolist(),
                                     "f": rng.normal(size=n_oof + n_ext)},
                                    index=split["case_id"].tolist() + external["case_id"].tolist()),
                       _predictions(split, external), n_draws=100)
    assert not same["scores"]["m"]["cohorts"]["external"]["flagged"]
    assert not any(f["flagged"] for f in same["scores"]["m"]["folds"])
    assert not same["image"]["cohorts"]["external"]["flagged"]
    shifted = shift_check(pd.DataFrame({"patient_id": split["patient_id"].tolist() + external["patient_id"].tolist(),
                                        "f": rng.normal(size=n_oof + n_ext)},
                                       index=split["case_id"].tolist() + external["case_id"].tolist()),
                          _predictions(split, external, external_shift=0.35), n_draws=100)
    assert shifted["scores"]["m"]["cohorts"]["external"]["flagged"]


def test_crop_features_by_construction():
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 0.5, (1, 40, 40, 40))
    f = crop_features(noise)
    assert f["noise"] == pytest.approx(0.5, rel=0.05)
    assert f["z_smoothness"] == pytest.approx(1.0, abs=0.05)
    assert f["q50"] == pytest.approx(0.0, abs=0.02)
    # A cached crop and the smaller model input cut from its centre are described alike.
    model_input = noise[:, 4:36, 4:36, 4:36]
    assert crop_features(model_input) == crop_features(noise)
    # Thick slices: averaging along z smooths the through-plane differences only.
    thick = ndimage.uniform_filter1d(noise, 3, axis=3)
    assert crop_features(thick)["z_smoothness"] < 0.6
    # With a lesion channel: median inside minus median outside.
    image = np.zeros((20, 20, 20))
    mask = np.zeros_like(image)
    mask[5:10, 5:10, 5:10] = 1
    image[mask > 0] = 3.0
    assert crop_features(np.stack([image, mask]))["lesion_contrast"] == pytest.approx(3.0)


def test_robust_scale_and_distances():
    reference = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0, 5.0], "slice_mm": [2.0] * 5})
    scale = RobustScale.fit(reference)
    assert scale.centre["a"] == 3.0 and scale.scale["a"] == pytest.approx(2.0 / 1.349)
    assert scale.scale["slice_mm"] == pytest.approx(0.1)          # a constant: 5 % of its median
    assert score_distance([0.1, 0.2], [0.3, 0.4]) == pytest.approx(0.2)
    with pytest.raises(InputError, match="level must be in"):
        shift_check(reference.assign(patient_id="p"), pd.DataFrame(), level=1.5)


def _weightless_bundle(folder, family: str):
    """A model bundle with no fold networks (what recording a reference reads: bundle.json)."""
    from rn_classifier.models.bundle import write_bundle

    return write_bundle(folder, {"name": folder.name, "family": family, "n_folds": 0, "architecture": None,
                                 "preprocessing": None, "clinical_columns": None, "folds": [],
                                 "threshold": None, "provenance": {}}, None)


def test_shift_check_command_writes_shift_json_and_cases(mini_cohort, tmp_path, capsys):
    """... and records the internal range into the bundles it is given (a bundle folder, or a run
    folder holding bundle/), except a clinical-only model's, which reads no image."""
    import json

    from rn_classifier.cli import main
    from rn_classifier.models.bundle import shift_reference
    from rn_classifier.shift.check import case_reference

    preds = tmp_path / "predictions.csv"
    _predictions(mini_cohort["split"], mini_cohort["external"]).assign(synthetic=True).to_csv(preds, index=False)
    image_bundle = _weightless_bundle(tmp_path / "image_model", "image")
    run_bundle = _weightless_bundle(tmp_path / "late_run" / "bundle", "late")
    clinical_bundle = _weightless_bundle(tmp_path / "clinical_model", "clinical")
    root = mini_cohort["root"]
    assert main(["shift-check", str(preds), "--cache", str(root / "cache" / "internal"),
                 "--cache", str(root / "cache" / "external"), "--out", str(tmp_path / "shift"),
                 "--n-draws", "50", "--model", str(image_bundle), "--model", str(tmp_path / "late_run"),
                 "--model", str(clinical_bundle)]) == 0
    printed = capsys.readouterr().out
    assert "external (SYNTHETIC): image distance" in printed and "FLAGGED" in printed
    shift = json.loads((tmp_path / "shift" / "shift.json").read_text())
    assert shift["synthetic"] is True and shift["image"]["cohorts"]["external"]["flagged"] is True
    cases = pd.read_csv(tmp_path / "shift" / "cases.csv")
    assert set(cases["cohort"]) == {"internal_test", "external"}
    assert cases["synthetic"].all() and "slice_mm" in cases.loc[cases["cohort"] == "external", "furthest"].iloc[0]
    expected = case_reference(shift)
    assert expected["threshold"] == shift["image"]["cases"]["threshold"] and expected["level"] == 0.99
    assert expected["reference"] == shift["image"]["cases"]["reference"]
    assert shift_reference(image_bundle) == expected and shift_reference(run_bundle) == expected
    assert shift_reference(clinical_bundle) is None and "reads no image" in printed
    assert main(["shift-check", str(preds), "--cache", str(root / "cache" / "internal"),
                 "--out", str(tmp_path / "never"), "--model", str(tmp_path)]) != 0
    assert "neither a model bundle" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()                        # refused before the check ran


def test_a_bad_shift_reference_is_refused_and_the_bundle_left_as_it_was(tmp_path):
    from rn_classifier.models.bundle import META_NAME, set_shift_reference, set_threshold, shift_reference

    bundle = _weightless_bundle(tmp_path / "m", "image")
    good = {"reference": {"median": {"q50": 0.1, "noise": 0.2}, "scale": {"q50": 0.5, "noise": 0.1}},
            "threshold": 1.5, "level": 0.99}
    set_shift_reference(bundle, good)
    set_threshold(bundle, {"value": 0.4})                  # the other setter keeps the reference
    assert shift_reference(bundle) == good
    before = (bundle / META_NAME).read_text()
    bad = {"reference": {"median": {"q50": 0.1, "noise": 0.2}, "scale": {"q50": 0.0, "slice_mm": 1.0}},
           "threshold": float("nan")}
    with pytest.raises(InputError) as caught:
        set_shift_reference(bundle, bad)
    message = str(caught.value)
    assert str(bundle / META_NAME) in message and "lacks 'level'" in message
    assert "threshold = nan is not a finite number" in message and "different statistics" in message
    assert (bundle / META_NAME).read_text() == before


def test_a_new_case_is_checked_against_the_stored_reference(mini_cohort):
    from rn_classifier.shift.check import case_verdict

    features = mini_cohort["features"]
    preds = _predictions(mini_cohort["split"], mini_cohort["external"])
    cases = shift_check(features, preds, n_draws=50)["image"]["cases"]
    stored = {c["case_id"]: c for c in cases["cases"]}
    for case_id in list(stored)[:4]:
        row = features.drop(columns=["patient_id"]).loc[case_id].to_dict()
        verdict = case_verdict(row, cases["reference"], cases["threshold"])
        assert verdict["distance"] == pytest.approx(stored[case_id]["distance"])
        assert verdict["flagged"] == stored[case_id]["flagged"]
    with pytest.raises(InputError, match="none of the reference's image statistics"):
        case_verdict({"other": 1.0}, cases["reference"], cases["threshold"])

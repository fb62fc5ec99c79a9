"""``rn-classifier radiomics`` end to end on a tiny generated cohort: outputs of the run folder,
skipped cases, the failure mode, a given split reused, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from rn_classifier.baselines.radiomics_run import run_radiomics
from rn_classifier.cli import main
from rn_classifier.data.manifest import write_manifest
from rn_classifier.data.split import load_split, make_split, save_split
from rn_classifier.errors import DataIntegrityError
from rn_classifier.predictions import read_predictions
from test_radiomics_extract import write_lesion_case

CONFIG = """
extraction:
  pyradiomics:
    setting: {binWidth: 25, minimumROISize: 10}
    imageType: {Original: {}}
    featureClass: {shape: [], firstorder: [], glcm: []}
  workers: 1
  on_error: ON_ERROR
  cache_dir: CACHE_DIR
cv: {n_folds: 3, test_fraction: 0.2, seed: 0}
model:
  classifiers: [logreg_l2, random_forest]
  C_grid: [0.1, 1.0]
  rf_n_estimators: 30
  rf_max_depth_grid: [3]
  selection: {method: l1, max_features: 5}
"""


def _cohort(folder, prefix, n_patients, bad=()):
    """One lesion per patient (patients 0 and 1 have a second time point); label 1 (radiation
    necrosis) lesions are heterogeneous, label 0 homogeneous."""
    rows = []
    for p in range(n_patients):
        label = p % 2
        for t in range(2 if p < 2 else 1):
            case_id = f"{prefix}{p:02d}_t{t}"
            seed = 100 * ord(prefix) + 10 * p + t
            image, mask = write_lesion_case(folder, case_id, radius=4.0 + (p + t) % 3,
                                            texture_sd=150.0 if label else 10.0, seed=seed)
            rows.append({"case_id": case_id, "patient_id": f"{prefix}{p:02d}", "center": prefix,
                         "image": image.name, "mask": mask.name,
                         "mask_labels": "31" if case_id in bad else "11;12", "label": label,
                         "synthetic": 1})
    write_manifest(pd.DataFrame(rows), folder / "manifest.csv")
    return folder / "manifest.csv"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("radiomics_cohort")
    (root / "internal").mkdir()
    (root / "external").mkdir()
    return {"internal": _cohort(root / "internal", "A", 16, bad={"A05_t0"}),
            "external": _cohort(root / "external", "B", 6), "cache": root / "cache", "root": root}


def _config(tmp_path, cohort, on_error="skip"):
    path = tmp_path / f"radiomics_{on_error}.yaml"
    path.write_text(CONFIG.replace("ON_ERROR", on_error).replace("CACHE_DIR", str(cohort["cache"])))
    return path


def test_run_writes_every_output_and_skips_the_bad_case(tmp_path, cohort):
    out = tmp_path / "run"
    summary = run_radiomics(_config(tmp_path, cohort), cohort["internal"], out,
                            external=cohort["external"], progress=False)
    for name in ("config.yaml", "provenance.json", "split.csv", "features.csv",
                 "selected_features.csv", "predictions.csv", "skipped.csv", "summary.json"):
        assert (out / name).is_file(), name

    skipped = pd.read_csv(out / "skipped.csv")
    assert skipped["case_id"].tolist() == ["A05_t0"]
    assert "lacks lesion code(s) [31]" in skipped["reason"].iloc[0]
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["skipped"] == 1 and summary["synthetic"] is True

    split = pd.read_csv(out / "split.csv", dtype={"case_id": str})
    preds = read_predictions(out / "predictions.csv")
    assert set(preds["model"]) == {"radiomics"}
    assert set(preds["cohort"]) == {"oof", "internal_test", "external"}
    train_ids = set(split.loc[split["part"] == "train", "case_id"]) - {"A05_t0"}
    test_ids = set(split.loc[split["part"] == "internal_test", "case_id"]) - {"A05_t0"}
    assert set(preds.loc[preds["cohort"] == "oof", "case_id"]) == train_ids
    assert set(preds.loc[preds["cohort"] == "internal_test", "case_id"]) == test_ids
    assert len(preds[preds["cohort"] == "external"]) == 8
    oof = preds[preds["cohort"] == "oof"].merge(split, on="case_id", suffixes=("", "_split"))
    assert (oof["fold"] == oof["fold_split"]).all()
    assert preds.loc[preds["cohort"] != "oof", "y_std"].notna().all()
    assert preds["synthetic"].eq(1).all()
    # heterogeneous vs homogeneous lesions are easy: the baseline must find it out of fold
    assert summary["auc"]["oof"] > 0.8

    features = pd.read_csv(out / "features.csv")
    assert len(features) == 25 and "A05_t0" not in set(features["case_id"])
    assert {"original_shape_VoxelVolume", "original_glcm_Contrast"} <= set(features.columns)
    selected = pd.read_csv(out / "selected_features.csv")
    assert 1 <= len(selected) <= 5 and set(selected["feature"]) <= set(features.columns)

    again = run_radiomics(_config(tmp_path, cohort), cohort["internal"], tmp_path / "run2",
                          external=cohort["external"], progress=False)
    assert again["extraction"]["from_cache"] == 25 and again["extraction"]["extracted"] == 0
    pd.testing.assert_frame_equal(read_predictions(tmp_path / "run2" / "predictions.csv"), preds)


def test_on_error_fail_names_the_case_and_writes_nothing(tmp_path, cohort):
    out = tmp_path / "run"
    with pytest.raises(DataIntegrityError, match=r"(?s)on_error=skip.*case A05_t0: mask .* \[31\]"):
        run_radiomics(_config(tmp_path, cohort, on_error="fail"), cohort["internal"], out,
                      progress=False)
    assert not (out / "predictions.csv").exists() and not (out / "split.csv").exists()


def test_cli_reuses_a_given_split(tmp_path, cohort):
    from rn_classifier.data.manifest import load_manifest

    internal = load_manifest(cohort["internal"])
    given = make_split(internal, test_fraction=0.25, n_folds=3, seed=7)
    save_split(given, tmp_path / "given_split.csv")
    out = tmp_path / "run"
    rc = main(["radiomics", "--config", str(_config(tmp_path, cohort)), "--manifest",
               str(cohort["internal"]), "--split", str(tmp_path / "given_split.csv"), "--out", str(out),
               "--no-progress"])
    assert rc == 0
    used = load_split(out / "split.csv", internal)
    pd.testing.assert_frame_equal(used, load_split(tmp_path / "given_split.csv", internal))
    preds = read_predictions(out / "predictions.csv")
    assert set(preds["cohort"]) == {"oof", "internal_test"}
    oof = preds[preds["cohort"] == "oof"].merge(used, on="case_id", suffixes=("", "_split"))
    assert np.array_equal(oof["fold"], oof["fold_split"])


def test_cli_passes_pyradiomics_schema_message_on(tmp_path, cohort, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("extraction:\n  pyradiomics:\n    setting: {binWidth: -1}\n")
    rc = main(["radiomics", "--config", str(bad), "--manifest", str(cohort["internal"]),
               "--out", str(tmp_path / "run")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "pyradiomics' parameter schema" in err and "/setting/binWidth" in err
    assert not (tmp_path / "run").exists()

"""Predictions files (seam 2) -> compare stage -> stats.json, and the `compare` CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from rn_classifier.cli import main
from rn_classifier.errors import DataIntegrityError, InputError
from rn_classifier.stats import auc_delong, delong_paired, holm, youden_threshold
from rn_classifier.stats.compare import CompareSettings, compare_predictions
from rn_classifier.stats.predictions import cohort_table, read_predictions

MODELS = {"ssl": 2.0, "supervised": 0.3, "radiomics": 1.2}
COHORT_SIZES = {"oof": 80, "internal_test": 30, "external": 28}


def make_predictions(seed=0, synthetic=None, with_std=False) -> dict[str, pd.DataFrame]:
    """One predictions frame per model, patients with 1–2 lesions, three cohorts."""
    rng = np.random.default_rng(seed)
    rows = {m: [] for m in MODELS}
    for cohort, n in COHORT_SIZES.items():
        patient = np.repeat(np.arange(n), 2)[:n] // 1
        y = (rng.random(n) < 0.45).astype(int)
        y[:2] = [0, 1]
        y[2:4] = [0, 1]
        for model, effect in MODELS.items():
            logits = effect * (2 * y - 1) + rng.normal(size=n)
            prob = np.round(expit(logits), 4)
            for i in range(n):
                row = {"model": model, "case_id": f"{cohort}-{i:03d}",
                       "patient_id": f"{cohort}-P{patient[i] // 2:03d}", "cohort": cohort,
                       "fold": i % 5 if cohort == "oof" else -1, "y_true": y[i],
                       "y_prob": prob[i]}
                if with_std:
                    row["y_std"] = 0.05
                if synthetic is not None:
                    row["synthetic"] = synthetic
                rows[model].append(row)
    return {m: pd.DataFrame(r) for m, r in rows.items()}


def write(frames, folder) -> list:
    paths = []
    for model, frame in frames.items():
        path = folder / f"{model}.csv"
        frame.to_csv(path, index=False)
        paths.append(path)
    return paths


def test_stats_json_schema_and_values(tmp_path):
    frames = make_predictions(synthetic=True, with_std=True)
    paths = write(frames, tmp_path)
    out = tmp_path / "stats.json"
    assert main(["compare", *map(str, paths), "--reference", "ssl", "--out", str(out),
                 "--n-boot", "300"]) == 0
    stats = json.loads(out.read_text())
    assert stats["reference"] == "ssl" and stats["synthetic"] is True
    assert list(stats["cohorts"]) == ["oof", "internal_test", "external"]
    table = pd.concat(frames.values())
    for cohort, info in stats["cohorts"].items():
        part = table[table["cohort"] == cohort]
        assert info["n_cases"] == COHORT_SIZES[cohort]
        assert info["n_positive"] == int(part[part["model"] == "ssl"]["y_true"].sum())
        for model, entry in info["models"].items():
            for key in ("auc", "auc_var", "auc_ci", "auc_ci_bootstrap", "brier", "ece",
                        "calibration_slope", "calibration_intercept", "threshold",
                        "sensitivity", "specificity", "ppv", "npv"):
                assert key in entry, (cohort, model, key)
            rows = part[part["model"] == model].sort_values("case_id")
            ref = auc_delong(rows["y_true"], rows["y_prob"])
            assert entry["auc"] == pytest.approx(ref.auc)
            assert entry["auc_var"] == pytest.approx(ref.var)
            assert entry["auc_ci"] == pytest.approx(list(ref.ci))
            lo, hi = entry["auc_ci_bootstrap"]
            assert lo <= entry["auc"] <= hi
            assert entry["mean_y_std"] == pytest.approx(0.05)
        comparisons = info["comparisons"]
        assert {c["model"] for c in comparisons} == {"supervised", "radiomics"}
        ssl = part[part["model"] == "ssl"].sort_values("case_id")
        for c in comparisons:
            other = part[part["model"] == c["model"]].sort_values("case_id")
            test = delong_paired(ssl["y_true"], other["y_prob"], ssl["y_prob"])
            assert c["reference"] == "ssl"
            assert c["auc_diff"] == pytest.approx(test.difference)
            assert c["z"] == pytest.approx(test.z)
            assert c["p_value"] == pytest.approx(test.p_value)
            assert c["diff_ci"] == pytest.approx(list(test.ci))
        np.testing.assert_allclose([c["p_holm"] for c in comparisons],
                                   holm([c["p_value"] for c in comparisons]))
    assert {e["model"] for e in stats["internal_vs_external"]} == set(MODELS)
    assert stats["provenance"]["git_sha"]


def test_threshold_is_chosen_on_oof_and_frozen(tmp_path):
    frames = make_predictions(seed=1)
    table = read_predictions(write(frames, tmp_path))
    stats = compare_predictions(table, "ssl", CompareSettings(n_boot=50))
    for model, frame in frames.items():
        oof = frame[frame["cohort"] == "oof"]
        expected = youden_threshold(oof["y_true"], oof["y_prob"]).threshold
        assert stats["thresholds"][model]["threshold_cohort"] == "oof"
        for cohort in ("oof", "internal_test", "external"):
            entry = stats["cohorts"][cohort]["models"][model]
            assert entry["threshold"] == pytest.approx(expected)
            assert entry["threshold_chosen_on_this_cohort"] == (cohort == "oof")
        ext = frame[frame["cohort"] == "external"]
        called = ext["y_prob"] >= expected
        entry = stats["cohorts"]["external"]["models"][model]
        assert entry["confusion"]["tp"] == int((called & (ext["y_true"] == 1)).sum())
        assert entry["sensitivity"] == pytest.approx(
            (called & (ext["y_true"] == 1)).sum() / (ext["y_true"] == 1).sum())
    # Without oof predictions the threshold comes from internal_test, still frozen for external.
    no_oof = table[table["cohort"] != "oof"]
    stats = compare_predictions(no_oof, "ssl", CompareSettings(n_boot=50))
    assert stats["thresholds"]["ssl"]["threshold_cohort"] == "internal_test"
    assert (stats["cohorts"]["external"]["models"]["ssl"]["threshold"]
            == stats["cohorts"]["internal_test"]["models"]["ssl"]["threshold"])


def test_recalibration_is_fitted_on_oof_only(tmp_path):
    frames = make_predictions(seed=2)
    table = read_predictions(write(frames, tmp_path))
    stats = compare_predictions(table, "ssl", CompareSettings(n_boot=50, recalibrate="isotonic"))
    assert "recalibrated" not in stats["cohorts"]["oof"]["models"]["ssl"]
    entry = stats["cohorts"]["external"]["models"]["ssl"]["recalibrated"]
    assert entry["fitted_on"] == "oof" and entry["method"] == "isotonic"
    with pytest.raises(InputError, match="no oof predictions"):
        compare_predictions(table[table["cohort"] != "oof"], "ssl",
                            CompareSettings(n_boot=50, recalibrate="platt"))


def test_missing_case_is_an_error_listing_ids(tmp_path):
    frames = make_predictions()
    frames["radiomics"] = frames["radiomics"][
        ~frames["radiomics"]["case_id"].isin(["external-003", "external-007"])]
    paths = write(frames, tmp_path)
    out = tmp_path / "stats.json"
    with pytest.raises(DataIntegrityError, match="radiomics.*external-003, external-007"):
        compare_predictions(read_predictions(paths), "ssl", CompareSettings(n_boot=20))
    assert main(["compare", *map(str, paths), "--reference", "ssl", "--out", str(out)]) == 2
    assert not out.exists()                         # no partial output


def test_y_true_disagreement_is_an_error(tmp_path):
    frames = make_predictions()
    frame = frames["supervised"]
    flip = frame["case_id"] == "internal_test-005"
    frame.loc[flip, "y_true"] = 1 - frame.loc[flip, "y_true"]
    table = read_predictions(write(frames, tmp_path))
    with pytest.raises(DataIntegrityError, match="y_true differs.*internal_test-005"):
        cohort_table(table, "internal_test", ["ssl", "supervised"])


def test_bad_rows_are_all_listed_once(tmp_path):
    frames = make_predictions()
    frame = frames["ssl"]
    frame["y_prob"] = frame["y_prob"].astype(object)
    frame.loc[3, "y_prob"] = np.nan
    frame.loc[4, "y_prob"] = "inf"
    frame.loc[5, "y_true"] = 2
    frame.loc[6, "cohort"] = "validation"
    frame.loc[7, "y_prob"] = 1.5
    paths = write(frames, tmp_path)
    with pytest.raises(DataIntegrityError) as info:
        read_predictions(paths)
    message = str(info.value)
    assert "oof-003 (line 5), oof-004 (line 6)" in message          # NaN and inf named
    assert "y_true must be 0 or 1" in message and "oof-005" in message
    assert "cohort must be one of oof, internal_test, external" in message and "oof-006" in message
    assert "[0, 1]: oof-007" in message
    assert len(info.value.problems) == 4


def test_file_level_errors(tmp_path):
    frames = make_predictions()
    frames["ssl"].drop(columns=["y_prob"]).to_csv(tmp_path / "ssl.csv", index=False)
    with pytest.raises(DataIntegrityError, match="missing column.*y_prob"):
        read_predictions([tmp_path / "ssl.csv", tmp_path / "nothing.csv"])
    frames = make_predictions()
    paths = write(frames, tmp_path)
    with pytest.raises(DataIntegrityError, match="more than once"):
        read_predictions([paths[0], paths[0]])
    with pytest.raises(InputError, match="reference model 'vit' is not in the predictions"):
        compare_predictions(read_predictions(paths), "vit")


def test_one_class_cohort_and_reference_absent(tmp_path):
    frames = make_predictions()
    table = read_predictions(write(frames, tmp_path))
    one_class = table[~((table["cohort"] == "external") & (table["y_true"] == 1))]
    with pytest.raises(InputError, match="cohort external: .*0 positive"):
        compare_predictions(one_class, "ssl", CompareSettings(n_boot=20))
    no_ref = table[~((table["model"] == "ssl") & (table["cohort"] == "external"))]
    stats = compare_predictions(no_ref, "ssl", CompareSettings(n_boot=20))
    assert stats["cohorts"]["external"]["comparisons"] == []
    assert "no external predictions" in stats["cohorts"]["external"]["notes"][0]


def test_synthetic_label(tmp_path):
    real = read_predictions(write(make_predictions(synthetic=False), tmp_path))
    assert compare_predictions(real, "ssl", CompareSettings(n_boot=20))["synthetic"] is False
    assert compare_predictions(real, "ssl", CompareSettings(n_boot=20), synthetic=True)["synthetic"]
    unmarked = read_predictions(write(make_predictions(), tmp_path))
    assert compare_predictions(unmarked, "ssl", CompareSettings(n_boot=20))["synthetic"] is False


def test_stats_json_is_strict_json(tmp_path):
    """Infinite slopes / undefined PPVs are written as null, never NaN or Infinity."""
    frames = make_predictions()
    frame = frames["ssl"]
    frame["y_prob"] = np.where(frame["y_true"] == 1, 0.9, 0.1)      # perfectly separated
    out = tmp_path / "stats.json"
    assert main(["compare", *map(str, write(frames, tmp_path)), "--reference", "ssl",
                 "--out", str(out), "--n-boot", "50"]) == 0
    text = out.read_text()
    stats = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert stats["cohorts"]["external"]["models"]["ssl"]["calibration_slope"] is None
    assert stats["cohorts"]["external"]["models"]["ssl"]["calibration_separated"] is True

"""Uncertainty evaluated as CURVAS does: ECE, Brier (= CRPS), AUROC of uncertainty for errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from rn_classifier.stats import expected_calibration_error
from rn_classifier.stats.compare import CompareSettings, compare_predictions
from rn_classifier.stats.predictions import read_predictions
from rn_classifier.stats.uncertainty import (misclassification_auroc, uncertainty_summary,
                                             wrong_calls)

from test_stats_compare import make_predictions, write


def test_ece_of_four_predictions_by_hand():
    y, p = [0, 1, 1, 1], [0.1, 0.3, 0.7, 0.9]
    # 2 bins: [0, 0.5) holds 0.1, 0.3 (mean 0.2, observed 0.5); [0.5, 1] holds 0.7, 0.9
    # (mean 0.8, observed 1.0): ECE = 0.5·0.3 + 0.5·0.2 = 0.25.
    assert expected_calibration_error(y, p, n_bins=2) == pytest.approx(0.25)
    # 10 bins: one prediction per bin: (0.1 + 0.7 + 0.3 + 0.1) / 4 = 0.3.
    assert expected_calibration_error(y, p, n_bins=10) == pytest.approx(0.3)


def test_brier_is_the_crps_of_a_binary_outcome():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    p = rng.random(50)
    x = np.linspace(0.0, 1.0, 20001)[:-1] + 0.5 / 20000      # midpoints on [0, 1)
    crps = [np.mean(((1.0 - pi) - (x >= yi)) ** 2) for yi, pi in zip(y, p)]   # ∫ (F − 1{x ≥ y})²
    summary = uncertainty_summary(y, p, {}, 0.5, 10)
    assert summary["crps"] == summary["brier"] == pytest.approx(brier_score_loss(y, p))
    assert summary["brier"] == pytest.approx(np.mean(crps), abs=1e-6)


def test_misclassification_auroc_by_hand():
    y, p, t = [0, 0, 1, 1], [0.2, 0.6, 0.4, 0.9], 0.5
    assert wrong_calls(y, p, t).tolist() == [False, True, True, False]
    # wrong calls have spreads 0.3, 0.2; right ones 0.25, 0.05: 3 of 4 pairs ordered -> 0.75.
    ranking = misclassification_auroc(y, p, [0.25, 0.3, 0.2, 0.05], t)
    assert ranking.auroc == pytest.approx(0.75) and ranking.n_errors == 2
    assert ranking.auroc == pytest.approx(roc_auc_score([0, 1, 1, 0], [0.25, 0.3, 0.2, 0.05]))
    # A case exactly at the threshold is called RN.
    assert wrong_calls([0], [0.5], 0.5).tolist() == [True]
    summary = uncertainty_summary(y, p, {"y_std": np.array([0.25, 0.3, 0.2, 0.05])}, t, 10)
    assert summary["auroc_errors"] == pytest.approx({"threshold_margin": 1.0, "y_std": 0.75})
    assert summary["n_errors"] == 2 and summary["error_rate"] == pytest.approx(0.5)


def test_no_wrong_call_gives_no_auroc_and_says_why():
    summary = uncertainty_summary([0, 1], [0.2, 0.8], {"y_std": np.array([0.1, 0.2])}, 0.5, 10)
    assert summary["auroc_errors"] == {"threshold_margin": None, "y_std": None}
    assert "needs both right and wrong calls" in summary["notes"][0]
    # A spread missing for some cases is left out, with a note; missing everywhere: absent.
    partial = uncertainty_summary([0, 1, 1], [0.2, 0.8, 0.3], {"y_std": np.array([0.1, np.nan, 0.2]),
                                                               "y_contour_std": np.full(3, np.nan)},
                                  0.5, 10)
    assert set(partial["auroc_errors"]) == {"threshold_margin"}
    assert "y_std is missing for 1 of 3 cases" in partial["notes"][0]


def test_stats_json_uncertainty_table(tmp_path):
    frames = make_predictions(seed=3, with_std=True)
    rng = np.random.default_rng(1)
    for frame in frames.values():
        held_out = frame["cohort"] != "oof"
        frame.loc[~held_out, "y_std"] = np.nan           # oof has no fold spread
        frame.loc[held_out, "y_std"] = rng.random(int(held_out.sum())) * 0.1
        frame.loc[held_out, "y_contour_std"] = rng.random(int(held_out.sum())) * 0.1
    table = read_predictions(write(frames, tmp_path))
    stats = compare_predictions(table, "ssl", CompareSettings(n_boot=50, recalibrate="platt"))
    rules = stats["uncertainty"]
    assert rules["ece_binning"].startswith("10 equal-width bins")
    assert set(rules["thresholds_after_recalibration"]) == set(frames)
    assert set(stats["cohorts"]["oof"]["models"]["ssl"]["uncertainty"]["before"]["auroc_errors"]) == {
        "threshold_margin"}
    assert "after_recalibration" not in stats["cohorts"]["oof"]["models"]["ssl"]["uncertainty"]
    for model, frame in frames.items():
        t = stats["thresholds"][model]["threshold"]
        ext = frame[frame["cohort"] == "external"].sort_values("case_id")
        entry = stats["cohorts"]["external"]["models"][model]["uncertainty"]
        before = entry["before"]
        assert before["ece"] == pytest.approx(stats["cohorts"]["external"]["models"][model]["ece"])
        for column in ("y_std", "y_contour_std"):
            expected = misclassification_auroc(ext["y_true"], ext["y_prob"], ext[column], t).auroc
            assert before["auroc_errors"][column] == pytest.approx(expected)
        after = entry["after_recalibration"]
        assert after["threshold"] == pytest.approx(rules["thresholds_after_recalibration"][model])
        assert after["ece"] == pytest.approx(
            stats["cohorts"]["external"]["models"][model]["recalibrated"]["ece"])
        # Platt is monotone: the threshold maps with the probabilities, the wrong calls stay.
        assert after["n_errors"] == before["n_errors"]
        assert after["auroc_errors"]["y_std"] == pytest.approx(before["auroc_errors"]["y_std"])


def test_contour_spread_column_is_checked(tmp_path):
    frame = make_predictions(seed=4)["ssl"]
    frame["y_contour_std"] = 0.1
    frame.loc[3, "y_contour_std"] = -1.0
    path = tmp_path / "p.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(Exception, match="y_contour_std must be empty or a finite number >= 0"):
        read_predictions([path])
    assert pd.read_csv(path)["y_contour_std"].notna().all()

"""Contour predictions files -> contour spread, AUC under each contour, and their place in stats.json."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rn_classifier.errors import DataIntegrityError
from rn_classifier.stats import auc_delong
from rn_classifier.stats.compare import CompareSettings, compare_predictions
from rn_classifier.stats.contour import (add_contour_spread, auc_by_variant, contour_spread,
                                         read_contour_predictions)
from rn_classifier.stats.predictions import read_predictions

from test_stats_compare import make_predictions, write


def _contour_rows(frames, seed=0, variants=("original", "erode", "dilate")):
    """Contour predictions of the held-out cases: the original = the model's y_prob, the
    alternatives moved by a random amount."""
    rng = np.random.default_rng(seed)
    rows = []
    for model, frame in frames.items():
        for _, r in frame[frame["cohort"] != "oof"].iterrows():
            for v in variants:
                shift = 0.0 if v == "original" else rng.normal(0, 0.05)
                rows.append({"model": model, "case_id": r["case_id"], "patient_id": r["patient_id"],
                             "cohort": r["cohort"], "y_true": r["y_true"], "variant": v,
                             "y_prob": float(np.clip(r["y_prob"] + shift, 0, 1))})
    return pd.DataFrame(rows)


def test_spread_by_hand_and_merge_into_predictions(tmp_path):
    contour = pd.DataFrame({"model": "m", "case_id": ["a", "a", "a", "b"], "patient_id": "p",
                            "cohort": "external", "y_true": [1, 1, 1, 0],
                            "variant": ["original", "erode", "dilate", "original"],
                            "y_prob": [0.5, 0.4, 0.9, 0.2]})
    spread = contour_spread(contour).set_index("case_id")
    assert spread.loc["a", "y_contour_std"] == pytest.approx(np.std([0.5, 0.4, 0.9]))
    assert spread.loc["b", "y_contour_std"] == 0.0 and spread.loc["a", "n_contours"] == 3
    preds = pd.DataFrame({"model": "m", "case_id": ["a", "b", "c"], "cohort": ["external"] * 2 + ["oof"]})
    merged = add_contour_spread(preds, contour)
    assert merged["y_contour_std"].iloc[:2].tolist() == pytest.approx([np.std([0.5, 0.4, 0.9]), 0.0])
    assert np.isnan(merged["y_contour_std"].iloc[2])
    path = tmp_path / "c.csv"
    contour.iloc[1:].to_csv(path, index=False)              # case a lost its original row
    with pytest.raises(DataIntegrityError, match="without an 'original' row"):
        read_contour_predictions(path)


def test_stats_json_contour_section_and_uncertainty(tmp_path):
    frames = make_predictions(seed=5, with_std=True)
    contour = _contour_rows(frames)
    path = tmp_path / "contour.csv"
    contour.to_csv(path, index=False)
    table = read_predictions(write(frames, tmp_path))
    stats = compare_predictions(table, "ssl", CompareSettings(n_boot=50),
                                contour=read_contour_predictions(path))
    assert stats["contour"]["variants"] == ["dilate", "erode", "original"]
    for model in frames:
        for cohort in ("internal_test", "external"):
            aucs = stats["contour"]["auc_by_variant"][model][cohort]
            part = contour[(contour["model"] == model) & (contour["cohort"] == cohort)]
            for variant, entry in aucs.items():
                rows = part[part["variant"] == variant].sort_values("case_id")
                assert entry["auc"] == pytest.approx(auc_delong(rows["y_true"], rows["y_prob"]).auc)
            entry = stats["cohorts"][cohort]["models"][model]
            assert "y_contour_std" in entry["uncertainty"]["before"]["auroc_errors"]
            assert entry["mean_y_contour_std"] > 0
        assert "y_contour_std" not in stats["cohorts"]["oof"]["models"][model]["uncertainty"]["before"]["auroc_errors"]
    assert auc_by_variant(contour)["ssl"]["external"]["original"]["n_cases"] == 28

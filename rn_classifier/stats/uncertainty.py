"""Uncertainty evaluated as the CURVAS challenge does (MICCAI 2024, "Calibration and Uncertainty
for multiRater Volume Assessment in multiorgan Segmentation"), from predictions files alone.

Per model and cohort:

* ECE — :func:`~rn_classifier.stats.calibration.expected_calibration_error`, ``n_bins``
  equal-width bins on [0, 1] (scikit-learn ``calibration_curve`` bin rule); the binning is
  written next to the number (:data:`ECE_BINNING`).
* Brier score = CRPS of a binary outcome: the forecast CDF of y ∈ {0, 1} is F(x) = 1 − p on
  [0, 1), so CRPS = ∫₀¹ (F(x) − 1{x ≥ y})² dx = (p − y)² (Gneiting & Raftery, JASA 2007).
* Does an uncertainty rank the errors? AUROC of the uncertainty as a score for the event "the
  call at the frozen threshold is wrong" (called RN = ``y_prob >= threshold``); 0.5 = no better
  than chance, 1 = every wrong call is more uncertain than every right one. Uncertainties: each
  spread column the predictions file has (``y_std`` = fold spread, ``y_contour_std`` = spread
  over alternative contours) and, as the baseline any probability carries, ``threshold_margin``
  = −|y_prob − threshold| (closeness to the threshold).

"After recalibration": the probabilities mapped by the recalibration fitted on the model's oof
predictions only (:class:`~rn_classifier.stats.calibration.Recalibrator`), and the threshold
re-chosen by Youden's J on the recalibrated oof predictions, frozen like the first one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .calibration import brier_score, expected_calibration_error
from .validation import check_labels, check_same_length, check_scores

SPREAD_DESCRIPTIONS = {"y_std": "fold spread (SD of the fold models' P(RN))",
                       "y_contour_std": "contour spread (SD of P(RN) over alternative contours)"}
MARGIN = "threshold_margin"
MARGIN_DESCRIPTION = "closeness to the frozen threshold, −|P(RN) − threshold|"


def ece_binning(n_bins: int) -> str:
    return (f"{n_bins} equal-width bins on [0, 1] (scikit-learn calibration_curve edges); "
            "ECE = Σ_b (n_b / N) |observed_b − mean predicted_b|")


@dataclass(frozen=True)
class ErrorRanking:
    """How well an uncertainty ranks the wrong calls: ``auroc`` is None when the cohort has no
    wrong call or no right one (an AUROC needs both; ``n_errors`` says which)."""

    auroc: float | None
    n_errors: int
    n_cases: int

    def as_dict(self) -> dict:
        return {"auroc": self.auroc, "n_errors": self.n_errors, "n_cases": self.n_cases}


def wrong_calls(y_true, y_prob, threshold: float) -> np.ndarray:
    """(N,) bool: the call ``y_prob >= threshold`` (1 = RN) differs from y_true."""
    y = check_labels(y_true)
    p = check_scores(y_prob, "y_prob")
    check_same_length(y_true=y, y_prob=p)
    return (p >= float(threshold)).astype(int) != y


def misclassification_auroc(y_true, y_prob, uncertainty, threshold: float) -> ErrorRanking:
    """AUROC of ``uncertainty`` (N,) (larger = less certain) for the wrong calls at ``threshold``."""
    from sklearn.metrics import roc_auc_score

    wrong = wrong_calls(y_true, y_prob, threshold)
    u = check_scores(uncertainty, "uncertainty")
    check_same_length(y_true=wrong, uncertainty=u)
    n_errors = int(wrong.sum())
    if n_errors in (0, wrong.size):
        return ErrorRanking(None, n_errors, int(wrong.size))
    return ErrorRanking(float(roc_auc_score(wrong.astype(int), u)), n_errors, int(wrong.size))


def threshold_margin(y_prob, threshold: float) -> np.ndarray:
    return -np.abs(np.asarray(y_prob, float) - float(threshold))


def uncertainty_summary(y_true, y_prob, spreads: dict[str, np.ndarray], threshold: float | None,
                        n_bins: int) -> dict:
    """ECE, Brier (= CRPS) and the error ranking of each uncertainty of one model on one cohort.

    spreads: column name -> (N,) spread per case; a column with a missing value for some case is
    left out with a note (its AUROC would describe a different set of cases).
    """
    y = check_labels(y_true)
    p = check_scores(y_prob, "y_prob")
    check_same_length(y_true=y, y_prob=p)
    brier = brier_score(y, p)
    out: dict = {"ece": expected_calibration_error(y, p, n_bins, "uniform"), "brier": brier,
                 "crps": brier, "threshold": threshold, "auroc_errors": {}, "notes": []}
    if threshold is None:
        out["notes"].append("no frozen threshold: the wrong calls are undefined")
        return out
    wrong = wrong_calls(y, p, threshold)
    out["n_errors"], out["error_rate"] = int(wrong.sum()), float(wrong.mean())
    uncertainties = {MARGIN: threshold_margin(p, threshold)}
    for column, values in spreads.items():
        values = np.asarray(values, float)
        missing = int((~np.isfinite(values)).sum())
        if missing == values.size:
            continue
        if missing:
            out["notes"].append(f"{column} is missing for {missing} of {values.size} cases: "
                                "its error ranking is not computed")
            continue
        uncertainties[column] = values
    for name, values in uncertainties.items():
        ranking = misclassification_auroc(y, p, values, threshold)
        out["auroc_errors"][name] = ranking.auroc
    if out["n_errors"] in (0, y.size):
        out["notes"].append(f"{out['n_errors']} wrong calls of {y.size}: an error-ranking AUROC "
                            "needs both right and wrong calls")
    return out


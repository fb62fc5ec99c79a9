"""Pointwise confidence band of a ROC curve by the stratified, patient-clustered bootstrap.

For each false-positive rate on a grid, the band is the percentile interval of the true-positive
rate over bootstrap replicates (the replicates of :mod:`.bootstrap`: patients resampled within
label strata, so lesions of one patient move together). Vertical averaging at fixed FPR as in
pROC's ``ci.se`` (Fawcett, "An introduction to ROC analysis", 2006).
"""

from __future__ import annotations

import numpy as np

from .bootstrap import bootstrap_weights, cluster_strata
from .validation import (check_both_classes, check_conf_level, check_labels, check_same_length,
                         check_scores)

DEFAULT_FPR_GRID = tuple(np.round(np.linspace(0.0, 1.0, 51), 3))


def _tpr_at(y: np.ndarray, score: np.ndarray, weights: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Weighted ROC, TPR at each FPR of ``grid`` (the highest TPR with FPR ≤ grid): (B, G)."""
    order = np.argsort(-score, kind="stable")
    s = score[order]
    last_of_tie = np.r_[s[1:] != s[:-1], True]          # thresholds between distinct scores
    w = weights[:, order]
    pos = np.cumsum(w * y[order], axis=1)[:, last_of_tie]
    neg = np.cumsum(w * (1 - y[order]), axis=1)[:, last_of_tie]
    tpr = np.hstack([np.zeros((w.shape[0], 1)), pos / pos[:, -1:]])
    fpr = np.hstack([np.zeros((w.shape[0], 1)), neg / neg[:, -1:]])
    out = np.empty((w.shape[0], grid.size))
    for b in range(w.shape[0]):
        idx = np.searchsorted(fpr[b], grid + 1e-12, side="right") - 1
        out[b] = np.maximum.accumulate(tpr[b])[idx]
    return out


def roc_confidence_band(y_true, y_score, groups=None, n_boot: int = 1000, conf_level: float = 0.95,
                        seed: int = 0, fpr_grid=DEFAULT_FPR_GRID) -> dict:
    """``{"fpr", "tpr", "tpr_lower", "tpr_upper", "n_boot", "conf_level", "clustered"}``.

    y_true: (N,) 0/1; y_score: (N,); groups: (N,) patient ids or None. ``tpr`` is the curve of
    the data itself on the same grid.
    """
    y = check_labels(y_true).astype(float)
    s = check_scores(y_score)
    check_same_length(y_true=y, y_score=s)
    check_both_classes(y.astype(int))
    conf_level = check_conf_level(conf_level)
    grid = np.asarray(fpr_grid, dtype=float)
    cluster_of_case, stratum = cluster_strata(y.astype(int), groups)
    weights = bootstrap_weights(cluster_of_case, stratum, int(n_boot), np.random.default_rng(seed))
    replicates = _tpr_at(y, s, weights, grid)
    alpha = 1.0 - conf_level
    lower, upper = np.quantile(replicates, [alpha / 2, 1 - alpha / 2], axis=0)
    observed = _tpr_at(y, s, np.ones((1, y.size)), grid)[0]
    return {"fpr": grid.tolist(), "tpr": observed.tolist(), "tpr_lower": lower.tolist(),
            "tpr_upper": upper.tolist(), "n_boot": int(n_boot), "conf_level": conf_level,
            "clustered": groups is not None}

"""Calibration: do predicted probabilities match observed frequencies? (CURVAS challenge view)

* Reliability curve and expected calibration error (ECE) over bins of the predicted probability,
  equal-width (``"uniform"``) or equal-mass (``"quantile"``) — the bin rule is scikit-learn's
  ``calibration_curve`` (interior edges, ``searchsorted`` left), so the points agree with it.
  ECE = Σ_b (n_b / N) · |observed_b − mean predicted_b| (Naeini et al., AAAI 2015).
* Brier score (mean squared error of the probability; scikit-learn ``brier_score_loss``).
* Logistic recalibration (Cox, Biometrika 1958; Van Calster et al., J Clin Epidemiol 2016):
  calibration slope b from ``logit P(y=1) = a + b·logit(p)``; calibration intercept
  ("calibration-in-the-large") from ``logit P(y=1) = a + logit(p)`` (slope fixed at 1, the
  predictions as an offset). Ideal: slope 1, intercept 0; slope < 1 means over-confident.
* Recalibration maps (Platt = the logistic recalibration above; isotonic regression) to be
  FITTED ON INTERNAL OUT-OF-FOLD PREDICTIONS ONLY and then applied unchanged to other cohorts.

Probabilities are clipped to [1e-6, 1 − 1e-6] before the logit: a model that writes exactly 0
or 1 (float32 sigmoid saturation) would otherwise give an infinite logit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import expit

from ..errors import InputError
from .validation import (check_both_classes, check_choice, check_labels, check_probabilities,
                         check_same_length)

BIN_STRATEGIES = ("uniform", "quantile")
RECALIBRATION_METHODS = ("platt", "isotonic")
_LOGIT_EPS = 1e-6


def _checked(y_true, y_prob) -> tuple[np.ndarray, np.ndarray]:
    y = check_labels(y_true)
    p = check_probabilities(y_prob)
    if p.ndim != 1:
        raise InputError(f"y_prob must be one vector of probabilities, got shape {p.shape}")
    check_same_length(y_true=y, y_prob=p)
    if y.size == 0:
        raise InputError("no cases given: y_true and y_prob are empty")
    return y, p


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 − p)) after clipping p to [1e-6, 1 − 1e-6]."""
    p = np.clip(np.asarray(p, float), _LOGIT_EPS, 1.0 - _LOGIT_EPS)
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class ReliabilityCurve:
    """Non-empty bins of a reliability diagram.

    bin_edges: (n_bins + 1,) edges used; mean_predicted, observed_fraction, count: (B,) for the
    B non-empty bins, in increasing order of probability.
    """

    strategy: str
    bin_edges: np.ndarray
    mean_predicted: np.ndarray
    observed_fraction: np.ndarray
    count: np.ndarray

    def as_dict(self) -> dict:
        return {"strategy": self.strategy, "bin_edges": self.bin_edges.tolist(),
                "mean_predicted": self.mean_predicted.tolist(),
                "observed_fraction": self.observed_fraction.tolist(),
                "count": self.count.tolist()}


def reliability_curve(y_true, y_prob, n_bins: int = 10,
                      strategy: str = "uniform") -> ReliabilityCurve:
    """Reliability-diagram points; the same bins and values as sklearn ``calibration_curve``.

    y_true: (N,) 0/1; y_prob: (N,) in [0, 1]; strategy "uniform" (equal width) or "quantile"
    (equal mass: edges at the quantiles of y_prob; ties can leave bins uneven or empty).
    """
    y, p = _checked(y_true, y_prob)
    check_choice(strategy, "strategy", BIN_STRATEGIES)
    if int(n_bins) < 1:
        raise InputError(f"n_bins must be a positive number of bins, got {n_bins}")
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    else:
        edges = np.percentile(p, np.linspace(0.0, 100.0, n_bins + 1))
    bin_of = np.searchsorted(edges[1:-1], p)
    count = np.bincount(bin_of, minlength=n_bins)
    sum_pred = np.bincount(bin_of, weights=p, minlength=n_bins)
    sum_true = np.bincount(bin_of, weights=y, minlength=n_bins)
    keep = count > 0
    return ReliabilityCurve(strategy, edges, sum_pred[keep] / count[keep],
                            sum_true[keep] / count[keep], count[keep])


def expected_calibration_error(y_true, y_prob, n_bins: int = 10,
                               strategy: str = "uniform") -> float:
    """ECE = Σ_b (n_b / N) |observed_b − mean predicted_b|, bins of :func:`reliability_curve`."""
    curve = reliability_curve(y_true, y_prob, n_bins, strategy)
    weights = curve.count / curve.count.sum()
    return float(np.sum(weights * np.abs(curve.observed_fraction - curve.mean_predicted)))


def brier_score(y_true, y_prob) -> float:
    """Mean of (p − y)²; scikit-learn ``brier_score_loss``. 0 is perfect; 0.25 = always 0.5."""
    from sklearn.metrics import brier_score_loss

    y, p = _checked(y_true, y_prob)
    return float(brier_score_loss(y, p, pos_label=1))


@dataclass(frozen=True)
class LogisticCalibration:
    """Calibration slope and intercept (Van Calster et al. 2016).

    ``slope`` is +inf when the logits separate the classes (completely or quasi-completely: no
    finite maximum-likelihood slope exists; ``separated`` is then True), and nan when all
    probabilities are equal (a slope cannot be estimated from one distinct value).
    """

    slope: float
    intercept: float
    separated: bool

    def as_dict(self) -> dict:
        return asdict(self)


def _fit_logistic(y: np.ndarray, x: np.ndarray | None, offset: np.ndarray | None) -> np.ndarray:
    """Maximum-likelihood logistic regression via statsmodels GLM; returns the coefficients."""
    import statsmodels.api as sm

    design = np.ones((y.size, 1)) if x is None else np.column_stack([np.ones(y.size), x])
    model = sm.GLM(y.astype(float), design, family=sm.families.Binomial(), offset=offset)
    with np.errstate(over="ignore"):   # exp overflow of extreme logits in the IRLS link is benign
        return np.asarray(model.fit().params)


def calibration_slope_intercept(y_true, y_prob) -> LogisticCalibration:
    """Logistic recalibration of probabilities y_prob: (N,) against labels y_true: (N,) 0/1."""
    y, p = _checked(y_true, y_prob)
    check_both_classes(y)
    z = logit(p)
    intercept = float(_fit_logistic(y, None, offset=z)[0])
    if np.ptp(z) == 0.0:
        # One distinct probability: the slope is not identifiable.
        return LogisticCalibration(slope=math.nan, intercept=intercept, separated=False)
    if z[y == 0].max() <= z[y == 1].min():
        # (Quasi-)complete separation: the likelihood grows without bound in the slope.
        return LogisticCalibration(slope=math.inf, intercept=intercept, separated=True)
    slope = float(_fit_logistic(y, z, offset=None)[1])
    return LogisticCalibration(slope=slope, intercept=intercept, separated=False)


class Recalibrator:
    """A probability map fitted once on internal out-of-fold predictions, then frozen.

    method "platt": p' = σ(a + b·logit(p)) with (a, b) the logistic recalibration fit (Platt,
    1999, on the logit of the probability); "isotonic": a monotone step function (scikit-learn
    ``IsotonicRegression``, clipped outside the fitted range).
    """

    def __init__(self, method: str):
        self.method = check_choice(method, "recalibration method", RECALIBRATION_METHODS)
        self._coef: np.ndarray | None = None
        self._isotonic = None

    def fit(self, y_true, y_prob) -> Recalibrator:
        y, p = _checked(y_true, y_prob)
        check_both_classes(y)
        if self.method == "platt":
            z = logit(p)
            if np.ptp(z) == 0.0 or z[y == 0].max() <= z[y == 1].min():
                raise InputError("Platt recalibration cannot be fitted: the out-of-fold "
                                 "probabilities are all equal or separate the classes (no finite "
                                 "slope); use isotonic recalibration or none")
            self._coef = _fit_logistic(y, z, offset=None)
        else:
            from sklearn.isotonic import IsotonicRegression

            self._isotonic = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
            self._isotonic.fit(p, y.astype(float))
        return self

    def transform(self, y_prob) -> np.ndarray:
        if self._coef is None and self._isotonic is None:
            raise RuntimeError("Recalibrator.transform called before fit")
        p = check_probabilities(y_prob)
        if self.method == "platt":
            return expit(self._coef[0] + self._coef[1] * logit(p))
        return np.asarray(self._isotonic.predict(p), float)

"""Operating point: Youden-optimal threshold and sensitivity / specificity / PPV / NPV at it.

Rule everywhere: a case is called positive (radiation necrosis) when ``score >= threshold``.

Honesty rule of the study: the threshold is chosen on internal data (out-of-fold predictions)
and then FROZEN — the same number is applied to the internal test set and to the external cohort
(:func:`metrics_at_threshold`); nothing is re-optimised on the data it is evaluated on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from statsmodels.stats.proportion import proportion_confint

from ..errors import InputError
from .validation import (check_both_classes, check_conf_level, check_labels, check_same_length,
                         check_scores)


def wilson_interval(successes: int, total: int, conf_level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (Wilson, JASA 1927), via statsmodels.

    Returns (nan, nan) when ``total`` is 0 (e.g. PPV when no case is called positive): the
    proportion is undefined there, and the caller reports it as missing.
    """
    conf_level = check_conf_level(conf_level)
    if total == 0:
        return math.nan, math.nan
    lo, hi = proportion_confint(int(successes), int(total), alpha=1.0 - conf_level,
                                method="wilson")
    return float(lo), float(hi)


@dataclass(frozen=True)
class Proportion:
    """``successes / total`` with its Wilson CI; ``value`` is nan when ``total`` is 0."""

    value: float
    ci: tuple[float, float]
    successes: int
    total: int

    @classmethod
    def of(cls, successes: int, total: int, conf_level: float) -> Proportion:
        value = successes / total if total else math.nan
        return cls(value, wilson_interval(successes, total, conf_level), int(successes), int(total))


@dataclass(frozen=True)
class ThresholdMetrics:
    """Confusion counts and the four proportions at one threshold (positive = score >= t)."""

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    sensitivity: Proportion
    specificity: Proportion
    ppv: Proportion
    npv: Proportion
    conf_level: float

    def as_dict(self) -> dict:
        return asdict(self)


def metrics_at_threshold(y_true, y_score, threshold: float,
                         conf_level: float = 0.95) -> ThresholdMetrics:
    """Sensitivity, specificity, PPV, NPV (Wilson CIs) when calling ``score >= threshold`` positive.

    y_true: (N,) 0/1; y_score: (N,). ``threshold`` is used as given (a frozen threshold is not
    re-tuned here). One class only is allowed (e.g. sensitivity alone); the undefined
    proportions are then nan.
    """
    y = check_labels(y_true).astype(bool)
    s = check_scores(y_score)
    check_same_length(y_true=y, y_score=s)
    if not math.isfinite(float(threshold)):
        raise InputError(f"threshold must be a finite number, got {threshold}")
    called = s >= float(threshold)
    tp = int(np.sum(called & y))
    fp = int(np.sum(called & ~y))
    tn = int(np.sum(~called & ~y))
    fn = int(np.sum(~called & y))
    return ThresholdMetrics(
        threshold=float(threshold), tp=tp, fp=fp, tn=tn, fn=fn,
        sensitivity=Proportion.of(tp, tp + fn, conf_level),
        specificity=Proportion.of(tn, tn + fp, conf_level),
        ppv=Proportion.of(tp, tp + fp, conf_level),
        npv=Proportion.of(tn, tn + fn, conf_level),
        conf_level=check_conf_level(conf_level))


@dataclass(frozen=True)
class YoudenThreshold:
    """The threshold maximising Youden's J = sensitivity + specificity − 1 (Youden, 1950)."""

    threshold: float
    youden_index: float
    sensitivity: float
    specificity: float


def youden_threshold(y_true, y_score) -> YoudenThreshold:
    """Youden-optimal threshold, candidates at midpoints between consecutive distinct scores.

    y_true: (N,) 0/1; y_score: (N,). Midpoints (as pROC's thresholds) keep the cut away from the
    observed scores, so ``>=`` and ``>`` agree on the data it was chosen on. Ties in J are broken
    towards the highest threshold (highest specificity): calling progression "necrosis" delays
    treatment of a growing tumour, the costlier error. With a single distinct score the threshold
    is that score (everything called positive, J = 0).
    """
    y = check_labels(y_true)
    s = check_scores(y_score)
    check_same_length(y_true=y, y_score=s)
    m, n = check_both_classes(y)
    values, group = np.unique(s, return_inverse=True)
    if values.size == 1:
        return YoudenThreshold(float(values[0]), 0.0, 1.0, 0.0)
    pos_at = np.bincount(group, weights=y, minlength=values.size)
    neg_at = np.bincount(group, weights=1 - y, minlength=values.size)
    # Threshold between values[k] and values[k+1]: positive iff score > values[k].
    true_pos = m - np.cumsum(pos_at)[:-1]
    true_neg = np.cumsum(neg_at)[:-1]
    sensitivity = true_pos / m
    specificity = true_neg / n
    youden = sensitivity + specificity - 1.0
    # Compare J·m·n, an integer, so equal J values tie exactly despite rounding.
    scaled = true_pos * n + true_neg * m
    best = int(np.flatnonzero(scaled == scaled.max())[-1])
    threshold = (values[best] + values[best + 1]) / 2.0
    return YoudenThreshold(float(threshold), float(youden[best]), float(sensitivity[best]),
                           float(specificity[best]))


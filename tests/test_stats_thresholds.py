"""Operating points: Youden threshold, frozen-threshold metrics, Wilson intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import confusion_matrix, roc_curve

from rn_classifier.errors import InputError
from rn_classifier.stats import metrics_at_threshold, wilson_interval, youden_threshold


def wilson_by_formula(k, n, conf_level=0.95):
    """Wilson (1927): (p + z²/2n ± z·sqrt(p(1−p)/n + z²/4n²)) / (1 + z²/n)."""
    z = sps.norm.ppf(1 - (1 - conf_level) / 2)
    p = k / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


@pytest.mark.parametrize("k, n", [(8, 10), (0, 12), (12, 12), (37, 91)])
def test_wilson_interval_matches_formula(k, n):
    assert wilson_interval(k, n) == pytest.approx(wilson_by_formula(k, n), abs=1e-12)
    assert wilson_interval(k, n, 0.9) == pytest.approx(wilson_by_formula(k, n, 0.9), abs=1e-12)


def test_metrics_at_threshold_match_confusion_matrix():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 150)
    p = np.round(rng.random(150) * 0.6 + 0.4 * y, 2)
    t = 0.5
    m = metrics_at_threshold(y, p, t)
    tn, fp, fn, tp = confusion_matrix(y, (p >= t).astype(int)).ravel()
    assert (m.tp, m.fp, m.tn, m.fn) == (tp, fp, tn, fn)
    assert m.sensitivity.value == pytest.approx(tp / (tp + fn))
    assert m.specificity.value == pytest.approx(tn / (tn + fp))
    assert m.ppv.value == pytest.approx(tp / (tp + fp))
    assert m.npv.value == pytest.approx(tn / (tn + fn))
    assert m.sensitivity.ci == pytest.approx(wilson_by_formula(tp, tp + fn))
    # A score equal to the threshold is called positive.
    assert metrics_at_threshold([0, 1], [0.5, 0.5], 0.5).tp == 1


def test_undefined_ppv_is_nan_with_its_denominator():
    m = metrics_at_threshold([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], threshold=0.9)
    assert m.tp + m.fp == 0
    assert math.isnan(m.ppv.value) and m.ppv.total == 0
    assert m.sensitivity.value == 0.0 and m.specificity.value == 1.0


@pytest.mark.parametrize("seed", range(4))
def test_youden_index_equals_max_of_sklearn_roc(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 120)
    s = np.round(rng.normal(size=120) + y, 1)
    fpr, tpr, _ = roc_curve(y, s)
    best = youden_threshold(y, s)
    assert best.youden_index == pytest.approx(np.max(tpr - fpr))
    again = metrics_at_threshold(y, s, best.threshold)    # the threshold really achieves it
    assert again.sensitivity.value + again.specificity.value - 1 == pytest.approx(best.youden_index)
    assert best.threshold not in set(s)                  # a midpoint, not an observed score


def test_youden_tie_goes_to_the_highest_threshold():
    # Cuts after 0.2 and after 0.6 both give J = 0.5; the higher one (more specific) wins.
    y = [0, 0, 1, 0, 1, 1]
    s = [0.1, 0.2, 0.3, 0.6, 0.7, 0.8]
    best = youden_threshold(y, s)
    assert best.threshold == pytest.approx(0.65)
    assert best.specificity == 1.0


def test_frozen_threshold_is_applied_unchanged():
    rng = np.random.default_rng(1)
    y_int, y_ext = rng.integers(0, 2, 100), rng.integers(0, 2, 40)
    s_int, s_ext = rng.random(100) + 0.3 * y_int, rng.random(40) + 0.3 * y_ext
    frozen = youden_threshold(y_int, s_int).threshold
    external = metrics_at_threshold(y_ext, s_ext, frozen)
    assert external.threshold == frozen
    assert external.tp == int(np.sum((s_ext >= frozen) & (y_ext == 1)))


def test_threshold_bad_input():
    with pytest.raises(InputError, match="finite"):
        metrics_at_threshold([0, 1], [0.1, 0.2], math.nan)
    with pytest.raises(InputError, match="0 positive"):
        youden_threshold([0, 0, 0], [0.1, 0.2, 0.3])


def test_a_threshold_inside_the_fold_spread_is_borderline():
    from rn_classifier.stats.borderline import threshold_in_spread

    folds = np.array([0.40, 0.55, 0.70, 0.50, 0.525])        # mean 0.535, SD ~0.097
    assert threshold_in_spread(folds, 0.538)                  # the case: called flatly before
    assert not threshold_in_spread(folds, 0.70)
    assert not threshold_in_spread([0.9, 0.92, 0.95], 0.538)  # folds agree far from the threshold
    with pytest.raises(InputError, match="fold_probs"):
        threshold_in_spread([0.5, np.nan], 0.5)

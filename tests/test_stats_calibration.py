"""Calibration metrics, recalibration maps, decision curves, Holm correction."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import expit
from sklearn.calibration import calibration_curve
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss

from rn_classifier.errors import InputError
from rn_classifier.stats import (Recalibrator, brier_score, calibration_slope_intercept,
                                 decision_curve, expected_calibration_error, holm,
                                 reliability_curve)
from rn_classifier.stats.calibration import logit


def calibrated_sample(rng, n, temperature=1.0, shift=0.0):
    """Labels drawn from true probabilities; predictions = σ((logit(p) + shift) / temperature)."""
    true_logit = rng.normal(size=n) * 1.5
    y = (rng.random(n) < expit(true_logit)).astype(int)
    pred = expit((true_logit + shift) / temperature)
    return y, pred


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_reliability_points_equal_sklearn(strategy):
    rng = np.random.default_rng(0)
    y, p = calibrated_sample(rng, 500)
    curve = reliability_curve(y, p, n_bins=8, strategy=strategy)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=8, strategy=strategy)
    np.testing.assert_allclose(curve.observed_fraction, prob_true, rtol=1e-12)
    np.testing.assert_allclose(curve.mean_predicted, prob_pred, rtol=1e-12)
    assert curve.count.sum() == 500
    ece = expected_calibration_error(y, p, n_bins=8, strategy=strategy)
    assert ece == pytest.approx(np.sum(curve.count / 500 * np.abs(prob_true - prob_pred)))


def test_ece_small_example_by_hand():
    # Two bins of width 0.5: [0.2, 0.4] observe 1 of 2; [0.6, 0.8, 0.9] observe 3 of 3.
    y = [0, 1, 1, 1, 1]
    p = [0.2, 0.4, 0.6, 0.8, 0.9]
    expected = 2 / 5 * abs(0.5 - 0.3) + 3 / 5 * abs(1.0 - (0.6 + 0.8 + 0.9) / 3)
    assert expected_calibration_error(y, p, n_bins=2) == pytest.approx(expected)


def test_brier_equals_sklearn():
    rng = np.random.default_rng(1)
    y, p = calibrated_sample(rng, 300)
    assert brier_score(y, p) == pytest.approx(brier_score_loss(y, p))


def test_slope_equals_unpenalised_logistic_regression():
    rng = np.random.default_rng(2)
    y, p = calibrated_sample(rng, 400, temperature=0.6)
    fit = calibration_slope_intercept(y, p)
    reference = LogisticRegression(C=1e12, tol=1e-10, max_iter=10000).fit(logit(p)[:, None], y)
    assert fit.slope == pytest.approx(reference.coef_[0, 0], rel=1e-4)


def test_calibrated_vs_overconfident_vs_shifted():
    rng = np.random.default_rng(3)
    good = calibration_slope_intercept(*calibrated_sample(rng, 20000))
    assert good.slope == pytest.approx(1.0, abs=0.06)
    assert good.intercept == pytest.approx(0.0, abs=0.06)
    overconfident = calibration_slope_intercept(*calibrated_sample(rng, 20000, temperature=0.5))
    assert overconfident.slope == pytest.approx(0.5, abs=0.05)
    too_high = calibration_slope_intercept(*calibrated_sample(rng, 20000, shift=1.0))
    assert too_high.intercept < -0.7                 # predictions too high -> negative intercept


def test_separation_gives_infinite_slope_not_nan():
    fit = calibration_slope_intercept([0, 0, 1, 1], [0.1, 0.3, 0.7, 0.9])
    assert fit.separated and fit.slope == math.inf
    assert math.isfinite(fit.intercept)


def test_recalibrators_fit_on_one_set_apply_to_another():
    rng = np.random.default_rng(4)
    y_oof, p_oof = calibrated_sample(rng, 2000, temperature=0.5)
    y_ext, p_ext = calibrated_sample(rng, 2000, temperature=0.5)
    for method in ("platt", "isotonic"):
        recal = Recalibrator(method).fit(y_oof, p_oof)
        after = recal.transform(p_ext)
        assert np.all((after >= 0) & (after <= 1))
        assert (expected_calibration_error(y_ext, after)
                < 0.5 * expected_calibration_error(y_ext, p_ext))
    platt = Recalibrator("platt").fit(y_oof, p_oof)
    assert calibration_slope_intercept(y_ext, platt.transform(p_ext)).slope == pytest.approx(
        1.0, abs=0.15)
    with pytest.raises(InputError, match="'platt', 'isotonic'"):
        Recalibrator("beta")


def test_calibration_bad_input():
    with pytest.raises(InputError, match=r"probabilities in \[0, 1\]; rows 1"):
        brier_score([0, 1], [0.2, 1.3])
    with pytest.raises(InputError, match="'uniform', 'quantile'"):
        reliability_curve([0, 1], [0.2, 0.3], strategy="width")
    with pytest.raises(InputError, match="0 negative"):
        calibration_slope_intercept([1, 1], [0.2, 0.3])


def test_decision_curve_by_hand():
    y = np.array([1, 1, 0, 0, 0])
    p = np.array([0.9, 0.4, 0.6, 0.2, 0.1])
    curve = decision_curve(y, p, thresholds=[0.3, 0.5])
    # pt = 0.3: treat 0.9, 0.4, 0.6 -> TP 2, FP 1: 2/5 - 1/5 * 3/7
    # pt = 0.5: treat 0.9, 0.6 -> TP 1, FP 1: 1/5 - 1/5 * 1
    np.testing.assert_allclose(curve.net_benefit, [2 / 5 - 1 / 5 * 3 / 7, 0.0])
    np.testing.assert_allclose(curve.treat_all, [0.4 - 0.6 * 3 / 7, 0.4 - 0.6])
    np.testing.assert_array_equal(curve.treat_none, [0.0, 0.0])
    # Treat-all is the net benefit of a model that calls everyone positive.
    everyone = decision_curve(y, np.ones(5), thresholds=[0.3, 0.5])
    np.testing.assert_allclose(everyone.net_benefit, curve.treat_all)
    with pytest.raises(InputError, match="strictly between 0 and 1"):
        decision_curve(y, p, thresholds=[0.0, 0.5])


def test_holm_by_hand():
    # Sorted p: 0.01, 0.02, 0.04 with m = 3 -> 0.03, 0.04 (= max(0.03, 2*0.02)), 0.04.
    np.testing.assert_allclose(holm([0.04, 0.01, 0.02]), [0.04, 0.03, 0.04])
    np.testing.assert_allclose(holm([0.3, 0.6]), [0.6, 0.6])
    assert holm([]).size == 0
    with pytest.raises(InputError, match="entries"):
        holm([0.1, math.nan])

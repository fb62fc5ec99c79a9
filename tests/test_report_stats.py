"""The two statistics the report adds: referral curves and bootstrap ROC bands."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit
from sklearn.metrics import roc_auc_score, roc_curve

from rn_classifier.errors import InputError
from rn_classifier.stats.referral import referral_curve
from rn_classifier.stats.roc_band import roc_confidence_band


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    score = y + rng.normal(0, 1, 80)
    return y, expit(score), np.repeat(np.arange(40), 2)


def test_referral_refers_the_most_uncertain_cases_first(data):
    y, p, _ = data
    # uncertainty high exactly where the model is wrong-ish: referring them must help
    uncertainty = -np.abs(p - 0.5) + 0.5 * ((p > 0.5) != y)
    curve = referral_curve(y, p, uncertainty, fractions=(0.0, 0.25, 0.5))
    assert curve["auc"][0] == pytest.approx(roc_auc_score(y, p))
    assert curve["n_kept"] == [80, 60, 40]
    keep = np.argsort(-uncertainty, kind="stable")[20:]
    assert curve["auc"][1] == pytest.approx(roc_auc_score(y[keep], p[keep]))
    assert curve["auc"][2] > curve["auc"][0]


def test_referral_refuses_missing_uncertainty(data):
    y, p, _ = data
    u = np.zeros_like(p)
    u[3] = np.nan
    with pytest.raises(InputError, match="uncertainty must be finite"):
        referral_curve(y, p, u)


def test_roc_band_holds_the_observed_curve(data):
    y, p, groups = data
    band = roc_confidence_band(y, p, groups, n_boot=300, seed=1)
    fpr, tpr, _ = roc_curve(y, p)
    grid = np.asarray(band["fpr"])
    expected = [tpr[fpr <= g + 1e-12].max() for g in grid]
    np.testing.assert_allclose(band["tpr"], expected)
    lower, upper = np.asarray(band["tpr_lower"]), np.asarray(band["tpr_upper"])
    assert np.all(lower <= upper) and band["clustered"]
    inside = (np.asarray(expected) >= lower - 1e-9) & (np.asarray(expected) <= upper + 1e-9)
    assert inside.mean() > 0.9
    assert np.all(upper[1:-1] - lower[1:-1] < 0.6)        # informative, not [0, 1] everywhere

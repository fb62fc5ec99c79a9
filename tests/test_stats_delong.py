"""DeLong AUC statistics against scikit-learn and a brute-force O(n²) DeLong written here."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from rn_classifier.errors import InputError
from rn_classifier.stats import (auc_delong, delong_covariance, delong_paired, delong_unpaired)
from rn_classifier.stats.delong import delong_placements


def brute_force_delong(y, scores):
    """DeLong et al. 1988 by its definition: ψ over all (case, control) pairs. O(K·m·n)."""
    y = np.asarray(y).astype(bool)
    scores = np.atleast_2d(scores)
    cases, controls = scores[:, y], scores[:, ~y]
    m, n = cases.shape[1], controls.shape[1]
    psi = ((cases[:, :, None] > controls[:, None, :])
           + 0.5 * (cases[:, :, None] == controls[:, None, :]))     # (K, m, n)
    auc = psi.mean(axis=(1, 2))
    v10 = psi.mean(axis=2)          # (K, m)
    v01 = psi.mean(axis=1)          # (K, n)
    s10 = np.atleast_2d(np.cov(v10))
    s01 = np.atleast_2d(np.cov(v01))
    return auc, s10 / m + s01 / n


def tie_heavy(seed, n=250, k=4, levels=5):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(int)
    shared = rng.normal(size=n)
    scores = np.stack([np.round(np.clip(y * rng.uniform(0, 2) + shared * rng.uniform(0, 1)
                                         + rng.normal(size=n), -2, 2) * levels / 4)
                       for _ in range(k)])
    return y, scores


@pytest.mark.parametrize("seed", range(5))
def test_auc_equals_sklearn_on_ties(seed):
    y, scores = tie_heavy(seed)
    assert len(np.unique(scores[0])) <= 6          # really tie-heavy
    cov = delong_covariance(y, scores)
    np.testing.assert_allclose(cov.auc, [roc_auc_score(y, s) for s in scores], rtol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_covariance_and_z_equal_brute_force(seed):
    y, scores = tie_heavy(seed)
    auc, cov = brute_force_delong(y, scores)
    fast = delong_covariance(y, scores)
    np.testing.assert_allclose(fast.auc, auc, rtol=1e-12)
    np.testing.assert_allclose(fast.covariance, cov, rtol=1e-10, atol=1e-15)
    test = delong_paired(y, scores[0], scores[1])
    z = (auc[0] - auc[1]) / math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    np.testing.assert_allclose(test.z, z, rtol=1e-9)
    np.testing.assert_allclose(test.p_value, 2 * sps.norm.sf(abs(z)), rtol=1e-9)
    np.testing.assert_allclose(test.covariance, cov[0, 1], rtol=1e-10)


@pytest.mark.parametrize("ties", [True, False])
def test_placements_equal_their_definition(ties):
    """V10_i = P(control < case i) + ½ P(tie), V01_j likewise, case by case in input order,
    on tied scores and on continuous scores (the two code paths)."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    scores = rng.normal(size=(3, 300)) + y
    if ties:
        scores = np.round(scores)
    else:
        assert len(np.unique(scores)) == scores.size
    got = delong_placements(y, scores)
    cases, controls = scores[:, y == 1], scores[:, y == 0]
    psi = ((cases[:, :, None] > controls[:, None, :])
           + 0.5 * (cases[:, :, None] == controls[:, None, :]))
    np.testing.assert_allclose(got.case_placements, psi.mean(axis=2), rtol=1e-12)
    np.testing.assert_allclose(got.control_placements, psi.mean(axis=1), rtol=1e-12)


def test_auc_ci_is_normal_and_clipped():
    y, scores = tie_heavy(7)
    res = auc_delong(y, scores[0], conf_level=0.9)
    half = sps.norm.ppf(0.95) * math.sqrt(res.var)
    assert res.ci == pytest.approx((res.auc - half, res.auc + half), rel=1e-12)
    # 3 cases vs 3 controls, AUC 8/9, var 2/81: the upper normal bound 1.197 is clipped to 1.
    small = auc_delong([0, 0, 0, 1, 1, 1], [1, 2, 4, 3, 5, 6])
    assert small.auc == pytest.approx(8 / 9)
    assert small.var == pytest.approx(2 / 81)
    assert small.ci[1] == 1.0
    assert small.ci[0] == pytest.approx(8 / 9 - sps.norm.ppf(0.975) * math.sqrt(2 / 81))


def test_direction_is_not_flipped():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.9, 0.8, 0.4, 0.5, 0.2, 0.1])    # learned the wrong way round
    res = auc_delong(y, s)
    assert res.auc == pytest.approx(roc_auc_score(y, s))
    assert res.auc < 0.5


def test_identical_scores_give_z0_p1():
    y, scores = tie_heavy(1)
    for alternative in ("two-sided", "greater", "less"):
        test = delong_paired(y, scores[0], scores[0].copy(), alternative=alternative)
        assert test.z == 0.0
        assert test.difference == 0.0
        assert test.ci == (0.0, 0.0)
    assert delong_paired(y, scores[0], scores[0]).p_value == 1.0
    assert delong_paired(y, scores[0], scores[0], alternative="greater").p_value == 0.5


def test_one_sided_p_values_are_consistent():
    y, scores = tie_heavy(2)
    two = delong_paired(y, scores[0], scores[1])
    greater = delong_paired(y, scores[0], scores[1], alternative="greater")
    less = delong_paired(y, scores[0], scores[1], alternative="less")
    assert greater.p_value + less.p_value == pytest.approx(1.0)
    assert min(greater.p_value, less.p_value) == pytest.approx(two.p_value / 2)
    # "greater" means AUC_a > AUC_b: small p when a really is better.
    assert (greater.p_value < 0.5) == (two.difference > 0)
    assert 0.0 <= two.p_value <= 1.0       # a probability, never a log10 p


def test_unpaired_uses_student_t_with_welch_df():
    y1, s1 = tie_heavy(4, n=120, k=1)
    y2, s2 = tie_heavy(5, n=60, k=1)
    res = delong_unpaired(y1, s1[0], y2, s2[0])
    a, b = auc_delong(y1, s1[0]), auc_delong(y2, s2[0])
    d = (a.auc - b.auc) / math.sqrt(a.var + b.var)
    df = (a.var + b.var) ** 2 / (a.var ** 2 / 119 + b.var ** 2 / 59)
    assert res.statistic == pytest.approx(d, rel=1e-12)
    assert res.df == pytest.approx(df, rel=1e-12)
    assert res.p_value == pytest.approx(2 * sps.t.sf(abs(d), df), rel=1e-12)
    assert res.p_value != pytest.approx(2 * sps.norm.sf(abs(d)), rel=1e-6)


def test_many_cases_fast_path_matches_sklearn():
    rng = np.random.default_rng(9)
    y = rng.integers(0, 2, 20000)
    scores = rng.normal(size=(3, 20000)) + y
    cov = delong_covariance(y, scores)
    np.testing.assert_allclose(cov.auc, [roc_auc_score(y, s) for s in scores], rtol=1e-12)
    assert np.all(np.linalg.eigvalsh(cov.covariance) > 0)


@pytest.mark.parametrize("y, s, message", [
    ([1, 1, 1, 1], [0.1, 0.2, 0.3, 0.4], "0 negative"),
    ([0, 1, 0, 1, 2], [0.1, 0.2, 0.3, 0.4, 0.5], "rows 4 hold 2"),
    ([0, 1, 0, 1], [0.1, np.nan, 0.3, np.inf], "rows 1, 3"),
    ([0, 1, 0, 1], [0.1, 0.2, 0.3], "y_true has 4, y_scores has 3"),
    ([0, 1, 1, 1, 1], [0.1, 0.2, 0.3, 0.4, 0.5], "at least 2 positive (1) and 2 negative"),
])
def test_bad_input_is_a_clear_error(y, s, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        auc_delong(y, s)


def test_bad_alternative_lists_choices():
    y, scores = tie_heavy(0)
    with pytest.raises(InputError, match="'two-sided', 'greater', 'less'"):
        delong_paired(y, scores[0], scores[1], alternative="two.sided")
    with pytest.raises(InputError, match="score_a has 250, score_b has 249"):
        delong_paired(y, scores[0], scores[1][:-1])

"""AUC, its DeLong variance, and DeLong's tests, with the numbers of R's pROC.

Definitions (DeLong, DeLong & Clarke-Pearson, Biometrics 1988; as implemented in pROC,
Robin et al., BMC Bioinformatics 2011):

* AUC = Mann–Whitney statistic: the fraction of (case, control) pairs in which the case scores
  higher, ties counting ½. "Case" = positive = label 1 (radiation necrosis), m of them;
  "control" = label 0 (progression), n of them.
* Placements: for case i, ``V10_i`` = fraction of controls scoring below it (ties ½); for control
  j, ``V01_j`` = fraction of cases scoring above it (ties ½). mean(V10) = mean(V01) = AUC.
* ``var(AUC) = S10/m + S01/n`` with S10, S01 the sample variances (ddof 1) of the placements;
  for K models on the same cases, the same formula with sample covariances gives the K×K
  covariance matrix of the AUCs.
* CI of one AUC: normal quantiles around the AUC, clipped to [0, 1] (pROC ``ci.auc``).
* Paired test of two AUCs on the same cases: ``z = (AUC_a - AUC_b) / sqrt(L S Lᵀ)``,
  ``L = (1, -1)``, normal p-value; CI of the difference = ``d ± z_{1-α/2} · sd`` (not clipped,
  as pROC). ``alternative="greater"`` means "AUC_a > AUC_b" (p = Φ(-z)).
* Unpaired test (two curves on different cases, e.g. one model on the internal test set and on
  the external cohort): ``D = (AUC_a - AUC_b) / sqrt(V_a + V_b)`` with a Welch-type
  ``df = (V_a + V_b)² / (V_a²/(N_a - 1) + V_b²/(N_b - 1))`` (N = all cases of that curve) and a
  Student-t p-value, exactly as pROC's ``roc.test(..., paired=FALSE)``.

Placements come from midranks, the O(N log N) algorithm of Sun & Xu ("Fast implementation of
DeLong's algorithm for comparing the areas under correlated receiver operating characteristic
curves", IEEE Signal Processing Letters 21(11), 2014): with ``T_z`` the midranks of all scores,
``T_x`` those among cases only and ``T_y`` among controls only,
``V10 = (T_z[cases] - T_x) / n`` and ``V01 = 1 - (T_z[controls] - T_y) / m``. The midrank
differences are counts (controls below a case plus half those tied with it), so they are read
off cumulative counts along one sort per model; all models of a cohort share one covariance
matrix.

Direction is fixed: a higher score means "more likely label 1". Nothing is flipped when an AUC
falls below 0.5 (pROC's ``direction="auto"`` would flip it, which inflates AUCs on small sets
and hides a model that learned the wrong way round); an AUC of 0.3 is reported as 0.3.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as _sps

from ..errors import InputError
from .validation import (check_both_classes, check_choice, check_conf_level, check_labels,
                         check_same_length, check_scores)

ALTERNATIVES = ("two-sided", "greater", "less")


def _placements_of_one_model(score: np.ndarray, is_case: np.ndarray, slot: np.ndarray, m: int,
                             n: int) -> np.ndarray:
    """Placements of one model: (N,) = V10 of the m cases, then V01 of the n controls.

    score: (N,) finite; is_case: (N,) bool; slot: (N,) where each input case goes in the output
    (cases first, controls after, each in input order). One argsort; the midrank differences of
    Sun & Xu are read off cumulative counts on the sorted order:
    ``T_z − T_x = controls below + ½ controls tied`` (a case) and
    ``T_z − T_y = cases below + ½ cases tied`` (a control).
    """
    size = score.size
    order = np.argsort(score)       # the order among ties is irrelevant: counts use values only
    sorted_score = score[order]
    case_sorted = is_case[order]
    control_sorted = ~case_sorted
    controls_upto = np.cumsum(control_sorted)              # controls at sorted positions <= i
    tied_with_previous = sorted_score[1:] == sorted_score[:-1]
    if tied_with_previous.any():
        # Every member of a tie group takes the counts at the group's first and last position.
        starts_group = np.r_[True, ~tied_with_previous]
        first = np.flatnonzero(starts_group)
        last = np.r_[first[1:] - 1, size - 1]
        group = np.cumsum(starts_group) - 1
        controls_below_group = controls_upto[first] - control_sorted[first]
        controls_below = controls_below_group[group]
        controls_through = controls_upto[last][group]      # below or tied
        cases_below = (first - controls_below_group)[group]
        cases_through = (last + 1 - controls_upto[last])[group]
        placement_sorted = np.where(case_sorted, (controls_below + controls_through) / (2.0 * n),
                                    1.0 - (cases_below + cases_through) / (2.0 * m))
    else:
        # No ties: nothing is tied with a case but itself, so "below" = "through" for the other
        # class: V10 = controls_upto / n, V01 = 1 - cases_upto / m.
        cases_upto = np.arange(1, size + 1) - controls_upto
        placement_sorted = np.where(case_sorted, controls_upto * (1.0 / n),
                                    1.0 - cases_upto * (1.0 / m))
    placement = np.empty(size)
    placement[slot[order]] = placement_sorted
    return placement


@dataclass(frozen=True)
class DeLongPlacements:
    """Per-case placements of K models on one set of cases.

    auc: (K,); case_placements (V10): (K, m), cases in their input order;
    control_placements (V01): (K, n), controls in their input order.
    """

    auc: np.ndarray
    case_placements: np.ndarray
    control_placements: np.ndarray


# Below this many cases per model, threads cost more than they save.
_THREADS_FROM_N = 100_000


def delong_placements(y: np.ndarray, scores: np.ndarray) -> DeLongPlacements:
    """Sun & Xu placements for validated input: y (N,) 0/1, scores (K, N) finite.

    Models are independent, so large inputs rank them on parallel threads (numpy releases the
    GIL while sorting and in its element-wise loops).
    """
    is_case = y.astype(bool)
    m = int(is_case.sum())
    n = y.size - m
    slot = np.empty(y.size, dtype=np.intp)
    slot[is_case] = np.arange(m)
    slot[~is_case] = np.arange(m, m + n)

    def one(score: np.ndarray) -> np.ndarray:
        return _placements_of_one_model(score, is_case, slot, m, n)

    # One thread per model (up to 2 per core): with 3 models on 2 cores the last model does not
    # wait for a whole round.
    cores = os.cpu_count() or 1
    workers = min(len(scores), 2 * cores)
    if cores > 1 and workers > 1 and y.size >= _THREADS_FROM_N:
        with ThreadPoolExecutor(workers) as pool:
            placement = np.vstack(list(pool.map(one, scores)))
    else:
        placement = np.vstack([one(score) for score in scores])
    v10 = placement[:, :m]
    v01 = placement[:, m:]
    return DeLongPlacements(auc=v10.mean(axis=1), case_placements=v10, control_placements=v01)


@dataclass(frozen=True)
class DeLongCovariance:
    """AUCs of K models on the same cases and their DeLong covariance matrix.

    auc: (K,); covariance: (K, K), ``S10/m + S01/n``; n_positive = m, n_negative = n.
    """

    auc: np.ndarray
    covariance: np.ndarray
    n_positive: int
    n_negative: int


def _sample_covariance(rows: np.ndarray) -> np.ndarray:
    """(K, K) sample covariance (ddof 1) of K variables observed in the columns of rows: (K, L)."""
    centred = rows - rows.mean(axis=1, keepdims=True)
    return centred @ centred.T / (rows.shape[1] - 1)


def delong_covariance(y_true, y_scores) -> DeLongCovariance:
    """AUCs and DeLong covariance of K models scored on the same N cases (Sun & Xu, 2014).

    y_true: (N,) 0/1; y_scores: (K, N) or (N,) — one row per model, higher = more likely 1.
    Needs at least two cases of each class (the sample variances use ddof 1).
    """
    y = check_labels(y_true)
    scores = np.atleast_2d(check_scores(y_scores))
    check_same_length(y_true=y, y_scores=scores)
    m, n = check_both_classes(y, minimum=2)
    placements = delong_placements(y, scores)
    s10 = _sample_covariance(placements.case_placements)
    s01 = _sample_covariance(placements.control_placements)
    return DeLongCovariance(auc=placements.auc, covariance=s10 / m + s01 / n,
                            n_positive=m, n_negative=n)


def normal_ci(centre: float, sd: float, conf_level: float) -> tuple[float, float]:
    half = _sps.norm.ppf(1.0 - (1.0 - conf_level) / 2.0) * sd
    return float(centre - half), float(centre + half)


def _p_value(statistic: float, alternative: str, df: float | None = None) -> float:
    """Two-sided / one-sided p of a z (df None) or Student-t statistic, as pROC's roc.test."""
    dist = _sps.norm if df is None else _sps.t(df)
    if alternative == "two-sided":
        return float(min(1.0, 2.0 * dist.cdf(-abs(statistic))))
    if alternative == "greater":
        return float(dist.cdf(-statistic))
    return float(dist.cdf(statistic))


@dataclass(frozen=True)
class AUCResult:
    """One AUC with its DeLong variance and normal CI (clipped to [0, 1])."""

    auc: float
    var: float
    ci: tuple[float, float]
    conf_level: float
    n_positive: int
    n_negative: int

    def as_dict(self) -> dict:
        return asdict(self)


def auc_delong(y_true, y_score, conf_level: float = 0.95) -> AUCResult:
    """AUC (ties ½), DeLong variance and CI; pROC's ``auc``, ``var`` and ``ci.auc``.

    y_true: (N,) 0/1 labels (1 = radiation necrosis); y_score: (N,) scores, higher = more
    likely 1. No automatic direction flip (see module docstring).
    """
    conf_level = check_conf_level(conf_level)
    score = check_scores(y_score)
    if score.ndim != 1:
        raise InputError(f"y_score must be one vector of scores, got shape {score.shape}")
    cov = delong_covariance(y_true, score[None, :])
    auc = float(cov.auc[0])
    var = float(cov.covariance[0, 0])
    lo, hi = normal_ci(auc, math.sqrt(max(var, 0.0)), conf_level)
    return AUCResult(auc=auc, var=var, ci=(max(lo, 0.0), min(hi, 1.0)), conf_level=conf_level,
                     n_positive=cov.n_positive, n_negative=cov.n_negative)


@dataclass(frozen=True)
class PairedDeLongResult:
    """DeLong's test of two correlated AUCs (same cases); ``difference = auc_a - auc_b``."""

    auc_a: float
    auc_b: float
    var_a: float
    var_b: float
    covariance: float
    difference: float
    z: float
    p_value: float
    ci: tuple[float, float]
    alternative: str
    conf_level: float

    def as_dict(self) -> dict:
        return asdict(self)


def paired_test_from_covariance(cov: DeLongCovariance, a: int, b: int,
                                alternative: str = "two-sided",
                                conf_level: float = 0.95) -> PairedDeLongResult:
    """DeLong's paired test of model ``a`` against model ``b`` from a shared covariance matrix.

    Equal AUCs with zero variance of the difference (identical scores) give z = 0, p = 1
    (pROC's convention) instead of 0/0.
    """
    check_choice(alternative, "alternative", ALTERNATIVES)
    conf_level = check_conf_level(conf_level)
    s = cov.covariance
    difference = float(cov.auc[a] - cov.auc[b])
    # L S Lᵀ, L = (1, -1); rounding can push it a hair below 0 for (near-)identical scores.
    var_difference = max(float(s[a, a] + s[b, b] - 2.0 * s[a, b]), 0.0)
    sd = math.sqrt(var_difference)
    if difference == 0.0:
        z = 0.0
    elif sd == 0.0:
        z = math.copysign(math.inf, difference)
    else:
        z = difference / sd
    return PairedDeLongResult(
        auc_a=float(cov.auc[a]), auc_b=float(cov.auc[b]), var_a=float(s[a, a]),
        var_b=float(s[b, b]), covariance=float(s[a, b]), difference=difference, z=z,
        p_value=_p_value(z, alternative), ci=normal_ci(difference, sd, conf_level),
        alternative=alternative, conf_level=conf_level)


def delong_paired(y_true, score_a, score_b, alternative: str = "two-sided",
                  conf_level: float = 0.95) -> PairedDeLongResult:
    """DeLong's test for two correlated AUCs: pROC ``roc.test(roc_a, roc_b, method="delong")``.

    y_true: (N,) 0/1; score_a, score_b: (N,) scores of two models on the same N cases.
    alternative: "two-sided", "greater" (AUC_a > AUC_b) or "less".
    """
    check_choice(alternative, "alternative", ALTERNATIVES)
    a = check_scores(score_a, "score_a")
    b = check_scores(score_b, "score_b")
    check_same_length(y_true=np.asarray(y_true), score_a=a, score_b=b)
    if a.ndim != 1 or b.ndim != 1:
        raise InputError("score_a and score_b must each be one vector of scores")
    cov = delong_covariance(y_true, np.vstack([a, b]))
    return paired_test_from_covariance(cov, 0, 1, alternative, conf_level)


@dataclass(frozen=True)
class UnpairedDeLongResult:
    """DeLong's test of two AUCs on different cases: statistic D, Welch-type df, t p-value."""

    auc_a: float
    auc_b: float
    var_a: float
    var_b: float
    difference: float
    statistic: float
    df: float
    p_value: float
    alternative: str

    def as_dict(self) -> dict:
        return asdict(self)


def delong_unpaired(y_a, score_a, y_b, score_b,
                    alternative: str = "two-sided") -> UnpairedDeLongResult:
    """pROC ``roc.test(roc_a, roc_b, method="delong", paired=FALSE)``.

    y_a, score_a: (N_a,) labels and scores of curve a; y_b, score_b: (N_b,) of curve b
    (e.g. one model on the internal test set and on the external cohort).
    """
    check_choice(alternative, "alternative", ALTERNATIVES)
    check_same_length(y_a=np.asarray(y_a), score_a=np.asarray(score_a))
    check_same_length(y_b=np.asarray(y_b), score_b=np.asarray(score_b))
    ra = auc_delong(y_a, score_a)
    rb = auc_delong(y_b, score_b)
    total_var = ra.var + rb.var
    difference = ra.auc - rb.auc
    if difference == 0.0:
        statistic = 0.0
    elif total_var <= 0.0:
        statistic = math.copysign(math.inf, difference)
    else:
        statistic = difference / math.sqrt(total_var)
    n_a = ra.n_positive + ra.n_negative
    n_b = rb.n_positive + rb.n_negative
    denominator = ra.var ** 2 / (n_a - 1) + rb.var ** 2 / (n_b - 1)
    df = total_var ** 2 / denominator if denominator > 0 else math.inf
    return UnpairedDeLongResult(auc_a=ra.auc, auc_b=rb.auc, var_a=ra.var, var_b=rb.var,
                                difference=difference, statistic=statistic, df=df,
                                p_value=_p_value(statistic, alternative, df),
                                alternative=alternative)

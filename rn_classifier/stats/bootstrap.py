"""Stratified, patient-clustered bootstrap confidence intervals for AUCs and AUC differences.

Why clustered: one patient can contribute several lesions (cases), whose scores are correlated;
resampling lesions as if independent gives intervals that are too narrow. Here whole patients are
resampled (Field & Welsh, "Bootstrapping clustered data", JRSS-B 2007), and the patients are
stratified by the labels of their lesions — only 0, only 1, or both — and resampled within each
stratum, so every replicate keeps both classes and about the original prevalence. Without patient
ids every case is its own cluster and this is exactly pROC's stratified bootstrap (cases and
controls resampled separately, ``boot.stratified=TRUE``).

A replicate is stored as integer multiplicity weights per case, so the AUCs of all models (and
their differences) are computed on the same replicates, and the weighted Mann–Whitney AUC needs
one sort per model for all replicates together. CIs are percentile intervals (R's default
quantile type 7, as pROC).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .validation import (check_both_classes, check_conf_level, check_labels, check_same_length,
                         check_scores)

# Replicates are processed in blocks so (block, N) weight matrices stay near this many entries.
_BLOCK_ENTRIES = 4_000_000


def cluster_strata(y: np.ndarray, groups) -> tuple[np.ndarray, np.ndarray]:
    """Map cases to clusters and clusters to label strata.

    y: (N,) 0/1; groups: (N,) patient ids or None (each case its own cluster).
    Returns cluster_of_case: (N,) int in [0, C); stratum_of_cluster: (C,) int, 0 = only label 0,
    1 = only label 1, 2 = both labels.
    """
    if groups is None:
        cluster_of_case = np.arange(y.size)
    else:
        groups = np.asarray(groups)
        if groups.shape != y.shape:
            raise InputError(f"groups must give one patient id per case: shape {groups.shape}, "
                             f"labels {y.shape}")
        _, cluster_of_case = np.unique(groups.astype(str), return_inverse=True)
    n_clusters = int(cluster_of_case.max()) + 1
    positives = np.bincount(cluster_of_case, weights=y, minlength=n_clusters)
    sizes = np.bincount(cluster_of_case, minlength=n_clusters)
    stratum = np.where(positives == 0, 0, np.where(positives == sizes, 1, 2))
    return cluster_of_case, stratum


def bootstrap_weights(cluster_of_case: np.ndarray, stratum_of_cluster: np.ndarray, n_boot: int,
                      rng: np.random.Generator) -> np.ndarray:
    """Multiplicity of every case in each of ``n_boot`` stratified cluster-bootstrap replicates.

    Returns (n_boot, N) float weights: within each stratum of S clusters, S clusters are drawn
    with replacement (multinomial counts); a case inherits the count of its cluster.
    """
    cluster_counts = np.zeros((n_boot, stratum_of_cluster.size))
    for stratum in np.unique(stratum_of_cluster):
        members = np.flatnonzero(stratum_of_cluster == stratum)
        draws = rng.multinomial(members.size, np.full(members.size, 1.0 / members.size),
                                size=n_boot)
        cluster_counts[:, members] = draws
    return cluster_counts[:, cluster_of_case]


def weighted_auc(y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mann–Whitney AUC (ties ½) of K models under B case-weight vectors.

    y: (N,) 0/1; scores: (K, N); weights: (B, N) non-negative. Returns (B, K).
    AUC_b = Σ_{i case, j control} w_i w_j [s_i > s_j + ½ (s_i = s_j)] / (Σ_cases w · Σ_controls w).
    """
    is_case = y.astype(bool)
    out = np.empty((weights.shape[0], scores.shape[0]))
    pos_total = weights[:, is_case].sum(axis=1)
    neg_total = weights[:, ~is_case].sum(axis=1)
    for k, score in enumerate(scores):
        order = np.argsort(score)
        sorted_score = score[order]
        starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
        w_sorted = weights[:, order]
        case_sorted = is_case[order]
        pos = np.add.reduceat(w_sorted * case_sorted, starts, axis=1)    # (B, U) tie groups
        neg = np.add.reduceat(w_sorted * ~case_sorted, starts, axis=1)
        neg_below = np.cumsum(neg, axis=1) - neg
        out[:, k] = (pos * (neg_below + 0.5 * neg)).sum(axis=1) / (pos_total * neg_total)
    return out


def bootstrap_auc_replicates(y_true, y_scores, groups=None, n_boot: int = 2000,
                             seed: int = 0) -> np.ndarray:
    """AUCs of K models on ``n_boot`` shared stratified cluster-bootstrap replicates.

    y_true: (N,) 0/1; y_scores: (K, N) or (N,); groups: (N,) patient ids or None.
    Returns (n_boot, K). The same ``seed`` gives the same replicates.
    """
    y = check_labels(y_true)
    scores = np.atleast_2d(check_scores(y_scores))
    check_same_length(y_true=y, y_scores=scores)
    check_both_classes(y)
    if int(n_boot) < 1:
        raise InputError(f"n_boot must be a positive number of replicates, got {n_boot}")
    cluster_of_case, stratum = cluster_strata(y, groups)
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_ENTRIES // y.size)
    replicates = []
    for start in range(0, int(n_boot), block):
        size = min(block, int(n_boot) - start)
        weights = bootstrap_weights(cluster_of_case, stratum, size, rng)
        replicates.append(weighted_auc(y, scores, weights))
    return np.concatenate(replicates, axis=0)


def percentile_ci(replicates: np.ndarray, conf_level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (linear interpolation = R's type 7)."""
    conf_level = check_conf_level(conf_level)
    alpha = 1.0 - conf_level
    lo, hi = np.quantile(np.asarray(replicates), [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


@dataclass(frozen=True)
class BootstrapCI:
    """A statistic on the original data and its bootstrap percentile CI."""

    estimate: float
    ci: tuple[float, float]
    conf_level: float
    n_boot: int
    clustered: bool


def bootstrap_auc(y_true, y_score, groups=None, n_boot: int = 2000, conf_level: float = 0.95,
                  seed: int = 0) -> BootstrapCI:
    """Stratified (and, given ``groups`` = patient ids, patient-clustered) bootstrap CI of an AUC.

    y_true: (N,) 0/1; y_score: (N,); groups: (N,) or None.
    """
    score = check_scores(y_score)
    if score.ndim != 1:
        raise InputError(f"y_score must be one vector of scores, got shape {score.shape}")
    reps = bootstrap_auc_replicates(y_true, score[None, :], groups, n_boot, seed)
    estimate = weighted_auc(check_labels(y_true), score[None, :], np.ones((1, score.size)))[0, 0]
    return BootstrapCI(float(estimate), percentile_ci(reps[:, 0], conf_level), conf_level,
                       int(n_boot), groups is not None)


def bootstrap_auc_difference(y_true, score_a, score_b, groups=None, n_boot: int = 2000,
                             conf_level: float = 0.95, seed: int = 0) -> BootstrapCI:
    """Bootstrap CI of AUC_a − AUC_b, both AUCs computed on the same replicates (paired)."""
    a = check_scores(score_a, "score_a")
    b = check_scores(score_b, "score_b")
    check_same_length(y_true=np.asarray(y_true), score_a=a, score_b=b)
    scores = np.vstack([a, b])
    reps = bootstrap_auc_replicates(y_true, scores, groups, n_boot, seed)
    full = weighted_auc(check_labels(y_true), scores, np.ones((1, scores.shape[1])))[0]
    return BootstrapCI(float(full[0] - full[1]), percentile_ci(reps[:, 0] - reps[:, 1], conf_level),
                       conf_level, int(n_boot), groups is not None)

"""Checks on the arrays every statistic receives (scikit-learn's ``check_consistent_length`` style).

Each check fails once, with an :class:`~rn_classifier.errors.InputError` that names the argument,
the offending rows (first few) and what was expected, so a metric never returns NaN silently for
input it cannot handle (one class only, NaN scores, labels outside {0, 1}).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError, check_choice  # noqa: F401  (re-exported for the statistics)

_MAX_LISTED = 10


def _listed(indices: Sequence[int] | np.ndarray, names: Sequence[str] | None = None) -> str:
    """``"rows 3, 7, 9"`` (or case ids when ``names`` is given), capped at ``_MAX_LISTED``."""
    indices = [int(i) for i in indices]
    shown = [str(names[i]) if names is not None else str(i) for i in indices[:_MAX_LISTED]]
    more = f" … and {len(indices) - _MAX_LISTED} more" if len(indices) > _MAX_LISTED else ""
    return ", ".join(shown) + more


def check_labels(y_true, name: str = "y_true", case_ids: Sequence[str] | None = None) -> np.ndarray:
    """Return ``y_true`` as an int8 vector of 0/1; anything else is an :class:`InputError`.

    y_true: (N,) labels, 1 = radiation necrosis (positive class), 0 = progression.
    """
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise InputError(f"{name} must be a 1-D vector of 0/1 labels, got shape {y.shape}")
    if y.dtype == bool:
        return y.astype(np.int8)
    if np.issubdtype(y.dtype, np.integer) and np.all((y == 0) | (y == 1)):
        return y.astype(np.int8, copy=False)    # the common case, without a float copy
    try:
        y_float = y.astype(float)
    except (TypeError, ValueError):
        raise InputError(f"{name} must hold the labels 0 and 1, got values of type {y.dtype}")
    bad = np.flatnonzero(~np.isin(y_float, (0.0, 1.0)))
    if bad.size:
        found = sorted({str(v) for v in y[bad[:_MAX_LISTED]]})
        where = "cases" if case_ids is not None else "rows"
        raise InputError(f"{name} must hold only the labels 0 and 1; {where} "
                         f"{_listed(bad, case_ids)} hold {', '.join(found)}")
    return y_float.astype(np.int8)


def check_scores(y_score, name: str = "y_score",
                 case_ids: Sequence[str] | None = None) -> np.ndarray:
    """Return scores as float64; NaN or infinite entries are an :class:`InputError` naming them.

    y_score: (N,) or (K, N) (K models on the same N cases).
    """
    s = np.asarray(y_score)
    try:
        s = np.asarray(s, dtype=np.float64)      # no copy when already float64
    except (TypeError, ValueError):
        raise InputError(f"{name} must be numeric scores, got values of type {s.dtype}")
    if s.ndim not in (1, 2):
        raise InputError(f"{name} must be (N,) or (K, N) scores, got shape {s.shape}")
    bad = ~np.isfinite(s)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=0) if s.ndim == 2 else bad)
        where = "cases" if case_ids is not None else "rows"
        raise InputError(f"{name} has NaN or infinite values at {where} {_listed(rows, case_ids)}; "
                         "remove those cases or fix the model output")
    return s


def check_same_length(**arrays) -> int:
    """All arrays have the same length along their last axis; return it."""
    lengths = {name: np.shape(a)[-1] for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{k} has {v}" for k, v in lengths.items())
        raise InputError(f"inputs must have one entry per case, but {described}")
    return next(iter(lengths.values()))


def check_both_classes(y: np.ndarray, name: str = "y_true", minimum: int = 1) -> tuple[int, int]:
    """Return (n_positive, n_negative); fewer than ``minimum`` of either class is an error."""
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos < minimum or n_neg < minimum:
        raise InputError(
            f"{name} needs at least {minimum} positive (1) and {minimum} negative (0) case(s) "
            f"for this statistic; got {n_pos} positive and {n_neg} negative")
    return n_pos, n_neg


def check_probabilities(p: np.ndarray, name: str = "y_prob",
                        case_ids: Sequence[str] | None = None) -> np.ndarray:
    """Finite probabilities in [0, 1] (calibration and decision curves need probabilities)."""
    p = check_scores(p, name, case_ids)
    bad = np.flatnonzero((p < 0) | (p > 1))
    if bad.size:
        where = "cases" if case_ids is not None else "rows"
        raise InputError(f"{name} must be probabilities in [0, 1]; {where} "
                         f"{_listed(bad, case_ids)} are outside")
    return p


def check_conf_level(conf_level: float) -> float:
    if not 0.0 < float(conf_level) < 1.0:
        raise InputError(f"conf_level must be in (0, 1), got {conf_level}")
    return float(conf_level)




def auc_or_none(y_true, y_score) -> float | None:
    """ROC AUC (scikit-learn), or None where ``y_true`` holds one class only (a quick look at a
    cohort that may be too small; the statistics themselves refuse one-class input)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y_true)
    return float(roc_auc_score(y, y_score)) if np.unique(y).size == 2 else None

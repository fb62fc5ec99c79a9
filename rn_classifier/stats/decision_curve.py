"""Decision-curve analysis: net benefit of acting on the model across threshold probabilities.

Vickers & Elkin, "Decision curve analysis", Medical Decision Making 26(6), 2006. At a threshold
probability p_t (the risk at which a clinician is indifferent between acting and not), treating
the cases with ``y_prob >= p_t`` has

    net benefit = TP/N − FP/N · p_t / (1 − p_t),

compared with "treat all" (prevalence − (1 − prevalence) · p_t / (1 − p_t)) and "treat none" (0).
Here "treat" means acting on a diagnosis of radiation necrosis (label 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .validation import check_labels, check_probabilities, check_same_length

DEFAULT_THRESHOLDS = np.round(np.arange(0.01, 1.0, 0.01), 2)


@dataclass(frozen=True)
class DecisionCurve:
    """thresholds, net_benefit, treat_all, treat_none: (T,); prevalence of label 1 in the data."""

    thresholds: np.ndarray
    net_benefit: np.ndarray
    treat_all: np.ndarray
    treat_none: np.ndarray
    prevalence: float

    def as_dict(self) -> dict:
        return {"thresholds": self.thresholds.tolist(), "net_benefit": self.net_benefit.tolist(),
                "treat_all": self.treat_all.tolist(), "treat_none": self.treat_none.tolist(),
                "prevalence": self.prevalence}


def decision_curve(y_true, y_prob, thresholds=DEFAULT_THRESHOLDS) -> DecisionCurve:
    """Net benefit of the model, treat-all and treat-none at each threshold probability.

    y_true: (N,) 0/1; y_prob: (N,) probabilities in [0, 1]; thresholds: (T,) in (0, 1).
    """
    y = check_labels(y_true).astype(bool)
    p = check_probabilities(y_prob)
    check_same_length(y_true=y, y_prob=p)
    if y.size == 0:
        raise InputError("no cases given: y_true and y_prob are empty")
    t = np.asarray(thresholds, dtype=float).ravel()
    if t.size == 0 or np.any(~np.isfinite(t)) or np.any((t <= 0) | (t >= 1)):
        raise InputError("decision-curve thresholds must be probabilities strictly between 0 "
                         f"and 1; got {t.tolist()[:10]}")
    n = y.size
    treated = p[None, :] >= t[:, None]                     # (T, N)
    tp = (treated & y[None, :]).sum(axis=1)
    fp = (treated & ~y[None, :]).sum(axis=1)
    odds = t / (1.0 - t)
    prevalence = float(y.mean())
    return DecisionCurve(thresholds=t, net_benefit=tp / n - fp / n * odds,
                         treat_all=prevalence - (1.0 - prevalence) * odds,
                         treat_none=np.zeros_like(t), prevalence=prevalence)

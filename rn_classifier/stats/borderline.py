"""A borderline decision: the frozen threshold inside one case's fold spread.

Kept apart from :mod:`.thresholds` (statsmodels) so that ``predict`` imports only numpy here.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .validation import check_scores


def threshold_in_spread(fold_probs, threshold: float) -> bool:
    """True when the frozen ``threshold`` lies inside the fold models' spread for one case: the
    mean probability ± one standard deviation across folds (the spread ``predict`` reports).

    Such a decision is borderline: fold models trained on other patients would call it either
    way (e.g. P 0.535 against 0.538 with a fold SD of 0.14), so it is flagged, not printed flatly.
    fold_probs: ``(K,)`` one probability per fold model, K >= 1.
    """
    probs = check_scores(np.asarray(fold_probs, dtype=float).ravel(), "fold_probs")
    if probs.size == 0:
        raise InputError("fold_probs is empty: one probability per fold model is needed")
    mean, sd = float(probs.mean()), float(probs.std())
    return mean - sd <= float(threshold) <= mean + sd

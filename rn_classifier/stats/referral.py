"""Referral curve: discrimination left when the most uncertain cases go to a human reader.

For each fraction f, the ⌈f·N⌉ cases with the largest uncertainty (here: the spread of the fold
models' probabilities, ``y_std``) are referred and the AUC is computed on the cases kept
(Leibig et al., "Leveraging uncertainty information from deep neural networks for disease
detection", Sci Rep 2017). A useful uncertainty makes the curve rise with f.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError
from .validation import auc_or_none, check_labels, check_same_length, check_scores

DEFAULT_FRACTIONS = tuple(round(f, 2) for f in np.arange(0.0, 0.51, 0.1))


def referral_curve(y_true, y_prob, uncertainty, fractions=DEFAULT_FRACTIONS) -> dict:
    """AUC of the retained cases per referred fraction.

    y_true: (N,) 0/1; y_prob: (N,); uncertainty: (N,) finite, larger = less certain; ties are
    referred in case order (stable). Returns ``{"fraction_referred", "n_kept", "auc"}`` lists;
    ``auc`` is None where the kept cases hold one class only.
    """
    y = check_labels(y_true)
    p = check_scores(y_prob)
    u = np.asarray(uncertainty, dtype=float)
    check_same_length(y_true=y, y_prob=p, uncertainty=u)
    if not np.all(np.isfinite(u)):
        raise InputError("uncertainty must be finite for every case (y_std is missing for some cases; "
                         "oof predictions have no fold spread)")
    order = np.argsort(-u, kind="stable")          # most uncertain first
    out = {"fraction_referred": [], "n_kept": [], "auc": []}
    for f in fractions:
        if not 0.0 <= float(f) < 1.0:
            raise InputError(f"referred fractions must be in [0, 1), got {f}")
        n_referred = math.ceil(round(float(f) * y.size, 9))
        kept = np.sort(order[n_referred:])
        auc = auc_or_none(y[kept], p[kept])
        out["fraction_referred"].append(float(f))
        out["n_kept"].append(int(kept.size))
        out["auc"].append(auc)
    return out

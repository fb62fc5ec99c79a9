"""Holm's step-down correction for several comparisons against one reference model.

Holm, "A simple sequentially rejective multiple test procedure", Scand. J. Statistics 6, 1979.
Controls the family-wise error rate without Bonferroni's loss of power; computed with
statsmodels ``multipletests(method="holm")``. The family is the set of comparisons against the
reference within one cohort.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError


def holm(p_values) -> np.ndarray:
    """Holm-adjusted p-values, same order as the input. p_values: (M,) in [0, 1]."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=float).ravel()
    if p.size == 0:
        return p
    bad = np.flatnonzero(~np.isfinite(p) | (p < 0) | (p > 1))
    if bad.size:
        raise InputError(f"p-values must be in [0, 1]; entries {bad.tolist()} are "
                         f"{p[bad].tolist()}")
    return np.asarray(multipletests(p, method="holm")[1], dtype=float)

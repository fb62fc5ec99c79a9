"""Exact percentiles of a large array without partitioning all of it.

``np.percentile`` (method ``"linear"``) copies the whole array and partitions it. A head
resampled to 1 mm holds about nine million voxels, and preprocessing takes three percentiles of
it per case (the foreground threshold and the two clip bounds of ``zscore_foreground``), which
made them half of a case's time over reading and resampling it (benchmarks/preprocess_speed.py).

A percentile depends only on the two order statistics it interpolates between. :func:`percentile`
brackets them with values read from a strided sample of the array, keeps the voxels inside the
bracket (one comparison pass per side, about 1 % of the voxels), partitions those and
interpolates as NumPy does: the same value and type as ``np.percentile``, bit for bit
(``tests/test_data_order_statistics.py`` compares them on arrays with ties, at many sizes and
percentiles). A sample is not the array: when its bracket misses an order statistic, the answer
comes from ``np.percentile`` itself, so a miss costs time, never a different value.
"""

from __future__ import annotations

import math

import numpy as np

# below this many values np.percentile is fast enough that bracketing does not pay
MIN_SIZE = 200_000
# values in the strided sample the bracket is read from
SAMPLE_SIZE = 20_000


def percentile(values, q):
    """``np.percentile(values, q)`` over the whole of a finite floating-point array, computed from
    the values near each percentile only.

    q: one percentile (a Python number: the result has the array's dtype, NumPy's weak
    promotion) or several (a float64 array of their values). Integer arrays, small arrays and
    percentiles outside [0, 100] go to ``np.percentile`` unchanged. The values must be finite
    (a NaN has no rank; the caller checks).
    """
    x = np.asarray(values)
    quantiles = np.true_divide(np.asarray(q), 100)
    if (x.size < MIN_SIZE or x.dtype.kind != "f" or quantiles.ndim > 1
            or not ((quantiles >= 0) & (quantiles <= 1)).all()):
        return np.percentile(x, q)
    flat = x.ravel(order="K")   # a view of a C- or Fortran-order array: ranks ignore the order
    n = flat.size
    # NumPy's linear method: the value at virtual index (n - 1) q between ranks floor and floor + 1
    virtual = (n - 1) * quantiles
    lower = np.minimum(np.floor(virtual), n - 1).astype(np.intp)
    upper = np.minimum(lower + 1, n - 1)
    sample = np.sort(flat[::max(1, n // SAMPLE_SIZE)])
    pairs = [_order_statistics(flat, int(lo), int(hi), float(p), sample)
             for lo, hi, p in zip(lower.ravel(), upper.ravel(), quantiles.ravel())]
    if any(pair is None for pair in pairs):
        return np.percentile(x, q)
    a = np.array([pair[0] for pair in pairs], dtype=x.dtype).reshape(quantiles.shape)
    b = np.array([pair[1] for pair in pairs], dtype=x.dtype).reshape(quantiles.shape)
    gamma = virtual - lower
    if type(q) in (int, float):   # as np.percentile: a Python number keeps the array's precision
        return _interpolate(a[()], b[()], float(gamma))
    result = _interpolate(a, b, gamma)
    return result[()] if result.ndim == 0 else result


def _interpolate(a, b, t):
    """The linear method's value between order statistics ``a`` <= ``b`` at fraction ``t``,
    in NumPy's arithmetic: from ``a`` below one half, from ``b`` from one half on (so that the
    value at ``t`` = 1 is exactly ``b``)."""
    step = b - a
    from_below = a + step * t
    from_above = b - step * (1 - t)
    if np.ndim(t) == 0:
        return from_above if t >= 0.5 else from_below
    return np.where(t >= 0.5, from_above, from_below)


def _order_statistics(flat: np.ndarray, lower: int, upper: int, quantile: float,
                      sample: np.ndarray) -> tuple | None:
    """The values of ranks ``lower`` and ``upper`` of ``flat`` (sorted ascending), from the values
    inside a bracket read off the sorted ``sample`` around ``quantile``; None when the bracket
    does not hold both ranks."""
    m = sample.size
    centre = quantile * (m - 1)
    # generous: a strided sample of an image is not an independent one
    margin = 5.0 * math.sqrt(m * quantile * (1.0 - quantile)) + 0.002 * m + 2.0
    lo_rank, hi_rank = math.floor(centre - margin), math.ceil(centre + margin)
    has_floor, has_top = lo_rank > 0, hi_rank < m - 1
    below = 0     # values under the bracket
    if has_floor and has_top:
        candidates = flat[(flat >= sample[lo_rank]) & (flat <= sample[hi_rank])]
        below = int(np.count_nonzero(flat < sample[lo_rank]))
    elif has_floor:   # an upper tail: one comparison gives the bracket and what lies under it
        candidates = flat[flat >= sample[lo_rank]]
        below = flat.size - candidates.size
    elif has_top:
        candidates = flat[flat <= sample[hi_rank]]
    else:
        candidates = flat
    if below > lower or upper - below >= candidates.size:
        return None
    ranks = sorted({lower - below, upper - below})
    chosen = np.partition(candidates, ranks)
    return chosen[lower - below], chosen[upper - below]

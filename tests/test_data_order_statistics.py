"""The bracketed percentile equals np.percentile bit for bit, on the fast road and on a miss."""

from __future__ import annotations

import numpy as np
import pytest

from rn_classifier.data import order_statistics
from rn_classifier.data.order_statistics import percentile


def _same(ours, numpy_value) -> None:
    assert type(ours) is type(numpy_value)
    assert np.asarray(ours).dtype == np.asarray(numpy_value).dtype
    assert np.array_equal(np.asarray(ours), np.asarray(numpy_value)), (ours, numpy_value)


def _head_like(rng, shape) -> np.ndarray:
    """A bright blob in dark noise, spatially smooth: the kind of array preprocessing sees."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    head = (np.sqrt((grid ** 2).sum(0)) < 0.8) * 400.0
    return (head + rng.normal(0, 20, shape)).astype(np.float32)


@pytest.mark.parametrize("q", [99, 50, 0.5, 99.5, 0, 100, 12.25, [0.5, 99.5], [25, 50, 75], (0, 100), [99.0]])
def test_equals_numpy_on_an_image(q, monkeypatch):
    rng = np.random.default_rng(0)
    x = _head_like(rng, (61, 70, 59))
    calls = []
    monkeypatch.setattr(order_statistics.np, "percentile",
                        lambda *a, **k: calls.append(1) or np.lib._function_base_impl.percentile(*a, **k))
    ours = percentile(x, q)
    assert not calls, "a smooth image should be bracketed without falling back to np.percentile"
    monkeypatch.undo()
    _same(ours, np.percentile(x, q))


@pytest.mark.parametrize("seed", range(12))
def test_equals_numpy_with_ties_at_many_sizes(seed, monkeypatch):
    """Rounded values (many ties), float32 and float64, sizes around the sample stride, and
    NumPy scalars as well as Python numbers for q."""
    rng = np.random.default_rng(seed)
    monkeypatch.setattr(order_statistics, "MIN_SIZE", 0)
    monkeypatch.setattr(order_statistics, "SAMPLE_SIZE", int(rng.integers(5, 400)))
    n = int(rng.integers(1, 20_000))
    dtype = (np.float32, np.float64)[seed % 2]
    x = np.round(rng.standard_t(3, n) * 10.0) / 4.0 if seed % 3 else rng.random(n)
    x = x.astype(dtype)
    for q in (float(rng.uniform(0, 100)), 99, 50, 0.5, [0.5, 99.5], np.float64(rng.uniform(0, 100)),
              rng.uniform(0, 100, 5)):
        _same(percentile(x, q), np.percentile(x, q))


def test_a_sample_that_misses_falls_back_to_numpy(monkeypatch):
    """Every strided sample value is above the rest: the bracket read from the sample holds only
    the top 1 % of the values, not the ranks of the 99th percentile, and the answer is
    np.percentile's."""
    monkeypatch.setattr(order_statistics, "MIN_SIZE", 0)
    monkeypatch.setattr(order_statistics, "SAMPLE_SIZE", 100)
    x = np.linspace(1, 2, 10_000).astype(np.float32)
    x[::100] = 5.0
    picked = []
    real = order_statistics._order_statistics
    monkeypatch.setattr(order_statistics, "_order_statistics",
                        lambda *a: picked.append(real(*a)) or picked[-1])
    _same(percentile(x, 99), np.percentile(x, 99))
    assert picked == [None]


def test_integer_arrays_and_bad_percentiles_are_numpys_business():
    x = np.arange(300_000, dtype=np.int16)
    _same(percentile(x, 99), np.percentile(x, 99))
    with pytest.raises(ValueError):
        percentile(np.zeros(300_000, np.float32), 101)

"""Per-axis sizes: one value for every spatial axis (MONAI's ``ensure_tuple_rep``).

The same behaviour as ``monai.utils.ensure_tuple_rep`` for the ints and sequences the models
take, kept here so that building a model imports no MONAI: its import was about a third of the
start-up of ``rn-classifier predict`` (benchmarks/predict_latency.py). Tested equal to MONAI's.
"""

from __future__ import annotations

from typing import Any


def ensure_tuple_rep(value: Any, dim: int) -> tuple:
    """``value`` repeated ``dim`` times, or ``value`` as a tuple when it already has ``dim`` items.

    Raises ValueError otherwise, as MONAI does.
    """
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        return (value,) * dim
    if len(value) == dim:
        return tuple(value)
    raise ValueError(f"Sequence must have length {dim}, got {len(value)}.")

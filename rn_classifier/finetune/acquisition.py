"""Acquisition-robust fine-tuning: training-time simulations of other scanners (issue 18).

A second centre differs in how it acquires, not in what the lesion is: thicker slices, coil
shading, more noise, a flatter contrast curve. Each simulation is one MONAI dictionary transform
on the T1CE channel of the training crop (never the mask, never evaluation), and each is OFF by
default (probability 0): it is switched on only when internal out-of-fold AUC says it does no
harm (the image-model work measured that strong blur and gamma erase the lesion traits), never
on the external cohort.

* slice thickness (:class:`RandSliceThicknessd`): box-average ``k`` consecutive slices along
  the slice axis and interpolate back to the training grid, ``k = thickness / spacing`` with
  the thickness drawn from ``slice_mm`` — a box slice profile, as the synthetic external centre
  is rendered;
* bias field: MONAI ``RandBiasFieldd`` (a smooth multiplicative field, log-polynomial of
  ``bias_degree`` with coefficients drawn in [0, ``bias_coeff``)), applied to the intensities shifted to
  be positive so that the field scales tissue, not the sign of a z-score;
* Rician noise: MONAI ``RandRicianNoised`` (magnitude-image noise, SD up to ``rician_std`` times
  the crop's own SD);
* contrast: MONAI ``RandAdjustContrastd``, gamma in ``contrast_gamma`` (moderate by default).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.transforms import (MapTransform, RandAdjustContrastd, RandBiasFieldd, Randomizable,
                              RandomizableTransform, RandRicianNoised)
from scipy import ndimage

from ..errors import ConfigError


def check_acquisition(acq) -> None:
    """Probabilities in [0, 1], ordered positive ranges; the message names the key."""
    for name in ("slice_prob", "bias_prob", "rician_prob", "contrast_prob"):
        value = float(getattr(acq, name))
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"augment.acquisition.{name} must be a probability in [0, 1], got {value}")
    for name in ("slice_mm", "contrast_gamma"):
        low, high = (float(v) for v in getattr(acq, name))
        if not 0.0 < low <= high:
            raise ConfigError(f"augment.acquisition.{name} must be [low, high] with 0 < low <= high, "
                              f"got {list(getattr(acq, name))}")
    if acq.slice_axis not in (0, 1, 2):
        raise ConfigError(f"augment.acquisition.slice_axis must be 0, 1 or 2, got {acq.slice_axis}")
    for name in ("bias_coeff", "rician_std"):
        if float(getattr(acq, name)) < 0:
            raise ConfigError(f"augment.acquisition.{name} must be >= 0, got {getattr(acq, name)}")


def thick_slices(image: np.ndarray, factor: float, axis: int) -> np.ndarray:
    """``image`` (X, Y, Z) as if acquired with slices ``factor`` times thicker along ``axis``:
    box-average over ``factor`` slices, keep every ``factor``-th, interpolate back linearly."""
    if factor <= 1.0:
        return image
    n = image.shape[axis]
    smoothed = ndimage.uniform_filter1d(image, size=max(int(round(factor)), 1), axis=axis, mode="nearest")
    kept = np.arange(0.0, n - 1 + 1e-9, factor)
    sampled = np.take(smoothed, np.round(kept).astype(int), axis=axis)
    positions = np.arange(n, dtype=float)
    moved = np.moveaxis(sampled, axis, -1)
    out = np.empty(moved.shape[:-1] + (n,), dtype=image.dtype)
    flat_in, flat_out = moved.reshape(-1, moved.shape[-1]), out.reshape(-1, n)
    for i in range(flat_in.shape[0]):
        flat_out[i] = np.interp(positions, kept, flat_in[i])
    return np.moveaxis(out, -1, axis)


class RandSliceThicknessd(RandomizableTransform, MapTransform):
    """With probability ``prob``, ``keys`` (C, X, Y, Z) re-acquired with thicker slices."""

    def __init__(self, keys, spacing: Sequence[float], slice_mm: Sequence[float], axis: int = 2,
                 prob: float = 0.0):
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        self.spacing, self.slice_mm, self.axis = tuple(spacing), tuple(slice_mm), int(axis)
        self._thickness = float(slice_mm[0])

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self._thickness = float(self.R.uniform(*self.slice_mm))

    def __call__(self, data: dict) -> dict:
        self.randomize()
        d = dict(data)
        if not self._do_transform:
            return d
        factor = self._thickness / float(self.spacing[self.axis])
        for key in self.key_iterator(d):
            value = d[key]
            array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            thick = np.stack([thick_slices(c.astype(np.float32), factor, self.axis) for c in array])
            d[key] = torch.as_tensor(thick) if isinstance(value, torch.Tensor) else thick
        return d


class _Positive(Randomizable, MapTransform):
    """Shift ``keys`` to be positive (min 1) and back: a multiplicative field then acts on tissue.
    Seeding it (``Compose.set_random_state``) seeds the wrapped random transform."""

    def __init__(self, keys, inner):
        MapTransform.__init__(self, keys)
        self.inner = inner

    def set_random_state(self, seed=None, state=None):
        self.inner.set_random_state(seed, state)
        return self

    def randomize(self, data=None) -> None:
        pass

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        offsets = {k: float(d[k].min()) - 1.0 for k in self.key_iterator(d)}
        for k, off in offsets.items():
            d[k] = d[k] - off
        d = dict(self.inner(d))
        for k, off in offsets.items():
            d[k] = d[k] + off
        return d


def acquisition_transforms(acq, spacing: Sequence[float]) -> list:
    """The switched-on simulations (probability > 0), in acquisition order: slices, bias, noise,
    contrast. An all-off config gives an empty list (the pipeline as without this module)."""
    check_acquisition(acq)
    steps: list = []
    if acq.slice_prob > 0:
        steps.append(RandSliceThicknessd("image", spacing, acq.slice_mm, acq.slice_axis, acq.slice_prob))
    if acq.bias_prob > 0:
        steps.append(_Positive("image", RandBiasFieldd("image", degree=int(acq.bias_degree),
                                                       coeff_range=(0.0, float(acq.bias_coeff)),
                                                       prob=acq.bias_prob)))
    if acq.rician_prob > 0:
        steps.append(RandRicianNoised("image", prob=acq.rician_prob, std=float(acq.rician_std),
                                      relative=True, sample_std=True))
    if acq.contrast_prob > 0:
        steps.append(RandAdjustContrastd("image", prob=acq.contrast_prob,
                                         gamma=tuple(float(g) for g in acq.contrast_gamma)))
    return steps

"""Scanner models of the synthetic centres: the domain shift between sites.

A :class:`ScannerProfile` turns a relative-intensity rendering (white matter ≈ 1) into the
stored int16 image of one acquisition:

1. slice profile — thick slices are simulated by rendering ``slice_subsamples`` thin slices
   per stored slice and averaging them (a box slice profile, done by the cohort builder);
2. in-plane point-spread blur (Gaussian, ``blur_mm``);
3. a contrast curve (``gamma``: lower values flatten grey/white and lesion contrast);
4. a smooth multiplicative bias field (quadratic in space, log-amplitude ``bias_strength``),
   as from receive-coil sensitivity;
5. a per-scan intensity scale (stored value of white matter) and offset;
6. Rician noise (magnitude of complex Gaussian noise; ``noise_sigma`` relative to white
   matter), as in magnitude MR images.

The external centre differs in all of these — scale, bias, noise, 5 mm slices — so a model
trained on the internal centre meets a visible shift, as the published external cohort did.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .geometry import Grid

INT16_MAX = 32767


@dataclass(frozen=True)
class ScannerProfile:
    """Acquisition and intensity characteristics of one (synthetic) scanner.

    Ranges are (low, high) and drawn uniformly per scan.
    """

    name: str
    spacing: tuple[float, float, float]
    slice_subsamples: int = 1
    blur_mm: float = 0.0
    gamma: tuple[float, float] = (1.0, 1.0)
    bias_strength: float = 0.05
    white_matter_value: tuple[float, float] = (600.0, 800.0)
    offset: tuple[float, float] = (0.0, 0.0)
    noise_sigma: tuple[float, float] = (0.02, 0.03)

    def render_grid(self, grid: Grid) -> Grid:
        """The grid to render on: ``grid`` with each slice split for the slice profile."""
        return grid.refined_z(self.slice_subsamples)

    def describe(self) -> dict:
        return {"spacing_mm": list(self.spacing), "slice_profile_subsamples": self.slice_subsamples,
                "blur_mm": self.blur_mm, "gamma": list(self.gamma),
                "bias_strength": self.bias_strength,
                "white_matter_value": list(self.white_matter_value),
                "offset": list(self.offset), "noise_sigma": list(self.noise_sigma)}


def acquire(relative: np.ndarray, grid: Grid, profile: ScannerProfile,
            rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Stored image of a relative-intensity volume (already at the stored slice thickness).

    relative: float32 (X, Y, Z) on ``grid``; returns (int16 (X, Y, Z), the per-scan draws).
    """
    img = relative.astype(np.float32, copy=True)
    if profile.blur_mm > 0:
        sigma = [profile.blur_mm / s for s in grid.spacing[:2]] + [0.0]
        img = ndimage.gaussian_filter(img, sigma)
    gamma = float(rng.uniform(*profile.gamma))
    np.power(np.clip(img, 0, None), gamma, out=img)
    img *= bias_field(grid, profile.bias_strength, rng)
    scale = float(rng.uniform(*profile.white_matter_value))
    offset = float(rng.uniform(*profile.offset))
    sigma = float(rng.uniform(*profile.noise_sigma)) * scale
    img = img * scale + offset
    real = img + rng.standard_normal(img.shape, dtype=np.float32) * sigma
    imag = rng.standard_normal(img.shape, dtype=np.float32) * sigma
    img = np.sqrt(real * real + imag * imag)
    stored = np.clip(np.rint(img), 0, INT16_MAX).astype(np.int16)
    return stored, {"gamma": gamma, "white_matter_value": scale, "offset": offset,
                    "noise_sigma": sigma}


def bias_field(grid: Grid, strength: float, rng: np.random.Generator) -> np.ndarray:
    """exp of a random quadratic polynomial over the field of view: float32 (X, Y, Z).

    Coordinates are normalised to [-1, 1]; each of the 9 non-constant coefficients is
    N(0, strength / 2), so ``strength`` ≈ the typical log-amplitude across the head.
    """
    coords = []
    for n, shape_axis in zip(grid.shape, range(3)):
        c = np.linspace(-1, 1, n, dtype=np.float32)
        shape = [1, 1, 1]
        shape[shape_axis] = n
        coords.append(c.reshape(shape))
    x, y, z = coords
    terms = [x, y, z, x * x, y * y, z * z, x * y, x * z, y * z]
    coef = rng.normal(0, strength / 2, len(terms)).astype(np.float32)
    log_field = np.zeros(grid.shape, np.float32)
    for c, t in zip(coef, terms):
        log_field += c * t
    return np.exp(log_field)

"""Plausible alternative contours of a lesion, for the spread of P(RN) over who drew the contour.

Contours vary between raters and planning systems (the CURVAS challenge's point). A variant is
a lesion mask on the same voxel grid as the drawn one:

* ``erode`` / ``dilate``: binary morphology with an ellipsoid of ``margin_mm`` (scipy.ndimage;
  the element holds the voxel offsets d with Σ (d·spacing / r)² ≤ 1, so 1 mm at 1 mm voxels is
  the 6-neighbour cross). The radius is never less than the finest voxel size: a sub-voxel
  change is no change, so on a 2 mm grid "1 mm" moves the boundary by one voxel.
* ``jitter<k>``: the boundary moved by a smooth random displacement — the signed distance to
  the contour (mm, negative inside) compared with a Gaussian-smoothed noise field of standard
  deviation ``jitter_mm`` and correlation length ``jitter_smooth_mm``; seeded, so a case's
  variants are the same on every run.
* ``rater:<column>``: another rater's mask, from a manifest column named ``mask_<rater>`` (for
  example ``mask_rater2``) holding a mask file per case, read with the case's ``mask_labels``.

The variants are applied on the grid the mask was drawn on, before the case is brought to the
training setting (:func:`variant_inputs`), so the model sees them through the same road as the
drawn contour (design seam 6).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from ..errors import InputError

RATER_PREFIX = "mask_"
NOT_RATER_COLUMNS = ("mask_labels", "mask_path")


@dataclass(frozen=True)
class ContourVariantConfig:
    """Which alternative contours to make (all in mm on the grid the mask was drawn on)."""

    margin_mm: float = 1.0          # erode / dilate radius (at least one voxel)
    n_jitter: int = 2               # boundary-jitter draws per case; 0 = none
    jitter_mm: float = 1.0          # SD of the boundary displacement
    jitter_smooth_mm: float = 4.0   # correlation length of the displacement field
    seed: int = 0
    morphology: bool = True         # erode and dilate
    raters: bool = True             # masks of other raters (manifest columns mask_<rater>)

    def check(self) -> ContourVariantConfig:
        for name in ("margin_mm", "jitter_mm", "jitter_smooth_mm"):
            if not float(getattr(self, name)) > 0:
                raise InputError(f"contour variants: {name} must be > 0 mm, got {getattr(self, name)}")
        if int(self.n_jitter) < 0:
            raise InputError(f"contour variants: n_jitter must be >= 0, got {self.n_jitter}")
        return self


def effective_radius_mm(spacing: Sequence[float], radius_mm: float) -> float:
    """``radius_mm``, but at least the finest voxel size (a smaller radius moves no voxel)."""
    return max(float(radius_mm), float(min(spacing)))


def ball(spacing: Sequence[float], radius_mm: float) -> np.ndarray:
    """Ellipsoidal structuring element: voxel offsets d with Σ (d·spacing / r)² ≤ 1.

    spacing: (D,) mm per axis (any number of dimensions); returns a bool array of odd sides.
    """
    spacing = np.asarray(spacing, float)
    half = np.floor(radius_mm / spacing + 1e-9).astype(int)
    axes = [np.arange(-h, h + 1) * s / radius_mm for h, s in zip(half, spacing)]
    grid = np.meshgrid(*axes, indexing="ij")
    return sum(g ** 2 for g in grid) <= 1.0 + 1e-9


def erode(lesion: np.ndarray, spacing: Sequence[float], radius_mm: float) -> np.ndarray:
    """The lesion shrunk by ``radius_mm`` (at least one voxel); may come back empty."""
    element = ball(spacing, effective_radius_mm(spacing, radius_mm))
    return ndimage.binary_erosion(np.asarray(lesion, bool), structure=element)


def dilate(lesion: np.ndarray, spacing: Sequence[float], radius_mm: float) -> np.ndarray:
    """The lesion grown by ``radius_mm`` (at least one voxel)."""
    element = ball(spacing, effective_radius_mm(spacing, radius_mm))
    return ndimage.binary_dilation(np.asarray(lesion, bool), structure=element)


def signed_distance_mm(lesion: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Distance to the contour in mm: positive outside the lesion, negative inside."""
    lesion = np.asarray(lesion, bool)
    outside = ndimage.distance_transform_edt(~lesion, sampling=spacing)
    inside = ndimage.distance_transform_edt(lesion, sampling=spacing)
    return outside - inside


def jitter(lesion: np.ndarray, spacing: Sequence[float], amplitude_mm: float, smooth_mm: float,
           rng: np.random.Generator) -> np.ndarray:
    """The contour moved by a smooth random displacement of SD ``amplitude_mm`` (see module)."""
    lesion = np.asarray(lesion, bool)
    field = ndimage.gaussian_filter(rng.standard_normal(lesion.shape),
                                    sigma=[smooth_mm / s for s in spacing], mode="reflect")
    sd = float(field.std())
    field = field / sd * amplitude_mm if sd > 0 else np.zeros_like(field)
    return moved_contour(lesion, spacing, field)


def moved_contour(lesion: np.ndarray, spacing: Sequence[float], field: np.ndarray) -> np.ndarray:
    """The voxels whose signed distance to the contour (mm) is below the displacement ``field``
    (mm, the image's shape; 0: the lesion itself): ``signed_distance_mm(lesion) < field``.

    The distance transforms are taken only in the lesion's bounding box grown by the largest
    displacement (and a voxel): no voxel beyond it can be reached, and inside it both distances
    are those of the whole image (the nearest lesion voxel is in the box, and a background voxel
    outside the box is never nearer than its projection onto the box's border, which is
    background too). A head holds millions of voxels, a lesion's neighbourhood thousands.
    """
    lesion = np.asarray(lesion, bool)
    if not lesion.any():
        return signed_distance_mm(lesion, spacing) < field
    reach = np.ceil(float(np.abs(field).max()) / np.asarray(spacing, float)).astype(int) + 1
    box = []
    for axis in range(lesion.ndim):
        along = np.flatnonzero(lesion.any(axis=tuple(a for a in range(lesion.ndim) if a != axis)))
        box.append(slice(max(along[0] - reach[axis], 0), along[-1] + reach[axis] + 1))
    box = tuple(box)
    moved = np.zeros(lesion.shape, bool)
    moved[box] = signed_distance_mm(lesion[box], spacing) < field[box]
    return moved


def rater_columns(columns: Sequence[str]) -> list[str]:
    """Manifest columns holding other raters' masks: ``mask_<rater>``, not ``mask_labels``."""
    return [c for c in columns if c.startswith(RATER_PREFIX) and c not in NOT_RATER_COLUMNS]


def contour_variants(lesion: np.ndarray, spacing: Sequence[float],
                     cfg: ContourVariantConfig = ContourVariantConfig(),
                     case_key: str = "") -> dict[str, np.ndarray]:
    """Generated alternative contours of one lesion: name -> bool mask on the same grid.

    lesion: (X, Y, Z) bool; spacing: its voxel size (mm). ``case_key`` seeds the jitter per
    case (with ``cfg.seed``). A variant that comes back empty (an erosion of a tiny lesion)
    is left out; the caller sees which names are missing.
    """
    cfg.check()
    lesion = np.asarray(lesion, bool)
    out: dict[str, np.ndarray] = {}
    if cfg.morphology:
        out["erode"] = erode(lesion, spacing, cfg.margin_mm)
        out["dilate"] = dilate(lesion, spacing, cfg.margin_mm)
    if cfg.n_jitter:
        seed = np.random.SeedSequence([cfg.seed, *case_key.encode()])
        for k, child in enumerate(seed.spawn(cfg.n_jitter)):
            out[f"jitter{k}"] = jitter(lesion, spacing, cfg.jitter_mm, cfg.jitter_smooth_mm,
                                       np.random.default_rng(child))
    return {name: mask for name, mask in out.items() if mask.any()}


def variant_inputs(case, setting, variants: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model input ``(2, X, Y, Z)`` float32 of ``case`` (:class:`~rn_classifier.data.crop.Case`)
    under each alternative lesion (same grid as ``case.mask``), through the one crop road.

    The crop is centred on each variant's own lesion, as it would be had that contour been drawn.
    """
    from .crop import Case, model_input

    if case.mask is None:
        raise InputError(f"image {case.image.path}: contour variants need the case's lesion mask")
    out = {}
    for name, lesion in variants.items():
        if lesion.shape != case.mask.lesion.shape:
            raise InputError(f"contour variant {name} of {case.image.path}: mask shape {lesion.shape} "
                             f"is not the image's {case.mask.lesion.shape}")
        variant = Case(image=case.image, mask=replace(case.mask, lesion=np.asarray(lesion, bool)))
        out[name] = model_input(variant, setting)[0]
    return out


def rater_mask_path(value, base):
    """The file of one ``mask_<rater>`` cell, relative to ``base`` (the manifest's folder) like
    ``mask``; None for an empty cell (that rater did not contour this case)."""
    from pathlib import Path

    if not isinstance(value, str) or not value.strip():
        return None
    return Path(value) if Path(value).is_absolute() else Path(base) / value


def rater_lesions(case, row: dict, columns: Sequence[str], base) -> dict[str, np.ndarray]:
    """Other raters' lesions of one manifest row, on the case's image grid: ``rater:<column>``.

    row: the manifest row; ``base``: the folder its relative paths start from (the manifest's);
    an empty cell means that rater did not contour this case.
    """
    from .readers import read_mask

    out = {}
    for column in columns:
        path = rater_mask_path(row.get(column), base)
        if path is None:
            continue
        try:
            mask = read_mask(path, row.get("mask_labels", ()) or (), case.image)
        except InputError as exc:
            raise InputError(f"case {row.get('case_id', '?')}, column {column}: {exc}") from None
        if mask.lesion.any():
            out[f"rater:{column}"] = mask.lesion
    return out


def spread_summary(probs: dict[str, float], original: str = "original") -> dict:
    """The spread of P(RN) over the drawn contour (``original``) and its alternatives.

    Returns ``sd`` (population SD over all contours, as the fold spread is), ``range`` [min,
    max], ``max_shift`` (largest |P(variant) − P(original)|) and ``n_contours``.
    """
    if original not in probs:
        raise InputError(f"spread_summary needs the prediction of the drawn contour {original!r}")
    values = np.asarray(list(probs.values()), float)
    shifts = [abs(p - probs[original]) for name, p in probs.items() if name != original]
    return {"sd": float(np.std(values)), "range": [float(values.min()), float(values.max())],
            "max_shift": float(max(shifts)) if shifts else 0.0, "n_contours": int(values.size)}

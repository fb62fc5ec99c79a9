"""Image statistics of one case, as the model sees it (its cached / served crop), needing no label.

Per crop ``(C, X, Y, Z)`` (channel 0 the normalised T1CE, channel 1 the lesion mask when present),
on its central :data:`FEATURE_REGION`³ voxels — the part both a cached crop and the smaller model
input served by ``predict`` hold (the model input is the centre of the cached crop), so a new
case is described exactly as the internal ones:

* ``q01 … q99``: quantiles of the normalised T1CE (contrast curve, bias field, clipping);
* ``noise``: robust noise level, MAD of the in-plane first differences / (0.6745·√2) — for
  white Gaussian noise of SD σ the difference of two voxels has SD σ√2 (Donoho & Johnstone's
  MAD/0.6745 estimate of an SD);
* ``z_smoothness``: MAD of the first differences along z over those in-plane (x, y); thick
  slices resampled to the training spacing are smooth along z, so the ratio drops;
* ``lesion_contrast``: median T1CE inside the lesion minus median in the crop outside it
  (crops with a mask channel);
* ``slice_mm`` / ``in_plane_mm``: largest and smallest voxel spacing of the source image (from
  the cache index columns ``source_spacing_x/y/z``, when the cache has them).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

FEATURE_REGION = 24                       # voxels per side (or the whole crop if smaller)
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
QUANTILE_NAMES = tuple(f"q{round(100 * q):02d}" for q in QUANTILES)
SPACING_COLUMNS = ("source_spacing_x", "source_spacing_y", "source_spacing_z")
_MAD_TO_SD = 0.6744897501960817


def _mad(values: np.ndarray) -> float:
    values = np.asarray(values, float).ravel()
    return float(np.median(np.abs(values - np.median(values))))


def centre_region(crop: np.ndarray) -> np.ndarray:
    """The central :data:`FEATURE_REGION`³ voxels of ``crop`` (C, X, Y, Z) (MONAI's centre)."""
    from ..data.crop import centre_offset

    size = [min(FEATURE_REGION, s) for s in crop.shape[1:]]
    start = centre_offset(crop.shape[1:], size)
    return crop[(slice(None),) + tuple(slice(int(a), int(a) + s) for a, s in zip(start, size))]


def crop_features(crop: np.ndarray) -> dict[str, float]:
    """Image statistics of one crop ``(C, X, Y, Z)``; see the module docstring for each one."""
    crop = centre_region(np.asarray(crop))
    image = np.asarray(crop[0], dtype=np.float32)
    out = dict(zip(QUANTILE_NAMES, (float(v) for v in np.quantile(image, QUANTILES))))
    dx, dy, dz = (_mad(np.diff(image, axis=a)) for a in range(3))
    in_plane = 0.5 * (dx + dy)
    out["noise"] = in_plane / (_MAD_TO_SD * np.sqrt(2.0))
    out["z_smoothness"] = dz / in_plane if in_plane > 0 else float("nan")
    if crop.shape[0] > 1:
        lesion = np.asarray(crop[1]) > 0.5
        if lesion.any() and (~lesion).any():
            out["lesion_contrast"] = float(np.median(image[lesion]) - np.median(image[~lesion]))
    return out


def spacing_features(index_row) -> dict[str, float]:
    """``slice_mm`` and ``in_plane_mm`` from a cache index row's source spacing, if recorded."""
    values = [index_row.get(c) for c in SPACING_COLUMNS]
    if any(v is None or pd.isna(v) for v in values):
        return {}
    values = [float(v) for v in values]
    return {"slice_mm": max(values), "in_plane_mm": min(values)}


def cache_features(cache) -> pd.DataFrame:
    """One row of features per crop of a :class:`~rn_classifier.data.cache.CropCache`,
    indexed by case_id, with the ``patient_id`` column kept for patient-level resampling."""
    rows = []
    for i, row in enumerate(cache.index.to_dict("records")):
        rows.append({"case_id": str(row["case_id"]), "patient_id": str(row["patient_id"]),
                     **crop_features(cache[i]), **spacing_features(row)})
    return pd.DataFrame(rows).set_index("case_id")

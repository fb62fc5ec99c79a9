"""How much of the attention falls on the lesion: the paper's interpretability claim as a number.

For a map ``a ≥ 0`` on the crop, normalised to total mass 1, and the lesion mask on the same
crop:

* ``in_mask``: the share of the mass inside the lesion mask;
* ``in_margin``: the share inside the lesion or within ``margin_mm`` of it (Euclidean distance
  in mm at the crop's voxel spacing);
* ``mask_fraction`` / ``margin_fraction``: the share of crop *volume* those regions take — what
  a uniform map would score. ``in_mask / mask_fraction`` (``enrichment``) above 1 means the
  model looks at the lesion more than chance.
"""

from __future__ import annotations

import numpy as np

DEFAULT_MARGIN_MM = 5.0


def attention_focus(attention: np.ndarray, lesion: np.ndarray, spacing,
                    margin_mm: float = DEFAULT_MARGIN_MM) -> dict:
    """Focus numbers of one map. attention, lesion: ``(X, Y, Z)`` on the same crop; spacing: mm."""
    from scipy.ndimage import distance_transform_edt

    a = np.clip(np.asarray(attention, dtype=np.float64), 0.0, None)
    lesion = np.asarray(lesion) > 0.5
    if a.shape != lesion.shape:
        raise ValueError(f"attention {a.shape} and lesion mask {lesion.shape} must share the crop")
    total = a.sum()
    if not lesion.any() or total <= 0:
        return {"in_mask": None, "in_margin": None, "mask_fraction": float(lesion.mean()),
                "margin_fraction": None, "enrichment": None, "margin_mm": float(margin_mm)}
    distance = distance_transform_edt(~lesion, sampling=[float(s) for s in spacing])
    margin = distance <= float(margin_mm)
    in_mask = float(a[lesion].sum() / total)
    mask_fraction = float(lesion.mean())
    return {"in_mask": in_mask, "in_margin": float(a[margin].sum() / total),
            "mask_fraction": mask_fraction, "margin_fraction": float(margin.mean()),
            "enrichment": in_mask / mask_fraction, "margin_mm": float(margin_mm)}

"""Which lesion traits does each pretraining augmentation erase?

An invariance objective (DINO) learns to ignore what its augmentations change. If a blur erases
the feathered margin that tells radiation necrosis from progression, the encoder is taught to
ignore that margin. This audit applies each augmentation of a pretraining config, one at a time
at its strongest configured setting, to the T1CE channel of the internal TRAINING crops (the
split's ``part == "train"``; test cases are never read) and measures what is left with the
probe's crop intensity statistics (:func:`~rn_classifier.pretrain.probe.crop_statistics`):

* the label AUC of a logistic read-out of the statistics (patient-grouped CV), and
* on a SYNTHETIC cohort, the cross-validated R² of each latent lesion trait.

A trait whose R² collapses under an augmentation is one an invariance objective will not learn.
The resolution loss of a DINO view (a crop of side fraction ``s`` of the pool crop resized to
the view size) is audited as a zoom by ``view / (s · pool crop)`` and back, for the largest
``s`` of the global and of the local views. Transforms are MONAI's, with fixed seeds.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch
from monai.transforms import AdjustContrast, GaussianSmooth, RandBiasField, RandGaussianNoise
from scipy import ndimage

from .config import AugmentConfig, DinoConfig
from .probe import centre_crops, crop_statistics, label_probe_auc, synthetic_traits, training_cases, trait_r2

AUDIT_CROP = (32, 32, 32)
ORIGINAL = "original"


def _seeded(transform, seed: int = 0):
    transform.set_random_state(seed)
    return transform


def zoom_and_back(volume: np.ndarray, factor: float) -> np.ndarray:
    """``volume`` resampled by ``factor`` (linear) and back to its shape: the detail a rescaled view keeps."""
    small = ndimage.zoom(volume, factor, order=1)
    back = ndimage.zoom(small, np.asarray(volume.shape) / np.asarray(small.shape), order=1)
    return back[tuple(slice(0, n) for n in volume.shape)]


def view_zooms(dino: DinoConfig, pool_crop: int) -> dict[str, float]:
    """The strongest down-sampling of DINO's global and local views (``< 1`` loses detail)."""
    return {"global view": dino.global_crop_size / (max(dino.global_crop_scale) * pool_crop),
            "local view": dino.local_crop_size / (max(dino.local_crop_scale) * pool_crop)}


def augmentations(augment: AugmentConfig, zooms: dict[str, float]) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Name → a deterministic ``(X, Y, Z) → (X, Y, Z)`` function, each at its strongest setting."""
    def monai(transform):
        return lambda v: np.asarray(transform(torch.as_tensor(v[None])))[0]

    sigma = max(augment.blur_sigma)
    low, high = min(augment.gamma), max(augment.gamma)
    out = {
        f"blur sigma {sigma:g} voxel": monai(GaussianSmooth(sigma)),
        # MONAI's gamma works on [0, 1]-rescaled intensities (retain_stats keeps mean and SD)
        f"gamma {low:g}": monai(AdjustContrast(low, retain_stats=True)),
        f"gamma {high:g}": monai(AdjustContrast(high, retain_stats=True)),
        f"noise SD {augment.noise_std:g}": lambda v: np.asarray(
            _seeded(RandGaussianNoise(prob=1.0, std=augment.noise_std))(torch.as_tensor(v[None])))[0],
        f"bias field {max(augment.bias_field_coeff):g}": lambda v: np.asarray(_seeded(RandBiasField(
            coeff_range=(max(augment.bias_field_coeff),) * 2, prob=1.0))(torch.as_tensor(v[None])))[0],
        f"intensity scale x{1 + augment.intensity_scale:g}": lambda v: v * (1 + augment.intensity_scale),
    }
    for name, factor in zooms.items():
        if factor < 1:
            out[f"{name} zoom {factor:.2f} and back"] = lambda v, f=factor: zoom_and_back(v, f)
    return out


def audit_augmentations(cache_dir: str | os.PathLike, split_path: str | os.PathLike, augment: AugmentConfig,
                        zooms: dict[str, float] | None = None, cohort_json: str | os.PathLike | None = None,
                        repeats: int = 3) -> dict:
    """The audit table: one row per augmentation (and the original crops)."""
    cases = training_cases(cache_dir, split_path)
    x = centre_crops(cases.crops, AUDIT_CROP)
    traits = synthetic_traits(cohort_json, cases.case_ids) if cohort_json else None
    rows = []
    for name, fn in {ORIGINAL: None, **augmentations(augment, zooms or {})}.items():
        changed = x.clone()
        if fn is not None:
            changed[:, 0] = torch.from_numpy(np.stack([fn(v) for v in x[:, 0].numpy()]).astype(np.float32))
        stats = crop_statistics(changed, cases.case_ids)
        auc, sd = label_probe_auc(stats, cases.labels, cases.patients, repeats=repeats)
        row = {"augmentation": name, "label_auc": auc, "label_auc_sd": sd}
        if traits is not None:
            row["trait_r2"] = trait_r2(stats, traits, cases.patients)
        rows.append(row)
    return {"cases": int(len(cases.labels)), "crop_size": list(AUDIT_CROP), "repeats": repeats,
            "synthetic_traits": traits is not None, "rows": rows}


def format_audit(report: dict) -> str:
    lines = [f"augmentation audit on {report['cases']} internal TRAINING cases: crop-statistics label AUC"
             + (" and latent-trait R² (SYNTHETIC cohort)" if report["synthetic_traits"] else "")
             + ", each augmentation alone at its strongest setting"]
    names = list(report["rows"][0].get("trait_r2", {}))
    width = max(len(r["augmentation"]) for r in report["rows"])
    lines.append(f"  {'':<{width}s}   AUC (SD)     " + " ".join(f"{n[:12]:>12s}" for n in names))
    for row in report["rows"]:
        r2 = " ".join(f"{row['trait_r2'][n]:12.2f}" for n in names)
        lines.append(f"  {row['augmentation']:<{width}s}   {row['label_auc']:.3f} ({row['label_auc_sd']:.3f}) {r2}")
    return "\n".join(lines)

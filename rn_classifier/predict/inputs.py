"""One new case brought to the training setting, or refused with a message that says why.

Image and mask are read like every other case (:mod:`rn_classifier.data.ingest`: NIfTI, NRRD,
MHA, DICOM; reoriented to RAS), resampled to the run's voxel spacing, normalised with the run's
intensity normalisation and cropped around the lesion centroid at the model's crop size — the
same crop the fine-tuning evaluation used (lesion-centred cache crop, then its centre crop).

Refused, each with one :class:`~rn_classifier.errors.InputError`:

* spacing: a voxel axis more than :data:`MAX_UPSAMPLING` times coarser than the training
  spacing (e.g. 10 mm slices for a 2 mm model: most of the crop would be interpolated);
* orientation: a voxel axis more than :data:`MAX_OBLIQUITY_DEG` degrees off its nearest
  anatomical axis (the model saw axis-aligned crops) or a degenerate affine;
* contrast: an image without a usable foreground for the normalisation (constant, all zero,
  NaN) or with too few grey levels to be an MR image (e.g. a label map passed as the image);
* mask: geometry different from the image's, or no voxel with the requested label values;
* clinical values: an unknown key, a non-number for a numeric column, a category the model
  never saw in training (the accepted ones are listed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..data.ingest import (Volume, geometry_mismatch, lesion_mask, load_mask, load_volume, normalise,
                           resample)
from ..data.preprocess import _crop_start, crop_with_padding
from ..errors import InputError
from .trained_run import Preprocessing

MAX_UPSAMPLING = 4.0          # stored spacing / training spacing, per axis
MAX_OBLIQUITY_DEG = 30.0
MIN_GREY_LEVELS = 16


@dataclass
class CaseInput:
    """A new case at the training setting, with what is needed to map results back.

    crop: ``(2, X, Y, Z)`` float32 (normalised T1CE, lesion mask); crop_affine: crop voxel →
    world RAS; image / lesion: the case as read (RAS voxel order) for overlays.
    """

    crop: np.ndarray
    crop_affine: np.ndarray
    spacing: tuple[float, float, float]
    image: Volume
    lesion: np.ndarray
    lesion_volume_ml: float
    lesion_inside_crop: bool


def obliquity_deg(affine: np.ndarray) -> float:
    """Largest angle (degrees) between a voxel axis and its nearest world axis."""
    axes = np.asarray(affine, dtype=float)[:3, :3]
    norms = np.linalg.norm(axes, axis=0)
    if np.any(norms <= 0) or not np.all(np.isfinite(axes)) or abs(np.linalg.det(axes)) < 1e-12:
        return math.inf
    cosines = np.abs(axes / norms).max(axis=0)
    return float(np.degrees(np.arccos(np.clip(cosines, -1.0, 1.0))).max())


def check_image_setting(image: Volume, prep: Preprocessing) -> None:
    """Refuse an image that cannot be brought to the training spacing / orientation / contrast."""
    where = image.path
    angle = obliquity_deg(image.affine)
    if not math.isfinite(angle):
        raise InputError(f"{where}: the image affine is degenerate (zero, non-finite or singular "
                         f"voxel axes): {np.round(image.affine, 4).tolist()}")
    if angle > MAX_OBLIQUITY_DEG:
        raise InputError(f"{where}: the slices are oblique by {angle:.0f}° to the anatomical axes; "
                         f"the model was trained on axis-aligned crops and accepts at most "
                         f"{MAX_OBLIQUITY_DEG:.0f}° — reformat the series to axial/coronal/sagittal first")
    ratio = np.asarray(image.spacing) / np.asarray(prep.spacing)
    if np.any(ratio > MAX_UPSAMPLING):
        raise InputError(f"{where}: voxel spacing {np.round(image.spacing, 3).tolist()} mm is too "
                         f"coarse for this model, trained at {list(prep.spacing)} mm (at most "
                         f"{MAX_UPSAMPLING:g}× coarser per axis is accepted); use a thinner-slice series")
    values = np.asarray(image.array)
    if not np.isfinite(values.astype(np.float32)).all():
        raise InputError(f"{where}: the image holds NaN or infinite voxels")
    sample = values.ravel()[:: max(1, values.size // 200_000)]
    if np.unique(sample).size < MIN_GREY_LEVELS:
        raise InputError(f"{where}: the image has only {np.unique(sample).size} distinct intensities; "
                         "expected a T1CE MR image (is a mask or label map passed as --image?)")


def prepare_case(image_path, mask_path, mask_labels: Sequence[int | str] | None,
                 prep: Preprocessing) -> CaseInput:
    """Read, check, resample, normalise and crop one case (see the module docstring).

    mask_labels: the lesion's codes in a label mask, or its ROI names in an RTSTRUCT (segment
    numbers or labels in a DICOM-SEG); empty = every non-zero value.
    """
    image = load_volume(image_path)
    mask, codes = load_mask(mask_path, list(mask_labels or []), image)
    mismatch = geometry_mismatch(image, mask)
    if mismatch:
        raise InputError(f"{mask_path}: {mismatch}; the mask must be drawn on the image's voxel grid")
    check_image_setting(image, prep)
    labels = list(codes)
    lesion_native = lesion_mask(mask, labels)
    if not lesion_native.any():
        present = sorted(int(v) for v in np.unique(np.asarray(mask.array)) if v != 0)[:20]
        raise InputError(f"{mask_path}: no voxel has the lesion label(s) {labels or 'non-zero'}; "
                         f"the mask holds the values {present}")
    resampled = resample(image, prep.spacing, mode="bilinear")
    try:
        norm = normalise(resampled.array, prep.normalisation.get("method", "zscore_foreground"),
                         prep.normalisation.get("clip_percentiles", (0.5, 99.5)))
    except InputError as exc:
        raise InputError(f"{image_path}: the intensity normalisation of the model "
                         f"({prep.normalisation.get('method')}) cannot be applied: {exc}") from None
    mask_resampled = resample(mask, prep.spacing, mode="nearest")
    lesion = lesion_mask(mask_resampled, labels)
    if not lesion.any():
        raise InputError(f"{mask_path}: the lesion vanishes when resampled to {list(prep.spacing)} mm "
                         f"(it has {int(lesion_native.sum())} voxel(s) at the stored spacing)")
    voxels = np.argwhere(lesion)
    start = _crop_start(voxels.mean(axis=0), prep.crop_size)
    size = np.asarray(prep.crop_size)
    inside = bool((voxels.min(0) >= start).all() and (voxels.max(0) < start + size).all())
    crop = np.stack([crop_with_padding(norm, start, size, float(norm.min())),
                     crop_with_padding(lesion.astype(np.float32), start, size, 0.0)]).astype(np.float32)
    from ..explain.geometry import crop_affine

    return CaseInput(crop=crop, crop_affine=crop_affine(resampled.affine, start),
                     spacing=tuple(float(s) for s in prep.spacing), image=image,
                     lesion=lesion_native,
                     lesion_volume_ml=float(lesion_native.sum() * np.prod(image.spacing) / 1000.0),
                     lesion_inside_crop=inside)


def parse_clinical(pairs: Sequence[str], spec: Mapping[str, str],
                   categories: Mapping[str, Sequence[str]], model: str) -> tuple[pd.DataFrame | None, list[str]]:
    """``["age=61", "sex=F"]`` → (one-row frame of the model's clinical columns, imputed columns).

    Columns the user leaves out are imputed by the model's preprocessing (median / "missing"),
    and listed as imputed. Returns (None, []) for a model without clinical inputs.
    """
    if not spec:
        if pairs:
            raise InputError(f"model {model} uses no clinical data; drop --clinical "
                             f"({', '.join(pairs)}) or choose a model with clinical inputs")
        return None, []
    values: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key:
            raise InputError(f"--clinical {pair!r}: expected key=value, e.g. age=61")
        if key not in spec:
            raise InputError(f"--clinical {key}: model {model} has no clinical column {key!r}; "
                             f"its columns are {', '.join(f'{c} ({t})' for c, t in spec.items())}")
        if spec[key] == "numeric":
            try:
                number = float(raw)
            except ValueError:
                raise InputError(f"--clinical {key}={raw!r}: {key} is numeric; give a number, "
                                 f"e.g. {key}=60") from None
            if not math.isfinite(number):
                raise InputError(f"--clinical {key}={raw!r}: {key} must be a finite number")
            values[key] = number
        else:
            accepted = list(categories.get(key, []))
            if accepted and raw not in accepted:
                raise InputError(f"--clinical {key}={raw!r}: unknown category for {key}; the model "
                                 f"was trained on {', '.join(repr(a) for a in accepted)}")
            values[key] = raw
    imputed = [c for c in spec if c not in values]
    frame = pd.DataFrame([{c: values.get(c, np.nan) for c in spec}])
    return frame, imputed

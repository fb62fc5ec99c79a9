"""One new case brought to the training setting, or refused with a message that says why.

Image and mask go the road every case goes (:mod:`rn_classifier.data.crop`: read by
:mod:`rn_classifier.data.readers` — NIfTI, NRRD, MHA, DICOM; reoriented to RAS —, resampled to
the run's voxel spacing, normalised with the run's intensity normalisation and cropped around
the lesion centroid at the model's crop size, in the cache's float16): the crop the fine-tuning
evaluation used (the centre of the lesion-centred cache crop).

Refused, each with one :class:`~rn_classifier.errors.InputError`:

* spacing: a voxel axis more than :data:`MAX_UPSAMPLING` times coarser than the training
  spacing (e.g. 10 mm slices for a 2 mm model: most of the crop would be interpolated);
* orientation: a voxel axis more than :data:`MAX_OBLIQUITY_DEG` degrees off its nearest
  anatomical axis (the model saw axis-aligned crops) or a degenerate affine;
* contrast: an image without a usable foreground for the normalisation (constant, all zero,
  NaN) or with too few grey levels to be an MR image (e.g. a label map passed as the image);
* mask: geometry different from the image's, a requested label it lacks, or no lesion voxel;
* clinical values: an unknown key, a non-number for a numeric column, a category the model
  never saw in training (the accepted ones are listed, with their coding where it is MOLAB's).

Warned about (``CaseInput.warnings``): a voxel axis more than :data:`COARSE_WARNING` times
coarser than the training spacing (brain1's 6.5 mm slices for a 2 mm model: 3.25×), which is
accepted but mostly interpolated along that axis.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..data.crop import model_input, read_case
from ..data.ingest import Volume
from ..errors import InputError
from ..models.bundle import Preprocessing

MAX_UPSAMPLING = 4.0          # stored spacing / training spacing, per axis
COARSE_WARNING = 2.0          # above this (and up to MAX_UPSAMPLING): accepted with a warning
MAX_OBLIQUITY_DEG = 30.0
MIN_GREY_LEVELS = 16
# how MOLAB's spreadsheet codes its categorical columns (configs/data/molab_columns.yaml), for
# a message when a user gives the word instead of the code (--clinical sex=F)
MOLAB_CODINGS = {"sex": "1 = F, 2 = M", "steroids": "0 = no, 1 = yes",
                 "primary": "1 breast, 2 NSCLC, 3 SCLC, 4 melanoma, 5 kidney, 6 colon, 7 bladder, "
                            "8 unknown, 9 ovary, 10 pharynx, 11 bone sarcoma, 12 uterus"}


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
    warnings: tuple[str, ...] = ()


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
    sample = values.ravel()[:: max(1, values.size // 200_000)]
    if np.unique(sample).size < MIN_GREY_LEVELS:
        raise InputError(f"{where}: the image has only {np.unique(sample).size} distinct intensities; "
                         "expected a T1CE MR image (is a mask or label map passed as --image?)")


def spacing_warnings(image: Volume, prep: Preprocessing) -> list[str]:
    """One line per voxel axis more than :data:`COARSE_WARNING` times coarser than training."""
    ratio = np.asarray(image.spacing) / np.asarray(prep.spacing)
    return [f"{image.path}: voxel axis {axis} is {image.spacing[axis]:.3g} mm, {ratio[axis]:.2f}× the "
            f"training spacing {prep.spacing[axis]:g} mm: the crop is mostly interpolated along it, "
            "a thinner-slice series predicts more reliably"
            for axis in range(3) if COARSE_WARNING < ratio[axis] <= MAX_UPSAMPLING]


def prepare_case(image_path, mask_path, mask_labels: Sequence[int | str] | None,
                 prep: Preprocessing) -> CaseInput:
    """Read, check, resample, normalise and crop one case (see the module docstring): the road
    of :mod:`rn_classifier.data.crop` that preprocessing takes, with the checks of a new case."""
    case = read_case(image_path, mask_path, list(mask_labels or []))
    check_image_setting(case.image, prep)
    if not case.mask.lesion.any():
        raise InputError(f"{mask_path}: no voxel has the lesion label(s) "
                         f"{list(case.mask.labels) or 'non-zero'}; the mask holds the values "
                         f"{list(case.mask.present)[:20]}")
    crop, placed = model_input(case, prep.crop_setting)
    return CaseInput(crop=crop, crop_affine=placed.affine, spacing=tuple(float(s) for s in prep.spacing),
                     image=case.image, lesion=case.mask.lesion, lesion_volume_ml=case.lesion_volume_ml,
                     lesion_inside_crop=bool(placed.lesion_inside_crop),
                     warnings=tuple(spacing_warnings(case.image, prep)))


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
                coding = MOLAB_CODINGS.get(key)
                hint = (f"; these are MOLAB's codes ({coding}, configs/data/molab_columns.yaml): give the "
                        f"code, e.g. {key}={accepted[0]}" if coding else "")
                raise InputError(f"--clinical {key}={raw!r}: unknown category for {key}; the model "
                                 f"was trained on {', '.join(repr(a) for a in accepted)}{hint}")
            values[key] = raw
    imputed = [c for c in spec if c not in values]
    frame = pd.DataFrame([{c: values.get(c, np.nan) for c in spec}])
    return frame, imputed

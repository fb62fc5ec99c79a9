"""``predict``: a trained model on one new case → probability, fold spread, decision, attention.

Writes into ``out``::

    prediction.json          probability of radiation necrosis (mean of the fold models), fold
                             probabilities and their spread, the frozen threshold and where it
                             came from, the decision, model name / version, synthetic flag,
                             attention focus numbers, P under alternative contours and their
                             spread (``contour``), the label-free shift check (``shift``)
    attention.nii.gz         last-layer class-token attention (head mean, fold mean) on the
                             image's stored voxel grid and affine (opens aligned in 3D Slicer)
    attention_rollout.nii.gz attention rollout, same grid
    attention_heads.nii.gz   last-layer class-token attention of each head (4th axis), same grid
    attention.png            axial / coronal / sagittal overlays through the lesion, mask contour

Every output is computed before anything is written, and each file is written atomically, with
``prediction.json`` last; a refused input writes nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING
from pathlib import Path

import numpy as np

from .. import __version__, atomic
from ..errors import InputError
from ..models.bundle import ModelBundle
from ..stats.borderline import threshold_in_spread
from .inputs import CaseInput, parse_clinical, prepare_case
from .model import frozen_threshold, load_model

if TYPE_CHECKING:                      # the contour stage (scipy) is imported when it runs
    from .contour_spread import RaterMasks

FORMAT = "rn-classifier/prediction"
VERSION = 1
SYNTHETIC_WARNING = ("MODEL TRAINED ON SYNTHETIC DATA: a software demonstration, not a clinical "
                     "prediction")
RESEARCH_NOTE = "Research software; not a medical device. Positive class: 1 = radiation necrosis."


def _decision(prob: float, threshold: float) -> str:
    return "radiation necrosis" if prob >= threshold else "tumour progression"


def predict_case(model_dir: str | os.PathLike, image: str | os.PathLike, mask: str | os.PathLike,
                 out: str | os.PathLike, mask_labels: Sequence[int] | None = None,
                 clinical: Sequence[str] = (), stats: str | os.PathLike | None = None,
                 run: ModelBundle | None = None, rater_masks: RaterMasks = (),
                 contour: bool = True, shift: str | os.PathLike | None = None) -> dict:
    """Predict one case with the model in ``model_dir`` (a model bundle, or a fine-tuning run
    folder and its bundle); write the outputs to ``out``.

    mask_labels: mask values forming the lesion (MOLAB: 11, 12); empty = every non-zero value.
    clinical: ``key=value`` strings for models with clinical inputs.
    stats: a ``stats.json`` whose frozen threshold to use (default: the study's, else the run's
        bundle's, see :func:`~rn_classifier.predict.model.frozen_threshold`).
    run: an already loaded :class:`~rn_classifier.models.bundle.ModelBundle` (reused across
        calls, e.g. in a benchmark).
    rater_masks: other raters' masks of this lesion (same labels), predicted next to the drawn one:
        files (named by file name) or ``{manifest column: file}`` (named by column);
    contour: also predict under alternative contours (:mod:`.contour_spread`);
    shift: a ``shift.json`` whose internal range the case is checked against (default: the one
        the bundle records, else the study's shift/shift.json above it, :mod:`.shift_flag`).
    Returns the content of ``prediction.json``.
    """
    started = time.perf_counter()
    run = run or load_model(model_dir)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder")
    frame, imputed = parse_clinical(list(clinical), run.clinical_spec, run.clinical_categories(), run.name)
    threshold = frozen_threshold(run, stats)
    prep = run.preprocessing
    case = prepare_case(image, mask, mask_labels, prep) if run.uses_images else None
    result = run.predict(case.crop if case else None, frame, with_attention=True)
    prob = float(result.probs.mean())
    files, attention = ({}, {"available": False}) if not result.maps else \
        attention_outputs(run, case, result.maps, image, prob)
    prediction = {
        "format": FORMAT, "version": VERSION,
        "synthetic_model": run.synthetic,
        **({"warning": SYNTHETIC_WARNING} if run.synthetic else {}),
        "note": RESEARCH_NOTE,
        "model": {"name": run.name, "kind": run.kind, "run": run.run_name, "n_folds": run.n_folds,
                  "rn_classifier_version": __version__,
                  "trained_with_git_sha": run.provenance.get("git_sha"),
                  "trained_on": run.provenance.get("date")},
        "input": ({"image": Path(image).name, "mask": Path(mask).name,
                   "mask_labels": list(mask_labels or []) or "all non-zero",
                   "stored_spacing_mm": [round(s, 4) for s in case.image.spacing],
                   "model_spacing_mm": list(prep.spacing), "crop_size": list(prep.crop_size),
                   "lesion_volume_ml": round(case.lesion_volume_ml, 3),
                   "lesion_inside_crop": case.lesion_inside_crop} if case is not None else
                  {"note": f"{run.name} is the clinical-only model: the image was not used"}),
        "clinical": ({"given": {k: (v if isinstance(v, str) else float(v))
                                for k, v in frame.iloc[0].items() if k not in imputed},
                      "imputed_by_model": imputed} if frame is not None else None),
        "probability_rn": prob,
        "fold_probabilities": [float(p) for p in result.probs],
        "fold_spread_sd": float(np.std(result.probs)),
        "fold_range": [float(result.probs.min()), float(result.probs.max())],
        "threshold": threshold,
        "decision": _decision(prob, threshold["value"]),
        # the fold models would call it either way: a decision to weigh, not to read flatly
        "borderline": threshold_in_spread(result.probs, threshold["value"]),
        "attention": attention,
    }
    if case is not None:
        from .contour_spread import contour_section
        from .shift_flag import shift_section

        if contour or rater_masks:
            prediction["contour"] = contour_section(run, case, frame, rater_masks=rater_masks,
                                                    mask_labels=mask_labels, drawn_prob=prob)
        prediction["shift"] = shift_section(case, shift, run, model_dir)
    warnings = list(case.warnings) if case is not None else []
    if case is not None and not case.lesion_inside_crop:
        warnings.append(f"the lesion extends beyond the {list(prep.crop_size)}-voxel crop "
                        "the model sees; only its central part was used")
    if warnings:
        prediction["warnings"] = warnings
    from ..explain.geometry import save_map_nifti

    for name, payload in files.items():
        if isinstance(payload, bytes):
            with atomic.atomic_path(out / name, suffix=".png") as tmp:
                tmp.write_bytes(payload)
        else:
            _, array, grid_, description = payload
            save_map_nifti(array, grid_, out / name, description)
    prediction["seconds"] = round(time.perf_counter() - started, 3)
    atomic.write_json(out / "prediction.json", prediction)
    return prediction


def attention_outputs(run: ModelBundle, case: CaseInput, fold_maps: list, image, prob: float
                      ) -> tuple[dict, dict]:
    """Fold-mean attention maps → (files to write, the ``attention`` part of prediction.json).

    Maps are upsampled from the patch grid to the crop, focus numbers are computed on the crop
    (training spacing), and the maps are sampled onto the grid the image file is stored on.
    """
    from ..explain.figures import overlay_png
    from ..explain.focus import attention_focus
    from ..explain.geometry import Grid, crop_to_grid, stored_grid, upsample_to_crop
    from ..explain.maps import AttentionMaps, map_description

    what = map_description((run.meta.get("architecture") or {}).get("pool", "cls"))
    maps = AttentionMaps.mean(fold_maps)
    crop_shape = case.crop.shape[1:]
    cls_crop = upsample_to_crop(maps.cls_mean, crop_shape)
    rollout_crop = upsample_to_crop(maps.rollout, crop_shape)
    heads_crop = [upsample_to_crop(h, crop_shape) for h in maps.cls_heads]
    lesion_crop = case.crop[1] > 0.5
    ras = Grid(case.image.shape, case.image.affine)          # the grid the image was read into
    grid = stored_grid(image, fallback=ras)                   # the grid the file is stored on
    title = (f"{run.name}: P(RN) = {prob:.2f}; {what}, mean of {len(fold_maps)} "
             "fold models" + (" — SYNTHETIC-TRAINED MODEL" if run.synthetic else ""))
    files = {
        "attention.png": overlay_png(case.image.array, crop_to_grid(cls_crop, case.crop_affine, ras),
                                     case.lesion, case.image.spacing,
                                     np.argwhere(case.lesion).mean(axis=0), title),
        "attention.nii.gz": ("map", crop_to_grid(cls_crop, case.crop_affine, grid), grid,
                             f"rn-classifier {run.name} CLS attention"),
        "attention_rollout.nii.gz": ("map", crop_to_grid(rollout_crop, case.crop_affine, grid), grid,
                                     f"rn-classifier {run.name} attention rollout"),
        "attention_heads.nii.gz": ("map", np.stack([crop_to_grid(h, case.crop_affine, grid)
                                                    for h in heads_crop], axis=-1), grid,
                                   f"rn-classifier {run.name} CLS attention per head (4th axis)"),
    }
    peak = np.unravel_index(int(np.argmax(cls_crop)), cls_crop.shape)
    attention = {
        "available": True,
        "map": f"{what}, mean over heads and fold models",
        "focus": attention_focus(cls_crop, lesion_crop, case.spacing),
        "focus_rollout": attention_focus(rollout_crop, lesion_crop, case.spacing),
        "focus_per_head": [attention_focus(h, lesion_crop, case.spacing)["in_mask"] for h in heads_crop],
        "peak_world_ras_mm": [round(float(v), 2) for v in
                              case.crop_affine[:3, :3] @ np.asarray(peak, float) + case.crop_affine[:3, 3]],
        "files": {"cls": "attention.nii.gz", "rollout": "attention_rollout.nii.gz",
                  "cls_per_head": "attention_heads.nii.gz", "overlay": "attention.png"},
    }
    return files, attention

"""The study's contour stage: each image model's held-out predictions under alternative contours.

For every case of the internal test set and the external cohort, the drawn lesion and its
alternatives (:mod:`rn_classifier.data.contour_variants`: erode / dilate, boundary jitter, other
raters' masks from ``mask_<rater>`` columns) go through the one crop road at each model's
training setting, and every fold model predicts; the mean is the case's P(RN) under that contour.
Written as ``contour/contour_predictions.csv`` (:mod:`rn_classifier.stats.contour`), which the
compare stage and the report read next to the predictions files.

Out-of-fold cases are left out: their prediction comes from the one fold model that did not see
them, and a fold's spread over contours would not be comparable with the ensemble's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.contour_variants import (ContourVariantConfig, contour_variants, rater_columns,
                                     rater_lesions, variant_inputs)
from ..stats.contour import ORIGINAL

CONTOUR_FILE = "contour_predictions.csv"


def _clinical_frame(row: dict, spec: dict) -> pd.DataFrame | None:
    if not spec:
        return None
    values = {}
    for column, kind in spec.items():
        value = row.get(column)
        if kind == "numeric":
            value = pd.to_numeric(value, errors="coerce")
        else:
            value = np.nan if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
        values[column] = value
    return pd.DataFrame([values])


def case_contours(row: dict, base: Path, cfg: ContourVariantConfig, raters: list[str]):
    """(the case as read, {variant name: lesion on the image grid}) for one manifest row."""
    from ..data.crop import read_case

    case = read_case(row["image_path"], row["mask_path"], row["mask_labels"])
    lesions = {ORIGINAL: case.mask.lesion}
    lesions.update(contour_variants(case.mask.lesion, case.image.spacing, cfg, str(row["case_id"])))
    if cfg.raters and raters:
        lesions.update(rater_lesions(case, row, raters, base))
    return case, lesions


def predict_contours(runs: dict[str, object], cohorts: dict[str, tuple[pd.DataFrame, Path]],
                     cfg: ContourVariantConfig, echo: Callable[[str], None] = print) -> pd.DataFrame:
    """Contour predictions rows of every (image) model on every case of ``cohorts``.

    runs: model name -> a loaded :class:`~rn_classifier.models.bundle.ModelBundle` (any
    object with ``preprocessing``, ``clinical_spec`` and ``predict(crop, clinical, with_attention)``);
    cohorts: cohort name -> (manifest rows as :func:`~rn_classifier.data.manifest.load_manifest`
    returns them, the folder the manifest's relative paths start from).
    """
    rows = []
    for cohort, (manifest, base) in cohorts.items():
        raters = rater_columns(list(manifest.columns))
        for record in manifest.to_dict("records"):
            case, lesions = case_contours(record, base, cfg, raters)
            inputs_by_setting: dict = {}
            for model, run in runs.items():
                setting = run.preprocessing.crop_setting
                if setting not in inputs_by_setting:
                    inputs_by_setting[setting] = variant_inputs(case, setting, lesions)
                clinical = _clinical_frame(record, run.clinical_spec)
                for variant, x in inputs_by_setting[setting].items():
                    probs = run.predict(x, clinical, with_attention=False).probs
                    rows.append({"model": model, "case_id": str(record["case_id"]),
                                 "patient_id": str(record["patient_id"]), "cohort": cohort,
                                 "y_true": int(record["label"]), "variant": variant,
                                 "y_prob": float(np.mean(probs)),
                                 "synthetic": bool(record.get("synthetic", 0) in (1, "1", True))})
        echo(f"  {cohort}: {len(manifest)} cases x {len(runs)} model(s) under alternative contours")
    return pd.DataFrame(rows)

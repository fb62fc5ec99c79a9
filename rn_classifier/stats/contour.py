"""Contour variability at the cohort level, from a contour predictions file.

A contour predictions CSV has one row per case, model and contour:
``model, case_id, patient_id, cohort, y_true, variant, y_prob[, synthetic]``; ``variant`` is
``original`` for the drawn contour and the name of an alternative otherwise (``erode``,
``dilate``, ``jitter0``, …, ``rater:mask_rater2``; :mod:`rn_classifier.data.contour_variants`),
``y_prob`` the mean of the fold models' P(RN) under that contour.

From it: per case the contour spread ``y_contour_std`` (population SD of P(RN) over every
contour of the case, the original included, as the fold spread ``y_std`` is over folds), merged
into the predictions table so the uncertainty table, the referral curve and the report treat it
like the fold spread; and per model and cohort the AUC under each contour (DeLong CI), on the
cases that have that contour (an erosion can vanish on a tiny lesion; a rater may not have
contoured every case).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataIntegrityError, InputError

CONTOUR_COLUMNS = ("model", "case_id", "patient_id", "cohort", "y_true", "variant", "y_prob")
ORIGINAL = "original"


def read_contour_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """Read and check a contour predictions CSV; every problem is listed once."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: contour predictions file not found")
    frame = pd.read_csv(path, dtype={"model": str, "case_id": str, "patient_id": str,
                                     "cohort": str, "variant": str})
    missing = [c for c in CONTOUR_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}; a contour predictions "
                         f"file needs {', '.join(CONTOUR_COLUMNS)}")
    problems = []
    y_prob = pd.to_numeric(frame["y_prob"], errors="coerce")
    bad = ~(y_prob.between(0, 1))
    if bad.any():
        problems.append(f"y_prob must be a probability in [0, 1]: lines "
                        f"{', '.join(str(i + 2) for i in np.flatnonzero(bad)[:10])}")
    duplicated = frame.duplicated(["model", "cohort", "case_id", "variant"])
    if duplicated.any():
        problems.append("a (model, cohort, case, variant) is listed more than once: "
                        + ", ".join(frame.loc[duplicated, "case_id"].astype(str).head(10)))
    originals = frame[frame["variant"] == ORIGINAL].set_index(["model", "cohort", "case_id"]).index
    without = frame.set_index(["model", "cohort", "case_id"]).index.difference(originals)
    if len(without):
        problems.append(f"case(s) without an '{ORIGINAL}' row (the drawn contour): "
                        + ", ".join(f"{m}/{c}/{k}" for m, c, k in list(without)[:10]))
    if problems:
        raise DataIntegrityError(str(path), problems)
    frame["y_prob"] = y_prob.astype(float)
    frame["y_true"] = pd.to_numeric(frame["y_true"]).astype(int)
    return frame


def contour_spread(contour: pd.DataFrame) -> pd.DataFrame:
    """Per model, cohort and case: ``y_contour_std`` and ``n_contours``."""
    grouped = contour.groupby(["model", "cohort", "case_id"])["y_prob"]
    return pd.DataFrame({"y_contour_std": grouped.agg(lambda p: float(np.std(p))),
                         "n_contours": grouped.size()}).reset_index()


def add_contour_spread(predictions: pd.DataFrame, contour: pd.DataFrame | None) -> pd.DataFrame:
    """``predictions`` (a checked predictions table) with ``y_contour_std`` filled from ``contour``
    where the case has contour predictions (NaN elsewhere: oof, non-image models)."""
    if contour is None:
        return predictions
    spread = contour_spread(contour).set_index(["model", "cohort", "case_id"])["y_contour_std"]
    keys = pd.MultiIndex.from_frame(predictions[["model", "cohort", "case_id"]])
    out = predictions.copy()
    out["y_contour_std"] = spread.reindex(keys).to_numpy(float)
    return out


def auc_by_variant(contour: pd.DataFrame, conf_level: float = 0.95) -> dict:
    """``{model: {cohort: {variant: {"auc", "auc_ci", "n_cases", "n_positive"}}}}``; AUC None
    where the cases of a contour hold one class only."""
    from .delong import auc_delong

    out: dict = {}
    for (model, cohort), part in contour.groupby(["model", "cohort"], sort=False):
        variants = [ORIGINAL] + sorted(set(part["variant"]) - {ORIGINAL})
        entry = {}
        for variant in variants:
            rows = part[part["variant"] == variant].sort_values("case_id")
            y = rows["y_true"].to_numpy(int)
            summary = {"n_cases": int(y.size), "n_positive": int(y.sum()), "auc": None, "auc_ci": None}
            if 0 < y.sum() < y.size:
                result = auc_delong(y, rows["y_prob"].to_numpy(float), conf_level=conf_level)
                summary.update(auc=float(result.auc), auc_ci=[max(0.0, float(result.ci[0])),
                                                              min(1.0, float(result.ci[1]))])
            entry[variant] = summary
        out.setdefault(model, {})[cohort] = entry
    return out

"""The predictions file (seam 2): one row per case per model.

``model, case_id, patient_id, cohort, fold, y_true, y_prob[, y_std], synthetic`` with
``cohort`` ∈ {``oof``, ``internal_test``, ``external``}. ``oof`` rows are out-of-fold
predictions on the training part (``fold`` = the fold the case was validated in);
``internal_test`` and ``external`` rows come from the ensemble of fold models (``fold`` = -1,
``y_std`` = spread across folds). Every model writes this file and the statistics and report
stages read only this file, so adding a model never touches the statistics code.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import atomic
from .errors import InputError

PREDICTION_COLUMNS = ("model", "case_id", "patient_id", "cohort", "fold", "y_true", "y_prob")
OPTIONAL_COLUMNS = ("y_std", "synthetic")
COHORTS = ("oof", "internal_test", "external")


def validate_predictions(df: pd.DataFrame, source: str = "predictions") -> pd.DataFrame:
    """Check columns, cohorts, labels and probabilities; return a clean copy."""
    missing = [c for c in PREDICTION_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{source}: missing column(s) {missing}; expected {list(PREDICTION_COLUMNS)}")
    out = df.copy()
    bad_cohort = sorted(set(out["cohort"]) - set(COHORTS))
    if bad_cohort:
        raise InputError(f"{source}: cohort must be one of {list(COHORTS)}, got {bad_cohort}")
    prob = pd.to_numeric(out["y_prob"], errors="coerce")
    bad = ~np.isfinite(prob.to_numpy(dtype=float)) | (prob < 0).to_numpy() | (prob > 1).to_numpy()
    if bad.any():
        rows = out.loc[bad, "case_id"].tolist()[:10]
        raise InputError(f"{source}: y_prob must be a finite probability in [0, 1]; bad for cases {rows}")
    y = pd.to_numeric(out["y_true"], errors="coerce")
    bad_y = ~y.isin([0, 1])
    if bad_y.any():
        raise InputError(f"{source}: y_true must be 0 or 1; bad for cases "
                         f"{out.loc[bad_y, 'case_id'].tolist()[:10]}")
    dup = out.duplicated(subset=["model", "cohort", "case_id"], keep=False)
    if dup.any():
        raise InputError(f"{source}: case(s) {out.loc[dup, 'case_id'].unique().tolist()[:10]} appear "
                         "twice for the same model and cohort")
    out["y_true"] = y.astype(int)
    out["y_prob"] = prob.astype(float)
    out["fold"] = pd.to_numeric(out["fold"], errors="coerce").fillna(-1).astype(int)
    return out


def write_predictions(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Validate and write a predictions file atomically."""
    clean = validate_predictions(df, source=str(path))
    cols = list(PREDICTION_COLUMNS) + [c for c in OPTIONAL_COLUMNS if c in clean.columns]
    return atomic.write_csv(path, clean[cols])


def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"predictions file {path} does not exist")
    df = pd.read_csv(path, dtype={"model": str, "case_id": str, "patient_id": str, "cohort": str})
    return validate_predictions(df, source=str(path))

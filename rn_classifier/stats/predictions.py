"""Reading and checking predictions files (seam 2), and lining models up case by case.

A predictions CSV has one row per case per model:
``model, case_id, patient_id, cohort, fold, y_true, y_prob[, y_std][, y_contour_std][, synthetic]`` with
``cohort`` in {oof, internal_test, external}: ``oof`` = out-of-fold predictions of the
cross-validation on the training part (internal), ``internal_test`` = the held-out same-centre
test set, ``external`` = the second centre. Several files (one per model, or one per run) are
read together. Every problem of every file is collected and reported once
(:class:`~rn_classifier.errors.DataIntegrityError`) before any statistic is computed.

Paired tests need the same cases for every model of a cohort: :func:`cohort_table` refuses to
inner-join — a case missing from one model's predictions is an error listing the case ids, and
so is a case whose label or patient differs between two models' files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataIntegrityError, InputError

REQUIRED_COLUMNS = ("model", "case_id", "patient_id", "cohort", "fold", "y_true", "y_prob")
SPREAD_COLUMNS = ("y_std", "y_contour_std")   # per-case uncertainties (stats.uncertainty)
OPTIONAL_COLUMNS = (*SPREAD_COLUMNS, "synthetic")
COHORTS = ("oof", "internal_test", "external")
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}
_MAX_LISTED = 10


def _some(values: Sequence) -> str:
    values = [str(v) for v in values]
    more = f" … and {len(values) - _MAX_LISTED} more" if len(values) > _MAX_LISTED else ""
    return ", ".join(values[:_MAX_LISTED]) + more


def _parse_bool(series: pd.Series) -> pd.Series:
    """Map true/false, 1/0, yes/no (any case) to bool; anything else to NA."""
    text = series.astype(str).str.strip().str.lower()
    return text.map(lambda v: True if v in _TRUE else (False if v in _FALSE else pd.NA))


def _read_one(path: Path, problems: list[str]) -> pd.DataFrame | None:
    if not path.is_file():
        problems.append(f"{path}: file not found")
        return None
    try:
        frame = pd.read_csv(path, dtype={"model": str, "case_id": str, "patient_id": str,
                                         "cohort": str}, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: not a readable CSV ({exc})")
        return None
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        problems.append(f"{path}: missing column(s) {', '.join(missing)}; a predictions file "
                        f"needs {', '.join(REQUIRED_COLUMNS)}")
        return None
    if frame.empty:
        problems.append(f"{path}: no rows")
        return None
    frame = frame.copy()
    frame["source"] = str(path)
    frame["row"] = np.arange(len(frame)) + 2       # line number in the file (header = 1)
    return frame


def _check_rows(frame: pd.DataFrame, path: str, problems: list[str]) -> None:
    """Per-row checks of one file; appends one problem per kind with the offending case ids."""
    def report(mask: pd.Series, what: str) -> None:
        if mask.any():
            bad = frame.loc[mask]
            ids = [f"{c} (line {r})" for c, r in zip(bad["case_id"], bad["row"])]
            problems.append(f"{path}: {what}: {_some(ids)}")

    for column in ("model", "case_id", "patient_id", "cohort"):
        report(frame[column].isna() | (frame[column].astype(str).str.strip() == ""),
               f"empty {column}")
    report(~frame["cohort"].isin(COHORTS) & frame["cohort"].notna(),
           f"cohort must be one of {', '.join(COHORTS)}")
    y_true = pd.to_numeric(frame["y_true"], errors="coerce")
    report(~y_true.isin([0, 1]), "y_true must be 0 or 1 (a label is needed for every case)")
    y_prob = pd.to_numeric(frame["y_prob"], errors="coerce")
    finite = np.isfinite(y_prob.to_numpy(float, na_value=np.nan))
    report(~finite, "y_prob is missing, NaN or infinite")
    report(finite & ((y_prob < 0) | (y_prob > 1)), "y_prob must be a probability in [0, 1]")
    for column in SPREAD_COLUMNS:
        if column not in frame.columns:
            continue
        spread = pd.to_numeric(frame[column], errors="coerce")
        given = frame[column].notna()
        report(given & ~(np.isfinite(spread.to_numpy(float, na_value=np.nan)) & (spread >= 0)),
               f"{column} must be empty or a finite number >= 0")
    if "synthetic" in frame.columns:
        report(_parse_bool(frame["synthetic"]).isna(), "synthetic must be true/false (or 1/0)")


def read_predictions(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Read and check one or more predictions CSVs; return them stacked.

    Returns columns ``model, case_id, patient_id, cohort, fold, y_true (int), y_prob (float),
    y_std and y_contour_std (float, NaN where absent), synthetic (bool or NA where absent), source, row``.
    Raises DataIntegrityError listing every problem of every file (bad labels, non-finite or
    out-of-range probabilities, unknown cohorts, a case listed twice for one model and cohort).
    """
    if not paths:
        raise InputError("no predictions files given")
    problems: list[str] = []
    frames = []
    for path in paths:
        frame = _read_one(Path(path), problems)
        if frame is not None:
            _check_rows(frame, str(path), problems)
            frames.append(frame)
    if problems:
        raise DataIntegrityError("predictions", problems)
    table = pd.concat(frames, ignore_index=True)
    for column in ("model", "case_id", "patient_id", "cohort"):
        table[column] = table[column].astype(str).str.strip()
    table["y_true"] = pd.to_numeric(table["y_true"]).astype(int)
    table["y_prob"] = pd.to_numeric(table["y_prob"]).astype(float)
    for column in SPREAD_COLUMNS:
        table[column] = (pd.to_numeric(table[column], errors="coerce").astype(float)
                         if column in table.columns else math.nan)
    table["synthetic"] = (_parse_bool(table["synthetic"]) if "synthetic" in table.columns
                          else pd.NA)
    duplicated = table.duplicated(["model", "cohort", "case_id"], keep=False)
    if duplicated.any():
        dups = table.loc[duplicated]
        for (model, cohort), group in dups.groupby(["model", "cohort"], sort=True):
            where = sorted({f"{c} ({s}:{r})" for c, s, r in
                            zip(group["case_id"], group["source"], group["row"])})
            problems.append(f"model {model}, cohort {cohort}: case(s) listed more than once: "
                            f"{_some(where)}")
        raise DataIntegrityError("predictions", problems)
    return table


def synthetic_flag(table: pd.DataFrame) -> bool | None:
    """True if any row is marked synthetic, False if all are marked real, None if unmarked."""
    marks = table["synthetic"].dropna()
    if marks.empty:
        return None
    return bool(marks.astype(bool).any())


@dataclass(frozen=True)
class CohortTable:
    """The models of one cohort lined up on the same cases (sorted by case id).

    case_ids, patient_ids, y_true: (N,); y_prob: (K, N), row k = models[k];
    spreads: column of :data:`SPREAD_COLUMNS` -> (K, N), NaN where the file had none.
    """

    cohort: str
    models: tuple[str, ...]
    case_ids: np.ndarray
    patient_ids: np.ndarray
    y_true: np.ndarray
    y_prob: np.ndarray
    spreads: dict[str, np.ndarray]

    @property
    def y_std(self) -> np.ndarray:
        """(K, N) fold spread, NaN where the file had none."""
        return self.spreads["y_std"]


def cohort_table(table: pd.DataFrame, cohort: str, models: Sequence[str]) -> CohortTable:
    """Line up ``models`` on the cases of ``cohort``; never a silent inner join.

    Raises DataIntegrityError if a model lacks cases another model has (ids listed per model),
    or if two models' files disagree on a case's y_true or patient_id.
    """
    rows = table[(table["cohort"] == cohort) & table["model"].isin(models)]
    all_cases = sorted(set(rows["case_id"]))
    problems: list[str] = []
    by_model = {m: rows[rows["model"] == m].set_index("case_id") for m in models}
    for model, frame in by_model.items():
        missing = sorted(set(all_cases) - set(frame.index))
        if missing:
            problems.append(f"model {model} has no {cohort} prediction for case(s) "
                            f"{_some(missing)} that other models have; a paired comparison "
                            "needs the same cases for every model")
    if problems:
        raise DataIntegrityError(f"predictions, cohort {cohort}", problems)
    aligned = {m: f.loc[all_cases] for m, f in by_model.items()}
    first = aligned[models[0]]
    for model in models[1:]:
        for column in ("y_true", "patient_id"):
            differs = first[column].to_numpy() != aligned[model][column].to_numpy()
            if differs.any():
                ids = np.asarray(all_cases)[differs]
                problems.append(f"{column} differs between models {models[0]} and {model} for "
                                f"case(s) {_some(ids)}")
    if problems:
        raise DataIntegrityError(f"predictions, cohort {cohort}", problems)
    return CohortTable(
        cohort=cohort, models=tuple(models), case_ids=np.asarray(all_cases),
        patient_ids=first["patient_id"].to_numpy(str), y_true=first["y_true"].to_numpy(int),
        y_prob=np.vstack([aligned[m]["y_prob"].to_numpy(float) for m in models]),
        spreads={c: np.vstack([aligned[m][c].to_numpy(float) for m in models])
                 for c in SPREAD_COLUMNS})

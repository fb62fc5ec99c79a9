"""Patient-level split of the internal cohort, shared by every model.

20 % of the patients are held out as the internal test; the remaining patients are divided
into k cross-validation folds. Both steps are stratified by label and grouped by patient
(scikit-learn ``StratifiedGroupKFold``), so a patient's lesions and time points never fall on
two sides. The split is saved once in the run folder (``split.csv``) and every model (SSL ViT,
supervised ViT, radiomics, clinical) reads the same file, so all models see the same cases.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from .. import atomic
from ..errors import InputError

SPLIT_COLUMNS = ("case_id", "patient_id", "part", "fold")
PARTS = ("train", "internal_test")


def _class_counts(labels) -> str:
    labels = np.asarray(labels)
    return f"{int((labels == 1).sum())} radiation necrosis (1), {int((labels == 0).sum())} progression (0)"


def make_split(manifest: pd.DataFrame, test_fraction: float = 0.2, n_folds: int = 5,
               seed: int = 0, keys: tuple[str, str] = ("cv.test_fraction", "cv.n_folds")) -> pd.DataFrame:
    """Split labelled cases by patient: internal test + ``n_folds`` CV folds on the rest.

    Returns a DataFrame with columns ``case_id, patient_id, part, fold`` (fold = -1 for the
    internal test). Unlabeled rows are ignored. ``keys``: how the caller names the test
    fraction and the number of folds (``--test-fraction`` / ``--folds`` on the command line),
    so an error says what to change.
    """
    fraction_key, folds_key = keys
    if not 0.0 <= test_fraction < 1.0:
        raise InputError(f"{fraction_key} must be in [0, 1), got {test_fraction}")
    if n_folds < 2:
        raise InputError(f"{folds_key} must be at least 2, got {n_folds}")
    df = manifest[manifest["label"].notna()].reset_index(drop=True)
    y = df["label"].astype(int).to_numpy()
    groups = df["patient_id"].astype(str).to_numpy()
    if len(np.unique(y)) < 2:
        raise InputError(f"the internal cohort needs both classes to be split, found {_class_counts(y)}")
    n_patients = len(np.unique(groups))
    n_holdout_splits = int(round(1.0 / test_fraction)) if test_fraction > 0 else 0
    if test_fraction > 0 and n_holdout_splits < 2:
        raise InputError(f"{fraction_key} must be at most 0.5 (the internal test is "
                         f"1 / round(1 / fraction) of the patients), got {test_fraction}")
    too_few = (f"{n_patients} patients are too few for {n_folds} folds plus an internal test set of "
               f"{test_fraction:.0%}: use fewer folds ({folds_key}), a larger test fraction "
               f"({fraction_key}, at most 0.5: fewer, larger parts) or more patients")
    if n_patients < max(n_holdout_splits, n_folds + (1 if test_fraction > 0 else 0)):
        raise InputError(too_few)
    try:
        return _stratified_group_split(df, y, groups, n_holdout_splits, n_folds, seed)
    except ValueError as exc:  # sklearn: a fold would hold no patient
        raise InputError(f"{too_few} (scikit-learn: {exc})") from exc


def _stratified_group_split(df, y, groups, n_holdout_splits: int, n_folds: int, seed: int) -> pd.DataFrame:
    part = np.full(len(df), "train", dtype=object)
    if n_holdout_splits:
        outer = StratifiedGroupKFold(n_splits=n_holdout_splits, shuffle=True, random_state=seed)
        _, test_idx = next(outer.split(np.zeros(len(df)), y, groups))
        part[test_idx] = "internal_test"
    fold = np.full(len(df), -1, dtype=int)
    train_idx = np.flatnonzero(part == "train")
    inner = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, val) in enumerate(inner.split(np.zeros(len(train_idx)), y[train_idx],
                                             groups[train_idx])):
        fold[train_idx[val]] = k
    split = pd.DataFrame({"case_id": df["case_id"].astype(str), "patient_id": groups,
                          "part": part, "fold": fold})
    check_split(split, labels=pd.Series(y, index=split["case_id"]))
    return split


def check_split(split: pd.DataFrame, labels: pd.Series | None = None) -> None:
    """No patient on two sides; every fold and the training part hold both classes."""
    side = split["part"].where(split["part"] == "internal_test", "fold" + split["fold"].astype(str))
    sides_per_patient = side.groupby(split["patient_id"]).nunique()
    leaking = sides_per_patient[sides_per_patient > 1].index.tolist()
    if leaking:
        raise InputError(f"split puts patient(s) {leaking[:10]} on more than one side "
                         "(internal test / folds); splits must be by patient")
    if labels is None:
        return
    y = labels.reindex(split["case_id"]).to_numpy()
    train = split["part"].to_numpy() == "train"
    if len(np.unique(y[train])) < 2:
        raise InputError(f"the training part holds one class only: {_class_counts(y[train])}")
    for k in sorted(split.loc[train, "fold"].unique()):
        in_fold = split["fold"].to_numpy() == k
        if len(np.unique(y[in_fold])) < 2:
            raise InputError(f"fold {k} holds one class only: {_class_counts(y[in_fold])}; "
                             "use fewer folds or another split seed")


def save_split(split: pd.DataFrame, path: str | os.PathLike) -> Path:
    return atomic.write_csv(path, split[list(SPLIT_COLUMNS)])


def load_split(path: str | os.PathLike, manifest: pd.DataFrame | None = None) -> pd.DataFrame:
    """Read ``split.csv``; with ``manifest``, check it covers exactly its labelled cases."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"split file {path} does not exist")
    split = pd.read_csv(path, dtype={"case_id": str, "patient_id": str, "part": str})
    missing = [c for c in SPLIT_COLUMNS if c not in split.columns]
    if missing:
        raise InputError(f"split file {path}: missing column(s) {missing}; expected {list(SPLIT_COLUMNS)}")
    bad_parts = sorted(set(split["part"]) - set(PARTS))
    if bad_parts:
        raise InputError(f"split file {path}: part must be one of {list(PARTS)}, got {bad_parts}")
    if manifest is not None:
        labelled = manifest[manifest["label"].notna()]
        want, have = set(labelled["case_id"].astype(str)), set(split["case_id"])
        if want != have:
            raise InputError(
                f"split file {path} does not match the manifest: cases missing from the split "
                f"{sorted(want - have)[:10]}, cases not in the manifest {sorted(have - want)[:10]}")
        check_split(split, labels=labelled.set_index(labelled["case_id"].astype(str))["label"].astype(int))
    return split

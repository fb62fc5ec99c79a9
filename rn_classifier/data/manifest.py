"""The cohort manifest (seam 1): one row per lesion at one time point (a "case").

Columns: ``case_id, patient_id, center, image, mask, mask_labels, label, synthetic`` and the
clinical columns declared in a config. ``image``/``mask`` are paths relative to the manifest
file; ``mask_labels`` lists, separated by ``;``, the mask values that make up this lesion
(MOLAB codes lesion·10 + segment: ``11;12`` = lesion 1 enhancing + necrotic), or, when the mask
is an RTSTRUCT or DICOM-SEG, its ROI names / segment numbers or labels (``GTV_1;GTV_2``); ``label`` is
1 = radiation necrosis, 0 = progression, empty for unlabeled cases.

:func:`load_manifest` checks the table itself (columns, ids, labels, declared clinical types);
:mod:`rn_classifier.data.check` opens the images and masks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from .. import atomic
from ..errors import DataIntegrityError, InputError
from .contour_variants import rater_columns
from .dicom_rt import dicom_mask_kind

MANIFEST_VERSION = 1
REQUIRED_COLUMNS = ("case_id", "patient_id", "center", "image", "mask", "mask_labels", "label")
# a manifest without a mask column (an unlabeled pool) may leave these out; they read as empty
POOL_OPTIONAL_COLUMNS = ("mask", "mask_labels", "label")
CLINICAL_TYPES = ("numeric", "categorical")
# columns the importers write beside the required ones that are not clinical variables
BOOKKEEPING_COLUMNS = ("synthetic", "timepoint", "lesion", "image_path", "mask_path")


def undeclared_clinical_columns(df: pd.DataFrame) -> list[str]:
    """The manifest's columns that can only be clinical variables (no config declares them);
    other raters' masks (``mask_<rater>``) are contours, not clinical values."""
    raters = set(rater_columns(list(df.columns)))
    return [c for c in df.columns if c not in REQUIRED_COLUMNS and c not in BOOKKEEPING_COLUMNS
            and c not in raters]
MASK_LABEL_SEP = ";"


def format_mask_labels(labels) -> str:
    return MASK_LABEL_SEP.join(str(v) if isinstance(v, str) else str(int(v)) for v in labels)


def parse_mask_labels(value, case_id: str = "?", names: bool = False) -> tuple[int | str, ...]:
    """``"11;12"`` → ``(11, 12)``; empty → ``()``.

    names: the mask is an RTSTRUCT / DICOM-SEG, whose lesions are named (``"GTV_1;GTV_2"`` →
    ``("GTV_1", "GTV_2")``); whole numbers stay integers (segment numbers), and ``,`` may be
    part of a name.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == "":
        return ()
    text = str(value) if names else str(value).replace(",", MASK_LABEL_SEP)
    out: list[int | str] = []
    for part in (p.strip() for p in text.split(MASK_LABEL_SEP)):
        if not part:
            continue
        if names:
            out.append(int(part) if part.isdigit() else part)
            continue
        try:
            number = float(part)
        except ValueError:
            raise InputError(f"case {case_id}: mask_labels must be integers separated by "
                             f"'{MASK_LABEL_SEP}', got {value!r} (names are lesion ROIs / segments "
                             "of an RTSTRUCT or DICOM-SEG mask only)") from None
        if not np.isfinite(number) or number != int(number) or number <= 0:
            raise InputError(f"case {case_id}: mask_labels must be positive integers, got {value!r}")
        out.append(int(number))
    return tuple(out)


def with_absolute_paths(manifest: str | os.PathLike) -> pd.DataFrame:
    """The manifest as written (strings), its image / mask paths made absolute (a manifest's paths
    are relative to the file), so the rows can be written into a manifest elsewhere."""
    manifest = Path(manifest)
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    for column in ("image", "mask"):
        if column in df.columns:
            df[column] = [str((manifest.parent / p).resolve()) if p and not Path(p).is_absolute() else p
                          for p in df[column]]
    return df


def validate_clinical_spec(spec: Mapping[str, str] | None) -> dict[str, str]:
    spec = dict(spec or {})
    bad = {k: v for k, v in spec.items() if v not in CLINICAL_TYPES}
    if bad:
        raise InputError(f"clinical column types must be one of {list(CLINICAL_TYPES)}, got {bad}")
    return spec


def csv_separator(path: Path) -> str:
    """``,`` or ``;`` (as Excel writes CSV where ``,`` is the decimal mark): the one the header
    line is split by."""
    with open(path, encoding="utf-8", errors="replace") as f:
        header = f.readline()
    return ";" if header.count(";") > header.count(",") else ","


def read_csv_table(path: Path, what: str, **kwargs) -> pd.DataFrame:
    """A CSV the user wrote, ``,``- or ``;``-separated (then ``,`` is the decimal mark); a folder
    or an unreadable file is one InputError naming ``what`` and the path."""
    if path.is_dir():
        csvs = sorted(str(p.relative_to(path)) for p in [*path.glob("*.csv"), *path.glob("*/*.csv")])[:5]
        raise InputError(f"{what} {path} is a folder; pass the CSV file itself"
                         + (f" (it holds {csvs})" if csvs else ""))
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist")
    sep = csv_separator(path)
    try:
        return pd.read_csv(path, sep=sep, decimal="," if sep == ";" else ".", **kwargs)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{what} {path}: not a readable CSV ({exc})") from exc


def load_manifest(path: str | os.PathLike, clinical: Mapping[str, str] | None = None,
                  require_labels: bool = False, collect: list[str] | None = None) -> pd.DataFrame:
    """Read and validate a manifest CSV.

    Returns a DataFrame with the manifest's columns plus ``image_path`` / ``mask_path``
    (absolute), ``mask_labels`` parsed to tuples of int and ``label`` as nullable ``Int64``.
    Every problem in the table is collected, then one :class:`DataIntegrityError` lists them.

    clinical: ``{column: "numeric" | "categorical"}``: these columns must exist; numeric ones
        must parse as numbers (empty = missing is allowed: imputation happens later).
    require_labels: every case must have a label (fine-tuning cohorts).
    collect: when given, problems are appended to this list instead of raised, and the frame
        is returned as far as it could be parsed (``check-data`` lists them with file problems).
    """
    path = Path(path)
    df = read_csv_table(path, "manifest", dtype={"case_id": str, "patient_id": str, "center": str,
                                                  "image": str, "mask": str, "mask_labels": str},
                        keep_default_na=True)
    if "mask" not in df.columns:        # an unlabeled pool: no masks, no labels (README)
        for col in POOL_OPTIONAL_COLUMNS:
            if col not in df.columns:
                df[col] = pd.Series([np.nan] * len(df), dtype=object)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        found = list(df.columns)[:8]
        raise InputError(f"manifest {path}: missing column(s) {missing}; expected at least "
                         f"{list(REQUIRED_COLUMNS)} in the header line, found {found} (the header is "
                         "split by ',' or ';')")
    spec = validate_clinical_spec(clinical)
    missing_clin = [c for c in spec if c not in df.columns]
    if missing_clin:
        raise InputError(f"manifest {path}: clinical column(s) {missing_clin} named in the config "
                         f"are missing; the manifest has {list(df.columns)}")
    problems: list[str] = []
    if df.empty:
        raise InputError(f"manifest {path} holds no cases")
    for col in ("case_id", "patient_id", "image"):
        empty = df[col].isna() | (df[col].astype(str).str.strip() == "")
        for i in np.flatnonzero(empty.to_numpy()):
            problems.append(f"row {i + 2}: '{col}' is empty")
    dup = df["case_id"][df["case_id"].duplicated(keep=False)].dropna().unique()
    for cid in dup:
        problems.append(f"case {cid}: case_id appears more than once (expected unique ids)")

    labels = pd.to_numeric(df["label"], errors="coerce")
    non_numeric = df["label"].notna() & labels.isna()
    bad_value = labels.notna() & ~labels.isin([0, 1])
    for i in np.flatnonzero((non_numeric | bad_value).to_numpy()):
        problems.append(f"case {df['case_id'].iloc[i]}: label must be 1 (radiation necrosis), "
                        f"0 (progression) or empty, got {str(df['label'].iloc[i])!r}")
    if require_labels:
        for i in np.flatnonzero(df["label"].isna().to_numpy()):
            problems.append(f"case {df['case_id'].iloc[i]}: label is empty (a labelled cohort "
                            "is required here)")

    for col, kind in spec.items():
        if kind == "numeric":
            num = pd.to_numeric(df[col], errors="coerce")
            bad = df[col].notna() & num.isna()
            for i in np.flatnonzero(bad.to_numpy()):
                problems.append(f"case {df['case_id'].iloc[i]}: clinical column '{col}' is "
                                f"numeric but holds {df[col].iloc[i]!r}")
    parsed = []
    base = path.resolve().parent
    for cid, value, mask in zip(df["case_id"], df["mask_labels"], df["mask"]):
        named = isinstance(mask, str) and bool(mask.strip()) and dicom_mask_kind(base / mask) is not None
        try:
            parsed.append(parse_mask_labels(value, cid, names=named))
        except InputError as exc:
            problems.append(str(exc))
            parsed.append(())
    if problems and collect is None:
        raise DataIntegrityError(f"manifest {path}", problems)
    if collect is not None:
        collect.extend(problems)

    out = df.copy()
    out["label"] = labels.astype("Int64")
    out["mask_labels"] = parsed
    for col, kind in spec.items():
        if kind == "numeric":
            out[col] = pd.to_numeric(out[col], errors="coerce")
        else:
            out[col] = out[col].map(lambda v: v if pd.isna(v) else str(v).removesuffix(".0"))
    out["image_path"] = [str((base / p).resolve()) for p in out["image"]]
    out["mask_path"] = [str((base / p).resolve()) if isinstance(p, str) and p.strip() else ""
                        for p in out["mask"].fillna("")]
    if "synthetic" not in out.columns:
        out["synthetic"] = 0
    out["synthetic"] = pd.to_numeric(out["synthetic"], errors="coerce").fillna(0).astype(int)
    out.attrs["manifest_path"] = str(path.resolve())
    return out


def write_manifest(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a manifest with ``image``/``mask`` relative to the manifest's folder."""
    path = Path(path)
    out = df.drop(columns=[c for c in ("image_path", "mask_path") if c in df.columns]).copy()
    out["mask_labels"] = [v if isinstance(v, str) else format_mask_labels(v)
                          for v in out["mask_labels"]]
    ordered = [c for c in REQUIRED_COLUMNS] + (["synthetic"] if "synthetic" in out.columns else [])
    out = out[ordered + [c for c in out.columns if c not in ordered]]
    return atomic.write_csv(path, out)


def check_disjoint_ids(internal: pd.DataFrame, external: pd.DataFrame) -> None:
    """Internal and external cohorts must not share case or patient ids."""
    problems = []
    for col in ("case_id", "patient_id"):
        shared = sorted(set(internal[col]) & set(external[col]))
        if shared:
            problems.append(f"{col}s present in both internal and external cohorts: "
                            f"{shared[:10]}{' ...' if len(shared) > 10 else ''}")
    if problems:
        raise DataIntegrityError("internal vs external manifest", problems)


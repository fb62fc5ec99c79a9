"""Import a MOLAB-style tree (OpenBTAI-METS, Ocaña-Tienda et al., Sci Data 2023) into a manifest.

Layout read: ``ROOT/<patient>/<patient>/NIFTI/<patient>_<timepoint>_img.nii[.gz]`` with
``<patient>_<timepoint>_msk.nii[.gz]`` beside it. A mask voxel holds lesion·10 + segment
(segment 1 = contrast-enhancing, 2 = necrosis; 11, 12 are lesion 1, 21, 22 lesion 2). One case
is one lesion at one time point; its ``mask_labels`` are the codes of that lesion present in
the mask.

Labels come from a CSV the user supplies: ``patient, timepoint, lesion, label`` (label 1 / RN
/ radiation necrosis, or 0 / progression / PD; an empty timepoint applies the label to every
time point of that lesion). Clinical variables come from the spreadsheet, whose multi-row
header is not documented: columns are taken by position through a column map
(``configs/data/molab_columns.yaml``).

Every problem in the tree, the labels and the spreadsheet is collected and reported at once.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataIntegrityError, InputError
from .manifest import format_mask_labels, read_csv_table, write_manifest
from .readers import read_image

IMAGE_RE = re.compile(r"^(?P<stem>.+)_img\.nii(\.gz)?$")
LABEL_WORDS = {"1": 1, "rn": 1, "radiation necrosis": 1, "necrosis": 1,
               "0": 0, "progression": 0, "pd": 0, "tumour progression": 0, "tumor progression": 0}


@dataclass
class ColumnMap:
    """Positions (0-based) of the spreadsheet's columns below ``header_rows`` header rows."""

    header_rows: int = 2
    patient_id: int = 0
    lesion: int = 4
    columns: dict[str, int] = field(default_factory=lambda: {"age": 1, "sex": 2, "gpa": 3, "primary": 5})
    types: dict[str, str] = field(default_factory=lambda: {"age": "numeric", "sex": "categorical",
                                                           "gpa": "numeric", "primary": "categorical"})


def load_column_map(path: str | os.PathLike | None) -> ColumnMap:
    from ..config import load_config

    return load_config(ColumnMap, path) if path else ColumnMap()


def _split_stem(stem: str) -> tuple[str, str]:
    if "_" not in stem:
        raise ValueError(stem)
    patient, timepoint = stem.rsplit("_", 1)
    return patient, timepoint


def find_studies(root: Path) -> tuple[list[dict], list[str]]:
    """Every (patient, timepoint, image, mask) in the tree, and the problems found."""
    studies, problems = [], []
    images = sorted(root.glob("*/*/NIFTI/*_img.nii*"))
    if not images:
        raise InputError(f"{root}: no images found; expected the MOLAB layout "
                         "ROOT/<patient>/<patient>/NIFTI/<patient>_<timepoint>_img.nii")
    for img in images:
        m = IMAGE_RE.match(img.name)
        if not m:
            continue
        try:
            patient, timepoint = _split_stem(m.group("stem"))
        except ValueError:
            problems.append(f"{img}: file name should be <patient>_<timepoint>_img.nii")
            continue
        if img.parent.parent.name != patient:
            problems.append(f"{img}: patient '{patient}' in the file name differs from its folder "
                            f"'{img.parent.parent.name}'")
            continue
        mask = None
        for suffix in (".nii", ".nii.gz"):
            cand = img.with_name(f"{m.group('stem')}_msk{suffix}")
            if cand.exists():
                mask = cand
        if mask is None:
            problems.append(f"{img}: image has no mask beside it (expected "
                            f"{m.group('stem')}_msk.nii or .nii.gz)")
            continue
        studies.append({"patient": patient, "timepoint": timepoint, "image": img, "mask": mask})
    return studies, problems


def _parse_label(value) -> int | None:
    if pd.isna(value):
        return None
    key = str(value).strip().lower().removesuffix(".0")
    return LABEL_WORDS.get(key, -1)


def read_labels(path: Path) -> tuple[pd.DataFrame, list[str]]:
    df = read_csv_table(Path(path), "labels file", dtype=str)
    df.columns = [c.strip().lower() for c in df.columns]
    need = ["patient", "timepoint", "lesion", "label"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise InputError(f"labels file {path}: missing column(s) {missing}; expected {need}")
    problems = []
    df["label_value"] = [_parse_label(v) for v in df["label"]]
    for i, row in df.iterrows():
        if row["label_value"] == -1:
            problems.append(f"labels file {path}, row {i + 2} ({row['patient']}, lesion "
                            f"{row['lesion']}): label must be 1/RN or 0/progression, got {row['label']!r}")
        try:
            int(float(row["lesion"]))
        except (TypeError, ValueError):
            problems.append(f"labels file {path}, row {i + 2}: lesion must be an integer, got {row['lesion']!r}")
    df["timepoint"] = df["timepoint"].fillna("")
    return df, problems


def _is_lesion_number(value) -> bool:
    """A whole number (``2``, ``2.0``, ``"2"``): what a lesion ID cell holds."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return False
    try:
        number = float(str(value).strip())
    except ValueError:
        return False
    return np.isfinite(number) and number == int(number)


def _empty(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == ""


def _header_rows_found(raw: pd.DataFrame, cmap: ColumnMap) -> int:
    """Rows above the first row that holds a patient ID and a lesion number: the header."""
    for i in range(len(raw)):
        if not _empty(raw.iat[i, cmap.patient_id]) and _is_lesion_number(raw.iat[i, cmap.lesion]):
            return i
    return len(raw)


def _row_problems(data: pd.DataFrame, cmap: ColumnMap, first_row: int) -> list[str]:
    """Data rows that would be dropped without a word: no patient ID, or no lesion number."""
    problems = []
    for i in range(len(data)):
        row = data.iloc[i]
        number = first_row + i + 1          # the spreadsheet's row number (1-based)
        patient, lesion = row.iloc[cmap.patient_id], row.iloc[cmap.lesion]
        values = [row.iloc[p] for p in cmap.columns.values() if not _empty(row.iloc[p])]
        if _empty(patient) and (values or not _empty(lesion)):
            problems.append(f"row {number}: clinical values {values[:4]} but no patient ID in column "
                            f"{cmap.patient_id} (merged cells?); fill in the patient ID")
        elif not _empty(patient) and not _is_lesion_number(lesion):
            problems.append(f"row {number} (patient {str(patient).strip()}): lesion column {cmap.lesion} "
                            f"holds {lesion!r}, expected a whole lesion number")
    return problems


def read_clinical(path: Path, cmap: ColumnMap) -> pd.DataFrame:
    """The spreadsheet as ``patient, lesion, <clinical columns>`` (``attrs["rows"]``: each
    row's spreadsheet row number) using the positional map.

    Nothing is dropped silently: a header that does not have the map's ``header_rows`` rows
    (a one-row header where MOLAB's has two would swallow the first patient row), a row
    without a patient ID or lesion number, two differing rows of one lesion, or text in a
    numeric column are listed in one :class:`DataIntegrityError`.
    """
    if not path.is_file():
        raise InputError(f"clinical spreadsheet {path} does not exist")
    try:
        raw = pd.read_excel(path, header=None, dtype=object)
    except Exception as exc:
        raise InputError(f"clinical spreadsheet {path}: cannot be read ({exc})") from exc
    positions = {"patient": cmap.patient_id, "lesion": cmap.lesion, **cmap.columns}
    too_far = {k: v for k, v in positions.items() if v >= raw.shape[1]}
    if too_far:
        raise InputError(f"clinical spreadsheet {path} has {raw.shape[1]} columns, but the column map "
                         f"asks for positions {too_far}; check the column map")
    for name in cmap.types:
        if name not in cmap.columns:
            raise InputError(f"column map: type given for '{name}', which has no position")
    where = (f"clinical spreadsheet {path} does not match the column map "
             f"(header_rows={cmap.header_rows}, positions {positions})")
    found = _header_rows_found(raw, cmap)
    if found == len(raw):
        raise DataIntegrityError(where, [f"no row holds a patient ID in column {cmap.patient_id} and a whole "
                                         f"lesion number in column {cmap.lesion} (first rows: "
                                         f"{[str(v) for v in raw.iloc[min(len(raw) - 1, cmap.header_rows)].tolist()[:6]]}); "
                                         "check the column map's positions"])
    if found != cmap.header_rows:
        first = [str(v) for v in raw.iloc[min(found, len(raw) - 1)].tolist()[:6]]
        effect = (f"the first {cmap.header_rows - found} patient row(s) would be read as header and lost"
                  if found < cmap.header_rows else f"{found - cmap.header_rows} header row(s) would be read as data")
        raise DataIntegrityError(where, [f"it has {found} header row(s) above the first row with a patient ID "
                                         f"and a lesion number (row {found + 1}: {first}), the column map "
                                         f"says header_rows={cmap.header_rows}: {effect}; set "
                                         f"`header_rows: {found}` in the column map (--columns)"])
    data = raw.iloc[cmap.header_rows:].reset_index(drop=True)
    problems = _row_problems(data, cmap, cmap.header_rows)
    out = pd.DataFrame({name: data.iloc[:, pos] for name, pos in positions.items()})
    out["row"] = np.arange(len(out)) + cmap.header_rows + 1
    out = out[out["patient"].map(lambda v: not _empty(v))].copy()
    out["patient"] = out["patient"].astype(str).str.strip()
    for name, kind in cmap.types.items():
        if kind == "numeric":
            num = pd.to_numeric(out[name], errors="coerce")
            bad = out[name].notna() & num.isna()
            for row, value in zip(out.loc[bad, "row"], out.loc[bad, name]):
                problems.append(f"row {row}: column {cmap.columns[name]} ('{name}', numeric) holds {value!r}")
            out[name] = num
        else:
            out[name] = out[name].map(lambda v: v if pd.isna(v) else str(v).strip().removesuffix(".0"))
    out["lesion"] = pd.to_numeric(out["lesion"], errors="coerce").astype("Int64")
    values = list(cmap.columns)
    for (patient, lesion), group in out[out["lesion"].notna()].groupby(["patient", "lesion"]):
        if len(group) > 1 and len(group[values].astype(str).drop_duplicates()) > 1:
            problems.append(f"rows {group['row'].tolist()}: patient {patient} lesion {lesion} appears more "
                            "than once with different values; keep one row per lesion")
    if problems:
        raise DataIntegrityError(where, problems)
    return out[out["lesion"].notna()].drop_duplicates(subset=["patient", "lesion"])


def _join_clinical(df: pd.DataFrame, clinical: pd.DataFrame, cmap: ColumnMap, path: Path,
                   root: Path) -> pd.DataFrame:
    """The cases with their spreadsheet row; what does not pair is listed, never dropped unsaid.

    ``attrs["cases_without_clinical_row"]``: case ids whose patient / lesion has no row (their
    clinical values stay empty, to be imputed); ``attrs["clinical_rows_without_case"]``:
    ``"row N: patient P lesion L"`` for rows that match no imported case (a lesion not in the
    tree, or one without a label).
    """
    clin = clinical.rename(columns={"patient": "patient_id"})
    joined = df.merge(clin.drop(columns="row"), on=["patient_id", "lesion"], how="left", indicator=True)
    without_row = joined.loc[joined["_merge"] == "left_only", "case_id"].tolist()
    if len(without_row) == len(joined):
        raise InputError(f"clinical spreadsheet {path}: no row matches any patient/lesion of {root}; "
                         f"check the column map (patient ID at position {cmap.patient_id}, lesion at "
                         f"{cmap.lesion})")
    cases = set(zip(df["patient_id"], df["lesion"].astype(int)))
    unmatched = [f"row {r}: patient {p} lesion {int(lesion)}"
                 for r, p, lesion in zip(clin["row"], clin["patient_id"], clin["lesion"])
                 if (p, int(lesion)) not in cases]
    joined = joined.drop(columns="_merge")
    joined.attrs["cases_without_clinical_row"] = without_row
    joined.attrs["clinical_rows_without_case"] = unmatched
    return joined


def import_warnings(df: pd.DataFrame, shown: int = 10) -> list[str]:
    """What an import left unpaired (``attrs`` of :func:`import_molab`), as terminal lines."""
    lines = []
    without, rows = df.attrs.get("cases_without_clinical_row", []), df.attrs.get("clinical_rows_without_case", [])
    if without:
        lines.append(f"{len(without)} case(s) have no row in the clinical spreadsheet, their clinical values "
                     f"are empty (imputed as missing): {', '.join(without[:shown])}"
                     + (" ..." if len(without) > shown else ""))
    if rows:
        lines.append(f"{len(rows)} clinical spreadsheet row(s) match no imported case (lesion not in the "
                     f"tree, or without a label): {'; '.join(rows[:shown])}" + (" ..." if len(rows) > shown else ""))
    return lines


def case_id(patient: str, timepoint: str, lesion: int) -> str:
    """The manifest case id of one lesion at one time point: ``<patient>_<timepoint>_L<lesion>``."""
    return f"{patient}_{timepoint}_L{lesion}"


def lesion_codes(mask_path: Path) -> dict[int, tuple[int, ...]]:
    """{lesion number: (codes present)} from a MOLAB-coded mask."""
    codes = [int(v) for v in np.unique(read_image(mask_path).array) if v > 0]
    lesions: dict[int, list[int]] = {}
    for code in codes:
        lesions.setdefault(code // 10, []).append(code)
    return {k: tuple(sorted(v)) for k, v in lesions.items()}


def import_molab(root: str | os.PathLike, labels_csv: str | os.PathLike,
                 clinical_xlsx: str | os.PathLike | None = None, center: str = "MOLAB",
                 out: str | os.PathLike = "manifest.csv", column_map: ColumnMap | str | None = None,
                 synthetic: bool = False) -> pd.DataFrame:
    """Build and write the manifest of a MOLAB tree; returns it.

    One row per labelled lesion per time point. Lesions present in the masks but absent from
    the labels file are left out (they cannot be used for fine-tuning) and counted in the
    returned frame's ``attrs["unlabelled_lesions"]``. With a spreadsheet, ``attrs`` also lists
    ``cases_without_clinical_row`` and ``clinical_rows_without_case`` (see :func:`_join_clinical`).
    """
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise InputError(f"MOLAB root {root} is not a folder")
    cmap = column_map if isinstance(column_map, ColumnMap) else load_column_map(column_map)
    studies, problems = find_studies(root)
    labels, label_problems = read_labels(Path(labels_csv))
    problems += label_problems
    clinical = read_clinical(Path(clinical_xlsx), cmap) if clinical_xlsx else None

    out.parent.mkdir(parents=True, exist_ok=True)
    base = out.parent.resolve()
    rows, unlabelled = [], 0
    found = set()
    for st in studies:
        try:
            codes = lesion_codes(st["mask"])
        except Exception as exc:
            problems.append(f"{st['mask']}: mask could not be read ({exc})")
            continue
        mine = labels[labels["patient"].str.strip() == st["patient"]]
        for lesion, lesion_codes_ in sorted(codes.items()):
            match = mine[(mine["lesion"].astype(float).astype(int) == lesion)
                         & mine["timepoint"].isin(["", st["timepoint"]])]
            if match.empty:
                unlabelled += 1
                continue
            found.add((st["patient"], st["timepoint"], lesion))
            found.add((st["patient"], "", lesion))
            rows.append({
                "case_id": case_id(st["patient"], st["timepoint"], lesion),
                "patient_id": st["patient"], "center": center,
                "image": os.path.relpath(st["image"].resolve(), base),
                "mask": os.path.relpath(st["mask"].resolve(), base),
                "mask_labels": format_mask_labels(lesion_codes_),
                "label": match["label_value"].iloc[0],
                "synthetic": int(bool(synthetic)),
                "timepoint": st["timepoint"], "lesion": lesion,
            })
    tree_keys = {(st["patient"], st["timepoint"]) for st in studies}
    tree_patients = {st["patient"] for st in studies}
    for _, lab in labels.iterrows():
        key = (lab["patient"].strip(), lab["timepoint"].strip(), int(float(lab["lesion"])))
        if key in found:
            continue
        if lab["timepoint"] and (key[0], key[1]) not in tree_keys:
            problems.append(f"labels file: {key[0]} time point {key[1]} has no image in {root}")
        elif key[0] not in tree_patients:
            problems.append(f"labels file: patient {key[0]} has no images in {root}")
        else:
            problems.append(f"labels file: {key[0]} lesion {key[2]} (time point "
                            f"{key[1] or 'any'}) has no codes {key[2] * 10 + 1}/{key[2] * 10 + 2} "
                            "in the mask")
    if problems:
        raise DataIntegrityError(f"MOLAB import of {root}", problems)
    if not rows:
        raise InputError(f"{root}: no labelled lesion found (labels file {labels_csv} matches no mask)")
    df = pd.DataFrame(rows)
    if clinical is not None:
        df = _join_clinical(df, clinical, cmap, Path(clinical_xlsx), root)
    write_manifest(df, out)
    df.attrs["unlabelled_lesions"] = unlabelled
    return df

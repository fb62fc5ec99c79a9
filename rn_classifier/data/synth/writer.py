"""Files of the synthetic cohort, written byte-for-byte reproducibly.

NIfTI images are gzip-compressed with a zero timestamp and no embedded file name, and the
clinical workbook is re-packed with fixed zip and document timestamps, so the same seed gives
identical files. Every file says it is synthetic: the NIfTI header ``descrip``, a
``synthetic`` column in each CSV, a note in the workbook and a README in the cohort folder.
"""

from __future__ import annotations

import datetime
import gzip
import io
import os
import re
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from ...atomic import atomic_path
from .clinical import SPREADSHEET_COLUMNS

DESCRIP = b"SYNTHETIC rn-classifier"
_FIXED_TIME = datetime.datetime(2000, 1, 1)


def write_nifti(path: str | os.PathLike, data: np.ndarray, affine: np.ndarray) -> Path:
    """Write an int16 RAS NIfTI-1 (``.nii.gz``) whose header says it is synthetic."""
    img = nib.Nifti1Image(np.asarray(data, np.int16), affine)
    hdr = img.header
    hdr["descrip"] = DESCRIP
    hdr.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    payload = gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)
    with atomic_path(path, suffix=".nii.gz") as tmp:
        tmp.write_bytes(payload)
    return Path(path)


def write_clinical_workbook(path: str | os.PathLike, rows: list[dict], note: str) -> Path:
    """The clinical spreadsheet: two header rows (group, name), one row per patient-lesion.

    rows: dicts with ``patient``, ``lesion`` and the clinical names of
    :data:`~rn_classifier.data.synth.clinical.SPREADSHEET_COLUMNS` (None = empty cell).
    """
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "Clinical"
    groups = [c.group for c in SPREADSHEET_COLUMNS]
    ws.append([g if i == 0 or groups[i - 1] != g else None for i, g in enumerate(groups)])
    ws.append([c.header for c in SPREADSHEET_COLUMNS])
    for row in rows:
        values = []
        for c in SPREADSHEET_COLUMNS:
            if c.name is None:
                values.append(row["patient"] if c.header.startswith("Patient") else row["lesion"])
            else:
                v = row.get(c.name)
                values.append(None if v is None or (isinstance(v, float) and np.isnan(v)) else v)
        ws.append(values)
    info = wb.create_sheet("README")
    for line in note.splitlines():
        info.append([line])
    wb.properties.title = "SYNTHETIC clinical data (rn-classifier)"
    wb.properties.description = note.splitlines()[0] if note else "SYNTHETIC"
    wb.properties.creator = "rn-classifier synth"
    wb.properties.created = _FIXED_TIME
    buffer = io.BytesIO()
    wb.save(buffer)
    with atomic_path(path, suffix=".xlsx") as tmp:
        tmp.write_bytes(_reproducible_zip(buffer.getvalue()))
    return Path(path)


def _reproducible_zip(data: bytes) -> bytes:
    """Re-pack an xlsx with fixed entry timestamps and a fixed document 'modified' time
    (openpyxl stamps the save time into both)."""
    stamp = _FIXED_TIME.strftime("%Y-%m-%dT%H:%M:%SZ")
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, \
            zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            content = src.read(item.filename)
            if item.filename == "docProps/core.xml":
                content = re.sub(rb"(<dcterms:(?:created|modified)[^>]*>)[^<]*(</dcterms:)",
                                 rb"\g<1>" + stamp.encode() + rb"\g<2>", content)
            info = zipfile.ZipInfo(item.filename, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = item.external_attr
            dst.writestr(info, content)
    return out.getvalue()


def write_labels(path: str | os.PathLike, rows: list[dict]) -> Path:
    """``patient, timepoint, lesion, label, synthetic`` (label 1 = RN, 0 = progression)."""
    from ...atomic import write_csv

    frame = pd.DataFrame(rows, columns=["patient", "timepoint", "lesion", "label"])
    frame["synthetic"] = 1
    return write_csv(path, frame)

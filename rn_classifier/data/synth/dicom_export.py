"""A synthetic centre as a treatment-planning system exports it: DICOM MR series + RTSTRUCT.

``synth --format dicom-rt`` renders the centre as usual (MOLAB NIfTI tree, imported by the MOLAB
importer), then rewrites every scan as ``dicom/<patient>/<YYYYMMDD>/MR/MR.NNNN.dcm`` (one axial
slice per file, the same int16 voxels and geometry) and ``dicom/<patient>/<YYYYMMDD>/RS.dcm``
with one ROI ``GTV_<lesion>`` per lesion (its enhancing and necrotic codes together), writes
``labels.csv`` as ``patient, study, roi, label`` + the clinical columns, and builds the manifest
with ``import-dicom`` — the route a planning export takes. The NIfTI tree and the MOLAB
spreadsheet are removed, so the study reads only DICOM. Time point ``tN`` is dated
2000-01-01 + 91 (N-1) days. Every file says SYNTHETIC (ImageComments, series description).
"""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from ...atomic import write_csv
from ..dicom_write import write_mr_series, write_rtstruct
from ..readers import read_image
from .writer import DESCRIP

NOTE = DESCRIP.decode()
MANIFEST_COLUMNS = ("case_id", "patient_id", "center", "image", "mask", "mask_labels", "label",
                    "synthetic", "timepoint", "lesion")


def study_date(timepoint: str) -> str:
    """``t1`` → ``20000101``, ``t2`` → 91 days later, ..."""
    index = int(str(timepoint).lstrip("t")) - 1
    return (datetime.date(2000, 1, 1) + datetime.timedelta(days=91 * index)).strftime("%Y%m%d")


def roi_name(lesion: int) -> str:
    return f"GTV_{int(lesion)}"


def write_scan(image_path: Path, mask_path: Path, lesions: dict[int, tuple[int, ...]], folder: Path,
               patient: str, date: str) -> None:
    """One scan (NIfTI image + MOLAB mask) as ``folder/MR/`` + ``folder/RS.dcm``."""
    image = read_image(image_path)
    mask = np.asarray(read_image(mask_path).array)
    key = f"{patient}/{date}"
    series = write_mr_series(image, folder / "MR", key=key, patient_id=patient, study_date=date,
                             description=f"{NOTE} T1 post-Gd", note=NOTE)
    rois = {roi_name(n): np.isin(mask, codes) for n, codes in sorted(lesions.items())}
    write_rtstruct(folder / "RS.dcm", rois, image, series, key=key, study_date=date,
                   label="SYNTHETIC lesions", note=NOTE)


def export_center(center_root: Path, manifest_path: Path, center: str) -> pd.DataFrame:
    """Rewrite the centre in ``center_root`` (``molab/``, ``clinical.xlsx``) as DICOM-RT and
    replace ``manifest_path`` with the manifest ``import-dicom`` makes of it; returns it."""
    from ..dicom_import import import_dicom
    from ..manifest import load_manifest

    manifest = load_manifest(manifest_path)
    scans = manifest.groupby(["patient_id", "timepoint"], sort=True)
    for (patient, timepoint), rows in scans:
        lesions = {int(r["lesion"]): tuple(r["mask_labels"]) for _, r in rows.iterrows()}
        write_scan(Path(rows["image_path"].iloc[0]), Path(rows["mask_path"].iloc[0]), lesions,
                   center_root / "dicom" / str(patient) / study_date(timepoint), str(patient),
                   study_date(timepoint))
    clinical = [c for c in manifest.columns if c not in MANIFEST_COLUMNS + ("image_path", "mask_path")]
    labels = pd.DataFrame({"patient": manifest["patient_id"],
                           "study": [study_date(t) for t in manifest["timepoint"]],
                           "roi": [roi_name(n) for n in manifest["lesion"]],
                           "label": manifest["label"].astype(int), **{c: manifest[c] for c in clinical},
                           "synthetic": 1})
    write_csv(center_root / "labels.csv", labels)
    shutil.rmtree(center_root / "molab")
    (center_root / "clinical.xlsx").unlink()
    return import_dicom(center_root / "dicom", center_root / "labels.csv", manifest_path, center=center,
                        synthetic=True)

"""DICOM files on disk: which objects a folder holds, and the one image series of a folder.

Headers are read with pydicom (pixel data skipped); the voxels of a series are read with
SimpleITK's GDCM series reader (:mod:`rn_classifier.data.ingest`), which orders the slices by
position. A folder given as an image must hold exactly one image series: planning-system
exports often put the MR series, the RTSTRUCT and a second series side by side, and reading
"the first series GDCM finds" would train on whichever comes first.

Objects are told apart by SOP Class UID (DICOM PS3.4 Annex B), not by file name: planning
systems name files ``RS.<uid>.dcm``, ``MR.<uid>.dcm``, ``IMG0001`` or nothing recognisable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
MR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.4"
# objects with pixel data that are not slices of an image series
NOT_IMAGE_SOP_CLASSES = {
    SEG_SOP_CLASS,
    "1.2.840.10008.5.1.4.1.1.481.2",   # RT Dose
    "1.2.840.10008.5.1.4.1.1.481.1",   # RT Image (portal images)
    "1.2.840.10008.5.1.4.1.1.66",      # Raw Data
}
HEADER_TAGS = ["SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID",
               "FrameOfReferenceUID", "PatientID", "StudyDate", "SeriesDescription", "Modality",
               "Rows", "Columns", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"]
# not DICOM: skipped without opening (a tree often holds NIfTI copies, reports, spreadsheets)
NOT_DICOM_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".csv", ".txt", ".json",
                      ".xlsx", ".xml", ".pdf", ".png", ".jpg", ".md", ".zip", ".gz", ".py")


@dataclass(frozen=True)
class DicomHeader:
    """What the project needs from one DICOM file's header."""

    path: Path
    sop_class: str
    sop_instance: str
    series: str
    study: str
    frame_of_reference: str
    patient_id: str
    study_date: str
    description: str
    has_pixels: bool
    # image plane (DICOM PS3.3 C.7.6.2): position of the first pixel, row / column direction
    # cosines, spacing between rows and between columns (mm); empty when the file has none
    position: tuple[float, ...] = ()
    orientation: tuple[float, ...] = ()
    pixel_spacing: tuple[float, ...] = ()

    @property
    def is_image(self) -> bool:
        return self.has_pixels and self.sop_class not in NOT_IMAGE_SOP_CLASSES


@dataclass(frozen=True)
class ImageSeries:
    """One image series: its files in GDCM's slice order and the UIDs masks are checked against."""

    folder: Path
    files: tuple[str, ...]
    series: str
    study: str
    frame_of_reference: str
    patient_id: str
    study_date: str
    description: str
    sop_instances: frozenset[str] = field(default_factory=frozenset)
    planes: dict[str, DicomHeader] = field(default_factory=dict)   # SOP instance → its header


def read_header(path: str | os.PathLike) -> DicomHeader | None:
    """The header of a DICOM file, or None when the file is not DICOM."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    p = Path(path)
    if p.name.lower().endswith(NOT_DICOM_SUFFIXES):
        return None
    try:
        ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=HEADER_TAGS)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError):
        return None
    if "SOPClassUID" not in ds:
        return None
    return DicomHeader(path=p, sop_class=str(ds.SOPClassUID), sop_instance=str(ds.get("SOPInstanceUID", "")),
                       series=str(ds.get("SeriesInstanceUID", "")), study=str(ds.get("StudyInstanceUID", "")),
                       frame_of_reference=str(ds.get("FrameOfReferenceUID", "")),
                       patient_id=str(ds.get("PatientID", "")), study_date=str(ds.get("StudyDate", "")),
                       description=str(ds.get("SeriesDescription", "")),
                       has_pixels="Rows" in ds and "Columns" in ds,
                       position=_floats(ds, "ImagePositionPatient"),
                       orientation=_floats(ds, "ImageOrientationPatient"),
                       pixel_spacing=_floats(ds, "PixelSpacing"))


def _floats(ds, keyword: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in ds.get(keyword, None) or ())
    except (TypeError, ValueError):
        return ()


def scan_folder(folder: str | os.PathLike, recursive: bool = False) -> list[DicomHeader]:
    """Headers of every DICOM file in ``folder`` (and below it when ``recursive``), sorted by path."""
    folder = Path(folder)
    paths = folder.rglob("*") if recursive else folder.iterdir()
    headers = (read_header(p) for p in sorted(paths) if p.is_file())
    return [h for h in headers if h is not None]


def image_series_of(headers: list[DicomHeader]) -> dict[str, list[DicomHeader]]:
    """{SeriesInstanceUID: its image files' headers} among ``headers``."""
    series: dict[str, list[DicomHeader]] = {}
    for h in headers:
        if h.is_image:
            series.setdefault(h.series, []).append(h)
    return series


def find_image_series(folder: str | os.PathLike) -> ImageSeries:
    """The one image series in ``folder`` (not its sub-folders); refused when there are none or several."""
    import SimpleITK as sitk

    folder = Path(folder)
    by_series = image_series_of(scan_folder(folder))
    if not by_series:
        raise InputError(f"{folder}: folder holds no DICOM series (no DICOM image file in it)")
    if len(by_series) > 1:
        listed = "; ".join(f"{uid} ({hs[0].description or hs[0].sop_class}, {len(hs)} files)"
                           for uid, hs in sorted(by_series.items()))
        raise InputError(f"{folder}: folder holds {len(by_series)} image series ({listed}); expected "
                         "exactly one: put each series in its own folder")
    (uid, headers), = by_series.items()
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
    if len(files) != len(headers):  # GDCM skips files it cannot order; read what pydicom found
        files = [str(h.path) for h in headers]
    first = headers[0]
    return ImageSeries(folder=folder, files=tuple(files), series=uid, study=first.study,
                       frame_of_reference=first.frame_of_reference, patient_id=first.patient_id,
                       study_date=first.study_date, description=first.description,
                       sop_instances=frozenset(h.sop_instance for h in headers),
                       planes={h.sop_instance: h for h in headers})

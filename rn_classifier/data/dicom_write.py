"""Write a volume as a DICOM MR series and its lesion masks as an RTSTRUCT (pydicom).

What a treatment-planning export holds, for the synthetic cohort's ``--format dicom-rt``: one
MR Image Storage file per axial slice (the volume's third voxel axis), and a structure set whose
ROIs are closed planar contours on those slices. Contours are traced with contourpy (marching
squares at level 0.5 of the binary slice), so each contour runs half-way between voxel centres
inside and outside the lesion, and a centre-inside-polygon reader gets the voxels back.

UIDs are derived from the caller's ``key`` (pydicom ``generate_uid`` with entropy sources), so a
seed gives the same files every time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .dicom_series import MR_SOP_CLASS, RTSTRUCT_SOP_CLASS
from .ingest import LPS_TO_RAS, Volume



@dataclass(frozen=True)
class WrittenSeries:
    """UIDs of a written series, what an RTSTRUCT drawn on it references."""

    folder: Path
    patient_id: str
    study: str
    series: str
    frame_of_reference: str
    sop_instances: tuple[str, ...]   # one per slice, slice k = voxel index k along the third axis


def _uid(key: str, part: str) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[key, part])


def _ds(value: float) -> str:
    """A decimal string (at most 16 characters) with as many digits as fit: geometry written with
    fewer moves the voxel grid by ~1e-7 mm, enough to change a resampled grid's size."""
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(value))


def _file_dataset(sop_class: str, sop_instance: str):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    return ds


def _patient_study(ds, patient_id: str, study: str, study_date: str, note: str) -> None:
    ds.PatientID = patient_id
    ds.PatientName = f"{patient_id}^"       # family name only (PS3.5 6.2.1.2)
    ds.StudyInstanceUID = study
    ds.StudyDate, ds.StudyTime = study_date, "000000"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    if note:
        ds.ImageComments = note


def lps_geometry(volume: Volume) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unit direction (3, 3) columns = voxel axes in LPS, spacing (3,), origin LPS (3,))."""
    lps = LPS_TO_RAS @ volume.affine
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    return lps[:3, :3] / spacing[None, :], spacing, lps[:3, 3]


def write_mr_series(volume: Volume, folder: str | os.PathLike, *, key: str, patient_id: str,
                    study_date: str = "20000101", description: str = "T1 post-Gd",
                    note: str = "") -> WrittenSeries:
    """One MR Image Storage file per slice of ``volume`` (int16 voxels) into ``folder``.

    key: makes the UIDs (the same key gives the same UIDs); note: written as ImageComments
    (the synthetic cohort says SYNTHETIC there).
    """
    array = np.asarray(volume.array)
    if not np.issubdtype(array.dtype, np.integer) or array.min() < -32768 or array.max() > 32767:
        raise InputError(f"{volume.path or 'volume'}: DICOM export writes int16 voxels; got {array.dtype} "
                         f"in [{array.min()}, {array.max()}]")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    direction, spacing, _ = lps_geometry(volume)
    study, series, frame = (_uid(key, p) for p in ("study", "series", "frame"))
    instances = []
    for k in range(array.shape[2]):
        sop = _uid(key, f"slice{k}")
        ds = _file_dataset(MR_SOP_CLASS, sop)
        _patient_study(ds, patient_id, study, study_date, note)
        ds.Modality = "MR"
        ds.SeriesInstanceUID = series
        ds.SeriesNumber = 1
        ds.SeriesDescription = description
        ds.FrameOfReferenceUID = frame
        ds.PositionReferenceIndicator = ""
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds(v) for v in (LPS_TO_RAS @ np.r_[volume.voxel_to_world((0, 0, k)), 1])[:3]]
        ds.ImageOrientationPatient = [_ds(v) for v in np.r_[direction[:, 0], direction[:, 1]]]
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]   # between rows, between columns
        ds.SliceThickness = _ds(spacing[2])
        ds.SpacingBetweenSlices = _ds(spacing[2])
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "GR", "SP", "", "3D"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = array.shape[1], array.shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.ascontiguousarray(array[:, :, k].T.astype("<i2")).tobytes()
        ds.save_as(folder / f"MR.{k + 1:04d}.dcm", enforce_file_format=True)
        instances.append(sop)
    return WrittenSeries(folder, patient_id, study, series, frame, tuple(instances))


def slice_contours(inside: np.ndarray) -> list[np.ndarray]:
    """Closed contours (voxel index (i, j) vertices) of a boolean slice, by marching squares."""
    from contourpy import LineType, contour_generator

    padded = np.pad(inside.astype(np.float64), 1).T          # z[y = j, x = i]; zero border closes contours
    lines = contour_generator(z=padded, line_type=LineType.Separate).lines(0.5)
    return [np.asarray(line, float)[:-1] - 1.0 for line in lines if len(line) >= 4]


def write_rtstruct(path: str | os.PathLike, rois: Mapping[str, np.ndarray], volume: Volume,
                   series: WrittenSeries, *, key: str, study_date: str = "20000101",
                   label: str = "lesions", note: str = "") -> Path:
    """An RTSTRUCT of ``rois`` ({ROI name: boolean array on ``volume``'s grid}) drawn on ``series``."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    path = Path(path)
    ds = _file_dataset(RTSTRUCT_SOP_CLASS, _uid(key, "rtstruct"))
    _patient_study(ds, series.patient_id, series.study, study_date, note)
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = _uid(key, "rtstruct-series")
    ds.SeriesNumber = 2
    ds.StructureSetLabel = label[:16]          # VR SH: 16 characters at most
    ds.StructureSetDate = study_date
    image_refs = []
    for sop in series.sop_instances:
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = MR_SOP_CLASS, sop
        image_refs.append(ref)
    ref_series = Dataset()
    ref_series.SeriesInstanceUID = series.series
    ref_series.ContourImageSequence = DicomSequence(image_refs)
    ref_study = Dataset()
    ref_study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"   # Detached Study Management (retired, customary)
    ref_study.ReferencedSOPInstanceUID = series.study
    ref_study.RTReferencedSeriesSequence = DicomSequence([ref_series])
    frame = Dataset()
    frame.FrameOfReferenceUID = series.frame_of_reference
    frame.RTReferencedStudySequence = DicomSequence([ref_study])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([frame])
    ds.StructureSetROISequence, ds.ROIContourSequence, ds.RTROIObservationsSequence = (
        DicomSequence(), DicomSequence(), DicomSequence())
    for number, (name, inside) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName, roi.ROIGenerationAlgorithm = number, name, "MANUAL"
        roi.ReferencedFrameOfReferenceUID = series.frame_of_reference
        ds.StructureSetROISequence.append(roi)
        item = Dataset()
        item.ReferencedROINumber = number
        item.ROIDisplayColor = [255, 0, 0]
        item.ContourSequence = DicomSequence(_roi_contours(np.asarray(inside, bool), volume, series))
        ds.ROIContourSequence.append(item)
        obs = Dataset()
        obs.ObservationNumber, obs.ReferencedROINumber = number, number
        obs.RTROIInterpretedType, obs.ROIInterpreter = "GTV", ""
        ds.RTROIObservationsSequence.append(obs)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _roi_contours(inside: np.ndarray, volume: Volume, series: WrittenSeries) -> list:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    items = []
    for k in np.flatnonzero(inside.any(axis=(0, 1))):
        for vertices in slice_contours(inside[:, :, k]):
            ijk = np.c_[vertices, np.full(len(vertices), float(k))]
            lps = volume.voxel_to_world(ijk) @ LPS_TO_RAS[:3, :3].T
            contour = Dataset()
            ref = Dataset()
            ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = MR_SOP_CLASS, series.sop_instances[k]
            contour.ContourImageSequence = DicomSequence([ref])
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(lps)
            contour.ContourData = [_ds(v) for v in lps.ravel()]
            items.append(contour)
    return items

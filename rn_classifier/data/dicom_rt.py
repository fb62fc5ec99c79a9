"""Lesion masks from radiotherapy DICOM: RTSTRUCT contours and DICOM-SEG segments.

Both become a label array on the voxel grid of the image they were drawn on (a
:class:`~rn_classifier.data.ingest.Volume` read from the referenced DICOM series), value ``k``
for the ``k``-th requested ROI or segment, so the rest of the project treats them like any
label mask.

RTSTRUCT (pydicom reads the file): each closed planar contour is a polygon in patient
coordinates (LPS mm). Its points are mapped to the image's voxel indices; the contour must lie
in one slice plane of the image and inside the image. A voxel is inside the ROI when its centre
lies inside the polygon on its slice (matplotlib's point-in-polygon test), the rule planning
systems apply; several contours on one slice combine by exclusive or, so a contour drawn inside
another is a hole (Eclipse, RayStation and 3D Slicer's DICOM-RT import read them so).

DICOM-SEG (highdicom reads the file): each segment's frames, fetched for the image's slices
(``Segmentation.get_pixels_by_source_instance``), are placed on the image's grid through each
slice's image plane; a segmentation on another grid is refused rather than resampled.

Both are checked against the image first: the same Frame of Reference UID, and the image's
series among the series the object references; a mismatch names both UIDs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from .dicom_series import RTSTRUCT_SOP_CLASS, SEG_SOP_CLASS, ImageSeries, read_header

RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0])
SLICE_TOLERANCE = 0.25     # voxel: a contour this far off a slice centre is not on that slice
GRID_TOLERANCE = 0.05      # voxel: a SEG voxel centre this far off an image voxel centre is off-grid
MASK_KINDS = {RTSTRUCT_SOP_CLASS: "rtstruct", SEG_SOP_CLASS: "seg"}


def dicom_mask_kind(path: str | os.PathLike) -> str | None:
    """``"rtstruct"``, ``"seg"`` or None (not a DICOM mask object) for a mask file."""
    p = Path(path)
    if not p.is_file():
        return None
    header = read_header(p)
    return MASK_KINDS.get(header.sop_class) if header else None


def _read_dataset(path: Path, kind: str):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: not a readable DICOM {kind} ({type(exc).__name__}: {exc})") from exc


def _check_same_frame(path: Path, kind: str, theirs: set[str], series: ImageSeries) -> None:
    theirs = {uid for uid in theirs if uid}
    if theirs and series.frame_of_reference not in theirs:
        raise InputError(f"{path}: the {kind} is drawn in Frame of Reference {', '.join(sorted(theirs))}, "
                         f"the image series {series.folder} is in Frame of Reference "
                         f"{series.frame_of_reference}; expected the {kind} of this image")


def _check_same_series(path: Path, kind: str, theirs: set[str], series: ImageSeries) -> None:
    theirs = {uid for uid in theirs if uid}
    if theirs and series.series not in theirs:
        raise InputError(f"{path}: the {kind} references series {', '.join(sorted(theirs))}, the image "
                         f"{series.folder} is series {series.series}; expected the {kind} drawn on this "
                         "image series")


# -- RTSTRUCT ------------------------------------------------------------------------------------

def rtstruct_rois(path: str | os.PathLike) -> dict[str, dict]:
    """{ROI name: {"number", "frame_of_reference", "contours": [(N, 3) LPS mm], "types", "images"}}."""
    return _rois(_read_dataset(Path(path), "RTSTRUCT"))


def _rois(ds) -> dict[str, dict]:
    contours = {int(item.ReferencedROINumber): item for item in ds.get("ROIContourSequence", [])}
    rois = {}
    for roi in ds.get("StructureSetROISequence", []):
        number = int(roi.ROINumber)
        item = contours.get(number)
        sequence = item.get("ContourSequence", []) if item is not None else []
        rois[str(roi.ROIName)] = {
            "number": number, "frame_of_reference": str(roi.get("ReferencedFrameOfReferenceUID", "")),
            "contours": [np.asarray(c.ContourData, dtype=float).reshape(-1, 3) for c in sequence],
            "types": [str(c.get("ContourGeometricType", "")) for c in sequence],
            "images": {str(ref.ReferencedSOPInstanceUID) for c in sequence
                       for ref in c.get("ContourImageSequence", [])}}
    return rois


def rtstruct_summary(path: str | os.PathLike) -> tuple[set[str], set[str], list[str]]:
    """(frames of reference, series referenced, ROI names) of a structure set."""
    ds = _read_dataset(Path(path), "RTSTRUCT")
    frames, series = _rtstruct_references(ds)
    return frames, series, [str(roi.ROIName) for roi in ds.get("StructureSetROISequence", [])]


def _rtstruct_references(ds) -> tuple[set[str], set[str]]:
    """(frames of reference, series) the structure set says it was drawn on."""
    frames, series = set(), set()
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        frames.add(str(frame.get("FrameOfReferenceUID", "")))
        for study in frame.get("RTReferencedStudySequence", []):
            for ser in study.get("RTReferencedSeriesSequence", []):
                series.add(str(ser.get("SeriesInstanceUID", "")))
    return frames, series


def _lps_to_index(points_lps: np.ndarray, affine_ras: np.ndarray) -> np.ndarray:
    """(N, 3) patient LPS mm → (N, 3) continuous voxel indices of the image grid."""
    ras = points_lps @ RAS_FROM_LPS.T
    inv = np.linalg.inv(affine_ras)
    return ras @ inv[:3, :3].T + inv[:3, 3]


def _slice_axis(index: np.ndarray) -> int:
    """The voxel axis along which a planar contour's index coordinate is constant."""
    return int(np.argmin(np.ptp(index, axis=0)))


def _fill_polygon(vertices_2d: np.ndarray, shape_2d: tuple[int, int]) -> np.ndarray:
    """Boolean (shape_2d) image: voxel centres (integer indices) inside the polygon."""
    from matplotlib.path import Path as PolygonPath

    lo = np.maximum(np.floor(vertices_2d.min(axis=0)).astype(int), 0)
    hi = np.minimum(np.ceil(vertices_2d.max(axis=0)).astype(int) + 1, shape_2d)
    out = np.zeros(shape_2d, bool)
    if np.any(hi <= lo):
        return out
    grid = np.stack(np.meshgrid(np.arange(lo[0], hi[0]), np.arange(lo[1], hi[1]), indexing="ij"), axis=-1)
    inside = PolygonPath(vertices_2d).contains_points(grid.reshape(-1, 2)).reshape(grid.shape[:2])
    out[lo[0]:hi[0], lo[1]:hi[1]] = inside
    return out


def rasterise_contours(contours: Sequence[np.ndarray], affine: np.ndarray, shape: tuple[int, int, int],
                       where: str) -> np.ndarray:
    """Boolean mask on the grid (``affine`` RAS, ``shape``) of closed planar contours in LPS mm.

    where: names the file and ROI in error messages. Every contour must lie on one slice of the
    grid (within :data:`SLICE_TOLERANCE` voxel) and inside it (half a voxel beyond the outer
    voxel centres at most).
    """
    mask = np.zeros(shape, bool)
    extent = np.asarray(shape) - 0.5
    for n, points in enumerate(contours):
        if len(points) < 3:
            raise InputError(f"{where}: contour {n + 1} has {len(points)} point(s); expected a closed "
                             "polygon of at least 3 points")
        index = _lps_to_index(points, affine)
        outside = np.any((index < -0.5) | (index > extent), axis=1)
        if outside.any():
            first = int(np.flatnonzero(outside)[0])
            raise InputError(f"{where}: contour {n + 1} lies outside the image: point "
                             f"{np.round(points[first], 2).tolist()} mm (LPS) falls at voxel "
                             f"{np.round(index[first], 1).tolist()} of an image of {list(shape)} voxels; "
                             "expected contours drawn on this image")
        axis = _slice_axis(index)
        plane = index[:, axis]
        k = int(np.rint(plane.mean()))
        if np.abs(plane - k).max() > SLICE_TOLERANCE:
            raise InputError(f"{where}: contour {n + 1} does not lie on an image slice (voxel "
                             f"coordinate {plane.min():.2f}-{plane.max():.2f} along the slice axis); "
                             "expected contours drawn on the image's own slices")
        in_plane = [a for a in range(3) if a != axis]
        filled = _fill_polygon(index[:, in_plane], (shape[in_plane[0]], shape[in_plane[1]]))
        slicer = [slice(None)] * 3
        slicer[axis] = k
        mask[tuple(slicer)] ^= filled   # a contour inside another is a hole
    return mask


def read_rtstruct(path: str | os.PathLike, roi_names: Sequence[str], series: ImageSeries,
                  affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Label array (``shape``, uint8): value ``k`` where the ``k``-th ROI of ``roi_names`` is.

    The structure set must reference the image's series and Frame of Reference; every ROI asked
    for must exist, hold closed planar contours and cover at least one voxel centre.
    """
    path = Path(path)
    ds = _read_dataset(path, "RTSTRUCT")
    rois = _rois(ds)
    if not roi_names:
        raise InputError(f"{path}: an RTSTRUCT mask needs the lesion's ROI name(s) as mask_labels "
                         f"(e.g. GTV_1); the file holds the ROIs {sorted(rois)}")
    frames, referenced = _rtstruct_references(ds)
    missing = [name for name in roi_names if name not in rois]
    if missing:
        raise InputError(f"{path}: no ROI named {', '.join(repr(m) for m in missing)}; the RTSTRUCT "
                         f"holds the ROIs {sorted(rois)}")
    _check_same_frame(path, "RTSTRUCT", frames | {rois[n]["frame_of_reference"] for n in roi_names},
                      series)
    _check_same_series(path, "RTSTRUCT", referenced, series)
    images = set().union(*(rois[n]["images"] for n in roi_names))
    if images and not referenced and not images & series.sop_instances:
        raise InputError(f"{path}: the contours reference images that are not in the series "
                         f"{series.series} of {series.folder}; expected the RTSTRUCT of this image")
    labels = np.zeros(shape, np.uint8)
    for value, name in enumerate(roi_names, start=1):
        roi = rois[name]
        where = f"{path}, ROI {name!r}"
        if not roi["contours"]:
            raise InputError(f"{where}: the ROI has no contour; expected closed planar contours of the lesion")
        kinds = set(roi["types"]) - {"CLOSED_PLANAR"}
        if kinds:
            raise InputError(f"{where}: contour type(s) {sorted(kinds)}; expected CLOSED_PLANAR contours "
                             "that enclose the lesion")
        inside = rasterise_contours(roi["contours"], affine, shape, where)
        if not inside.any():
            raise InputError(f"{where}: the contours enclose no voxel centre of the image; expected a "
                             "lesion at least one voxel wide")
        labels[inside] = value
    return labels


# -- DICOM-SEG ----------------------------------------------------------------------------------

def read_seg(path: str | os.PathLike, segments: Sequence[int | str], series: ImageSeries,
             affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Label array (``shape``, uint8): value ``k`` where the ``k``-th of ``segments`` is.

    segments: segment numbers (int) or segment labels (str); empty = every segment.
    """
    import highdicom as hd

    path = Path(path)
    try:
        seg = hd.seg.segread(path)
    except Exception as exc:  # highdicom raises several types for files that are not a SEG
        raise InputError(f"{path}: not a readable DICOM-SEG ({type(exc).__name__}: {exc})") from exc
    _check_same_frame(path, "SEG", {str(seg.get("FrameOfReferenceUID", ""))}, series)
    _check_same_series(path, "SEG", {uids[1] for uids in seg.get_source_image_uids()}, series)
    numbers = _segment_numbers(path, seg, segments)
    labels = np.zeros(shape, np.uint8)
    for value, number in enumerate(numbers, start=1):
        inside = _seg_on_grid(path, seg, number, series, affine, shape)
        if not inside.any():
            raise InputError(f"{path}: segment {number} is empty; expected the lesion's voxels")
        labels[inside] = value
    return labels


def seg_summary(path: str | os.PathLike) -> tuple[set[str], set[str], list[str]]:
    """(frame of reference, series referenced, segment labels) of a SEG, from its header."""
    import pydicom

    path = Path(path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:
        raise InputError(f"{path}: not a readable DICOM-SEG ({type(exc).__name__}: {exc})") from exc
    series = {str(item.get("SeriesInstanceUID", "")) for item in ds.get("ReferencedSeriesSequence", [])}
    return ({str(ds.get("FrameOfReferenceUID", ""))}, series - {""},
            [str(item.SegmentLabel) for item in ds.get("SegmentSequence", [])])


def seg_segments(seg) -> dict[int, str]:
    """{segment number: segment label} of a highdicom Segmentation."""
    return {int(item.SegmentNumber): str(item.SegmentLabel) for item in seg.SegmentSequence}


def _segment_numbers(path: Path, seg, segments: Sequence[int | str]) -> list[int]:
    known = seg_segments(seg)
    if not segments:
        return sorted(known)
    by_label = {label: number for number, label in known.items()}
    numbers, unknown = [], []
    for s in segments:
        number = s if isinstance(s, int) else by_label.get(str(s))
        if number not in known:
            unknown.append(s)
        else:
            numbers.append(number)
    if unknown:
        listed = ", ".join(f"{n} {label!r}" for n, label in sorted(known.items()))
        raise InputError(f"{path}: no segment {', '.join(repr(u) for u in unknown)}; the SEG holds the "
                         f"segments {listed} (give segment numbers or labels)")
    return numbers


def _seg_on_grid(path: Path, seg, number: int, series: ImageSeries, affine: np.ndarray,
                 shape) -> np.ndarray:
    """One segment of ``seg`` as a boolean array on the image grid (no resampling).

    highdicom returns the segment frame by frame for the series' slices (the SEG's own
    references to its source images); each slice's pixels are placed through that slice's image
    plane (position, direction cosines, pixel spacing).
    """
    uids = sorted(series.planes)
    try:
        frames = seg.get_pixels_by_source_instance(uids, segment_numbers=[number], combine_segments=True,
                                                   assert_missing_frames_are_empty=True, dtype=np.uint8)
    except (ValueError, RuntimeError, KeyError) as exc:
        raise InputError(f"{path}: segment {number} cannot be placed on the slices of {series.folder} "
                         f"({exc}); expected a SEG derived from this image series") from exc
    out = np.zeros(shape, bool)
    for uid, frame in zip(uids, frames):
        rows_cols = np.argwhere(frame > 0)
        if not len(rows_cols):
            continue
        plane = series.planes[uid]
        if len(plane.position) != 3 or len(plane.orientation) != 6 or len(plane.pixel_spacing) != 2:
            raise InputError(f"{plane.path}: slice lacks ImagePositionPatient / ImageOrientationPatient / "
                             "PixelSpacing; a SEG cannot be placed on it")
        row_dir, col_dir = np.asarray(plane.orientation[:3]), np.asarray(plane.orientation[3:])
        lps = (np.asarray(plane.position) + rows_cols[:, 1:2] * plane.pixel_spacing[1] * row_dir
               + rows_cols[:, 0:1] * plane.pixel_spacing[0] * col_dir)
        index = _lps_to_index(lps, affine)
        nearest = np.rint(index)
        if np.abs(index - nearest).max() > GRID_TOLERANCE:
            raise InputError(f"{path}: segment {number} falls between the image's voxel centres (up to "
                             f"{np.abs(index - nearest).max():.2f} voxel); expected a SEG on this image's grid")
        nearest = nearest.astype(int)
        if np.any((nearest < 0) | (nearest >= np.asarray(shape))):
            raise InputError(f"{path}: segment {number} extends outside the image of {list(shape)} voxels")
        out[tuple(nearest.T)] = True
    return out

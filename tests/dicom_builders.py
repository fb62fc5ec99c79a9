"""DICOM-RT objects written inside tests by routes the project's readers do not share.

The RTSTRUCT writer here traces each mask slice's outline along voxel edges (the boundary of the
union of the voxels' squares) and maps it to patient coordinates with SimpleITK's own
``TransformContinuousIndexToPhysicalPoint`` on the image's native grid; the project's reader
maps contour points with its own inverse affine on the RAS-reoriented grid and fills polygons
with matplotlib. A voxel centre is never on such an outline, so a correct reader gets the voxels
back exactly. The SEG writer is highdicom's own constructor.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

RTSTRUCT_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"


def voxel_edge_loops(inside: np.ndarray) -> list[list[tuple[float, float]]]:
    """Closed outlines (index (x, y) vertices at half-integers) of a boolean (Y, X) slice; outer
    outlines run counter-clockwise, holes clockwise."""
    inside = np.pad(np.asarray(inside, bool).T, 1)        # (x, y), empty border
    edges: dict[tuple, list[tuple]] = {}
    for x, y in np.argwhere(inside):
        corners = [(x - .5, y - .5), (x + .5, y - .5), (x + .5, y + .5), (x - .5, y + .5)]
        neighbours = [(x, y - 1), (x + 1, y), (x, y + 1), (x - 1, y)]
        for n, (nx, ny) in enumerate(neighbours):
            if not inside[nx, ny]:
                edges.setdefault(corners[n], []).append(corners[(n + 1) % 4])
    loops = []
    while edges:
        start = next(iter(edges))
        loop, point = [start], start
        while True:
            nxt = edges[point].pop()
            if not edges[point]:
                del edges[point]
            if nxt == start:
                break
            loop.append(nxt)
            point = nxt
        loops.append([(px - 1.0, py - 1.0) for px, py in loop])   # undo the padding
    return loops


def mask_contours(mask_image, inside: np.ndarray) -> list[np.ndarray]:
    """Closed contours (LPS mm, (N, 3) each) of a boolean (Z, Y, X) array on ``mask_image``'s
    grid (a SimpleITK image), one per voxel-edge outline of each slice."""
    contours = []
    for k in np.flatnonzero(np.asarray(inside).any(axis=(1, 2))):
        for loop in voxel_edge_loops(inside[k]):
            contours.append(np.asarray([mask_image.TransformContinuousIndexToPhysicalPoint((x, y, float(k)))
                                        for x, y in loop]))
    return contours


def write_rtstruct_from_mask(path, mask_image, rois: dict[str, np.ndarray], series_folder) -> Path:
    """An RTSTRUCT of ``rois`` ({name: boolean (Z, Y, X) array on ``mask_image``'s grid}), see
    :func:`write_rtstruct`."""
    return write_rtstruct(path, {name: mask_contours(mask_image, inside) for name, inside in rois.items()},
                          series_folder)


def write_rtstruct(path, rois: dict[str, list[np.ndarray]], series_folder) -> Path:
    """An RTSTRUCT of ``rois`` ({name: closed contours, (N, 3) LPS mm each}) that references the
    series in ``series_folder`` (its UIDs read back with pydicom)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    slices = sorted((pydicom.dcmread(p, stop_before_pixels=True) for p in Path(series_folder).glob("*.dcm")),
                    key=lambda d: int(d.InstanceNumber))
    first = slices[0]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = RTSTRUCT_CLASS
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = RTSTRUCT_CLASS, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.StudyInstanceUID = "RTSTRUCT", "TEST", first.StudyInstanceUID
    ds.SeriesInstanceUID, ds.StructureSetLabel = generate_uid(), "test"
    series = Dataset()
    series.SeriesInstanceUID = first.SeriesInstanceUID
    study = Dataset()
    study.RTReferencedSeriesSequence = Sequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = first.FrameOfReferenceUID
    frame.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    ds.StructureSetROISequence, ds.ROIContourSequence = Sequence(), Sequence()
    for number, (name, contours) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ROIName = number, name
        roi.ReferencedFrameOfReferenceUID = first.FrameOfReferenceUID
        ds.StructureSetROISequence.append(roi)
        items = Sequence()
        for points in contours:
            contour = Dataset()
            contour.ContourGeometricType, contour.NumberOfContourPoints = "CLOSED_PLANAR", len(points)
            contour.ContourData = [round(float(v), 4) for v in np.asarray(points).ravel()]
            items.append(contour)
        item = Dataset()
        item.ReferencedROINumber, item.ContourSequence = number, items
        ds.ROIContourSequence.append(item)
    path = Path(path)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_seg(path, series_folder, segments: dict[str, np.ndarray], frame_of_reference: str | None = None) -> Path:
    """A binary DICOM-SEG (highdicom) of ``segments`` ({label: boolean (Z, Y, X) array in the
    series' slice order}) on the series in ``series_folder``; ``frame_of_reference`` overrides its
    Frame of Reference UID (a SEG of another patient position)."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    source = sorted((pydicom.dcmread(p) for p in Path(series_folder).glob("*.dcm")),
                    key=lambda d: int(d.InstanceNumber))
    descriptions = [hd.seg.SegmentDescription(
        segment_number=n, segment_label=label, segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
        for n, label in enumerate(segments, start=1)]
    pixels = np.stack([np.asarray(m, bool) for m in segments.values()], axis=-1).astype(np.uint8)
    seg = hd.seg.Segmentation(
        source_images=source, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=3,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="test", manufacturer_model_name="test",
        software_versions="0", device_serial_number="0")
    if frame_of_reference:
        seg.FrameOfReferenceUID = frame_of_reference
    path = Path(path)
    seg.save_as(path)
    return path

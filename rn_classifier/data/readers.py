"""The one reader of a case's files: image formats and mask formats, each a registry entry.

Every stage that opens an image or a mask (check-data, preprocess, predict, radiomics, the
MOLAB importer, attention maps) goes through :func:`read_image` and :func:`read_mask`, so a
format added here is read the same way everywhere.

Image formats (:data:`IMAGE_FORMATS`, keyed by kind): ``nifti`` (nibabel), ``sitk`` (NRRD,
MHA/MHD, a single DICOM file; SimpleITK) and ``dicom_series`` (a folder; SimpleITK's GDCM
series reader). Each returns a :class:`~rn_classifier.data.ingest.Volume` in RAS voxel order.

Mask formats (:data:`MASK_FORMATS`, keyed by kind): ``label_image`` (a label map in any image
format, on the image's voxel grid; ``mask_labels`` are its integer values), ``rtstruct`` and
``seg`` (an RTSTRUCT's ROIs / a DICOM-SEG's segments, rasterised on the grid of the DICOM series
they were drawn on: :mod:`rn_classifier.data.dicom_rt`). A mask format turns
``(mask file, mask_labels, the image it belongs to)`` into a :class:`LesionMask` on the image's
grid. Formats whose files need looking inside to be recognised (an RTSTRUCT or a DICOM-SEG is a
``.dcm`` like an MR slice) are asked first, in the order they were registered; ``label_image``
takes whatever an image format reads. Adding a format::

    from rn_classifier.data.readers import MaskFormat, register_mask_format

    register_mask_format(MaskFormat(
        kind="rtstruct",
        claims=lambda path: is_rtstruct(path),              # cheap: header only
        read=lambda path, labels, image: rasterise(path, labels, image)))  # -> LesionMask
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from .ingest import (NIFTI_SUFFIXES, SITK_SUFFIXES, Volume, geometry_mismatch, nifti_grid,
                     read_nifti, read_sitk, sitk_grid)

MaskLabel = int | str   # a label value of a label image; an ROI name or segment of DICOM-RT masks


@dataclass(frozen=True)
class ImageFormat:
    """One way of reading an image file.

    claims(path): whether this format reads ``path`` (from its name or header; cheap).
    read(path): the volume, in RAS voxel order.
    stored_grid(path): ``(shape, RAS affine)`` of the grid the file is stored on, from its header,
        or None when it has no single stored grid (a DICOM series).
    """

    kind: str
    claims: Callable[[Path], bool]
    read: Callable[[Path], Volume]
    stored_grid: Callable[[Path], tuple[tuple[int, ...], np.ndarray] | None]
    describe: str = ""


@dataclass
class LesionMask:
    """The lesion of one case on its image's voxel grid.

    lesion: ``(X, Y, Z)`` bool, the union of the requested labels, on ``image``'s grid (RAS
    voxel order). labels: the ``mask_labels`` asked for (empty = every non-zero label).
    present: the labels the file holds (for messages). path: the mask file.
    """

    lesion: np.ndarray
    labels: tuple[MaskLabel, ...]
    present: tuple[MaskLabel, ...]
    path: str

    @property
    def voxels(self) -> int:
        return int(self.lesion.sum())


@dataclass(frozen=True)
class MaskFormat:
    """One way of reading a lesion mask.

    claims(path): whether this format reads ``path``. read(path, labels, image): the
    :class:`LesionMask` on ``image``'s grid, or an :class:`InputError` naming the file and what
    was expected (another grid, a label or ROI the file lacks).
    """

    kind: str
    claims: Callable[[Path], bool]
    read: Callable[[Path, tuple[MaskLabel, ...], Volume], LesionMask]
    describe: str = ""


IMAGE_FORMATS: dict[str, ImageFormat] = {}
MASK_FORMATS: dict[str, MaskFormat] = {}
LABEL_IMAGE = "label_image"


def register_image_format(fmt: ImageFormat) -> ImageFormat:
    IMAGE_FORMATS[fmt.kind] = fmt
    return fmt


def register_mask_format(fmt: MaskFormat) -> MaskFormat:
    MASK_FORMATS[fmt.kind] = fmt
    return fmt


def _expected_formats() -> str:
    return (f"expected one of {list(NIFTI_SUFFIXES + SITK_SUFFIXES)} or a DICOM series folder"
            + "".join(f", or {f.describe}" for k, f in MASK_FORMATS.items() if k != LABEL_IMAGE
                      and f.describe))


def image_kind(path: str | os.PathLike) -> str:
    """The kind of image format that reads ``path`` (a key of :data:`IMAGE_FORMATS`)."""
    p = Path(path)
    for kind, fmt in IMAGE_FORMATS.items():
        if fmt.claims(p):
            return kind
    raise InputError(f"{p}: unsupported image format; {_expected_formats()}")


def mask_kind(path: str | os.PathLike) -> str:
    """The kind of mask format that reads ``path`` (a key of :data:`MASK_FORMATS`): formats
    recognised by content first, in registration order, then a label image."""
    p = Path(path)
    for kind, fmt in MASK_FORMATS.items():
        if kind != LABEL_IMAGE and fmt.claims(p):
            return kind
    if MASK_FORMATS[LABEL_IMAGE].claims(p):
        return LABEL_IMAGE
    raise InputError(f"{p}: unsupported mask format; {_expected_formats()}")


def read_image(path: str | os.PathLike) -> Volume:
    """Read an image (or a label image) from disk into a RAS-ordered :class:`Volume`."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: file does not exist")
    return IMAGE_FORMATS[image_kind(p)].read(p)


def read_mask(path: str | os.PathLike, labels: Sequence[MaskLabel], image: Volume) -> LesionMask:
    """The lesion of ``labels`` in the mask file ``path``, on ``image``'s voxel grid."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: file does not exist")
    return MASK_FORMATS[mask_kind(p)].read(p, tuple(labels or ()), image)


def stored_grid(path: str | os.PathLike) -> tuple[tuple[int, ...], np.ndarray] | None:
    """``(shape, RAS affine)`` of the voxel grid the image file is stored on (header only), or
    None when the format has no single stored grid (a DICOM series)."""
    p = Path(path)
    return IMAGE_FORMATS[image_kind(p)].stored_grid(p)


# -- the shipped formats ---------------------------------------------------------------------

def _is_nifti(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith(NIFTI_SUFFIXES)


def _is_sitk_file(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith(SITK_SUFFIXES)


register_image_format(ImageFormat("nifti", _is_nifti, read_nifti, nifti_grid, "NIfTI (.nii, .nii.gz)"))
register_image_format(ImageFormat("sitk", _is_sitk_file, lambda p: read_sitk(p, series=False), sitk_grid,
                                  "NRRD / MHA / MHD / a DICOM file"))
register_image_format(ImageFormat("dicom_series", lambda p: p.is_dir(),
                                  lambda p: read_sitk(p, series=True), lambda p: None,
                                  "a DICOM series folder"))


def label_values(mask: Volume) -> tuple[tuple[int, ...], str | None]:
    """(non-zero integer values of a label image, a problem when it holds fractional values)."""
    data = np.asarray(mask.array).ravel(order="K")
    # a lesion is a small part of a head: only the non-zero voxels are sorted
    values = np.unique(data[data != 0])
    if np.issubdtype(values.dtype, np.floating):
        fractional = values[values != np.round(values)]
        if len(fractional):
            return (), (f"mask {mask.path} holds non-integer values (e.g. {float(fractional[0]):g}); "
                        "expected integer lesion codes (resampled or smoothed with a non-nearest "
                        "interpolation?)")
    return tuple(int(v) for v in values), None


def missing_labels_message(path, labels: Sequence[MaskLabel], present: Sequence[MaskLabel],
                           what: str = "lesion code(s)") -> str | None:
    """The message for requested labels that the mask lacks, or None when all are present."""
    missing = [v for v in labels if v not in set(present)]
    if not missing:
        return None
    return f"mask {path} lacks {what} {missing}; expected {list(labels)}, found {sorted(present)}"


def read_label_image(path: Path, labels: tuple[MaskLabel, ...], image: Volume) -> LesionMask:
    """A label map on the image's grid; the lesion is the union of ``labels`` (integers; empty:
    every non-zero value). Refused: another grid, fractional values, a missing label."""
    mask = read_image(path)
    mismatch = geometry_mismatch(image, mask)
    if mismatch:
        raise InputError(f"mask {path}: {mismatch}; the mask must be drawn on the image's voxel grid")
    present, fractional = label_values(mask)
    if fractional:
        raise InputError(fractional)
    names = [v for v in labels if not isinstance(v, (int, np.integer))]
    if names:
        raise InputError(f"{path}: mask labels {names} are names, which only an RTSTRUCT or DICOM-SEG "
                         f"mask has; expected the integer codes of this label image ({list(present)})")
    codes = tuple(int(v) for v in labels)
    missing = missing_labels_message(path, codes, present)
    if missing:
        raise InputError(missing)
    data = np.asarray(mask.array)
    if not codes:
        lesion = data > 0
    elif len(codes) <= 4:   # a lesion's few codes: a comparison each beats np.isin's table or sort
        lesion = np.zeros_like(data, dtype=bool)
        for code in codes:
            lesion |= data == code
    else:
        lesion = np.isin(data, np.asarray(codes))
    return LesionMask(lesion=lesion, labels=codes, present=present, path=str(path))


register_mask_format(MaskFormat(LABEL_IMAGE, lambda p: any(f.claims(p) for f in IMAGE_FORMATS.values()),
                                read_label_image, "a label image on the image's grid"))


def _dicom_kind(path: Path) -> str | None:
    from .dicom_rt import dicom_mask_kind

    return dicom_mask_kind(path)


def read_dicom_mask(path: Path, labels: tuple[MaskLabel, ...], image: Volume) -> LesionMask:
    """An RTSTRUCT (``labels``: ROI names) or DICOM-SEG (segment numbers or labels; empty: every
    segment) rasterised on the grid of ``image``, which must be the DICOM series it was drawn on
    (:mod:`rn_classifier.data.dicom_rt` checks the frame of reference and the series)."""
    from .dicom_rt import read_rtstruct, read_seg, rtstruct_summary, seg_summary
    from .dicom_series import find_image_series

    kind = _dicom_kind(path)
    if not image.path or not Path(image.path).is_dir():
        raise InputError(f"{path}: an {kind.upper()} mask needs as image the DICOM series folder it "
                         f"was drawn on; got {image.path or 'an image without a file'}")
    series = find_image_series(image.path)
    if kind == "rtstruct":
        array = read_rtstruct(path, [str(v) for v in labels], series, image.affine, image.shape)
        present = tuple(sorted(rtstruct_summary(path)[2]))
    else:
        array = read_seg(path, list(labels), series, image.affine, image.shape)
        present = tuple(seg_summary(path)[2])
    return LesionMask(lesion=array > 0, labels=tuple(labels), present=present, path=str(path))


for _kind, _describe in (("rtstruct", "an RTSTRUCT of the image's DICOM series"),
                         ("seg", "a DICOM-SEG of the image's DICOM series")):
    register_mask_format(MaskFormat(_kind, lambda p, k=_kind: _dicom_kind(p) == k, read_dicom_mask, _describe))


def to_sitk(volume: Volume, array: np.ndarray | None = None, as_stored: bool = False):
    """A SimpleITK image (LPS world, as ITK and pyradiomics expect) of ``volume``'s grid holding
    ``array`` (default: the volume's voxels; RAS voxel order, as read).

    as_stored: in the voxel order the file stores (``volume.stored_affine``; a DICOM series has
    none and stays in RAS order); the world geometry is the same either way."""
    import nibabel as nib
    import SimpleITK as sitk

    from .ingest import LPS_TO_RAS

    data = np.asarray(volume.array if array is None else array)
    affine = np.asarray(volume.affine, dtype=float)
    if as_stored and volume.stored_affine is not None:
        to_stored = nib.orientations.ornt_transform(nib.orientations.io_orientation(affine),
                                                    nib.orientations.io_orientation(volume.stored_affine))
        data = nib.orientations.apply_orientation(data, to_stored)
        affine = volume.stored_affine
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(data, (2, 1, 0))))
    lps = LPS_TO_RAS @ affine   # the flip is its own inverse
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(tuple(float(v) for v in (lps[:3, :3] / spacing[None, :]).ravel()))
    image.SetOrigin(tuple(float(v) for v in lps[:3, 3]))
    return image

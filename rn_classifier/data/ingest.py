"""Clinical MRI in one in-memory form, reoriented to RAS: the file formats, resampling, normalisation.

NIfTI (``.nii``, ``.nii.gz``) is read with nibabel; NRRD, MHA/MHD and DICOM series (a
folder holding one image series, :mod:`rn_classifier.data.dicom_series`) with SimpleITK, whose
LPS geometry is converted to the RAS convention of NIfTI. A mask may also be an RTSTRUCT or a
DICOM-SEG of the image's series (:mod:`rn_classifier.data.dicom_rt`, registered as mask formats
in :mod:`rn_classifier.data.readers`). Every
volume is then brought to the closest canonical (RAS+) voxel order: increasing index along
array axis 0 / 1 / 2 moves towards the patient's Right / Anterior / Superior. Callers read
files through :mod:`rn_classifier.data.readers` (the registry of formats), not these functions.
Resampling is on MONAI ``Spacing``'s grid with SimpleITK's interpolation (:func:`resample`);
intensity normalisation is MONAI's (``NormalizeIntensity`` — in NumPy, so the preprocessing of
the default ``zscore_foreground`` never imports torch — and ``ScaleIntensityRangePercentiles``).

A volume larger than :data:`MAX_VOXELS` is refused from its header, before any voxel is read,
so a corrupt or hostile header cannot exhaust memory. ITK / GDCM print their warnings from C++
straight to the process's stderr (a many-line block before our one-line error); a SimpleITK read
captures them (:func:`itk_messages`): a failed read says only its error, a read that worked
with a warning (missing DICOM slices) says it in one line.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InputError
from .order_statistics import percentile

MAX_VOXELS = 1024**3  # about 2 GB as int16; far beyond any clinical T1CE volume
NIFTI_SUFFIXES = (".nii", ".nii.gz")
SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Volume:
    """A 3D image in RAS voxel order.

    array: (X, Y, Z) voxel values; affine: (4, 4) voxel index → world RAS mm; path: the source;
    stored_affine: the voxel-to-world RAS affine of the voxel order the file stores (None for a
    DICOM series, which has none of its own), for tools that take a file as stored (pyradiomics).
    """

    array: np.ndarray
    affine: np.ndarray
    path: str = ""
    stored_affine: np.ndarray | None = None

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    def voxel_to_world(self, ijk) -> np.ndarray:
        ijk = np.asarray(ijk, dtype=float)
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_voxel(self, xyz) -> np.ndarray:
        inv = np.linalg.inv(self.affine)
        xyz = np.asarray(xyz, dtype=float)
        return xyz @ inv[:3, :3].T + inv[:3, 3]


def _check_shape(path: Path, shape) -> None:
    shape = tuple(int(s) for s in shape)
    squeezed = tuple(s for i, s in enumerate(shape) if i < 3 or s != 1)
    if len(squeezed) != 3:
        raise InputError(f"{path}: expected a 3D volume, found {len(squeezed)}D with shape {shape}")
    if min(squeezed) < 1:
        raise InputError(f"{path}: image has an empty dimension, shape {shape}")
    if int(np.prod(squeezed, dtype=np.int64)) > MAX_VOXELS:
        raise InputError(f"{path}: header declares {shape} = {np.prod(squeezed, dtype=np.int64):,} "
                         f"voxels, more than the {MAX_VOXELS:,} accepted; refusing to read it")


def _as_volume(path: Path, array, affine, stored_affine=None) -> Volume:
    """The checks every format shares: a 3D real-valued array and a finite affine."""
    array = np.asarray(array)
    if array.ndim != 3:
        raise InputError(f"{path}: expected a 3D volume, found shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
            or array.dtype == np.bool_):
        raise InputError(f"{path}: voxels are of type {array.dtype}; expected one real number per voxel "
                         "(integer or floating point), not complex, RGB or structured values")
    affine = np.asarray(affine, dtype=float)
    if not np.isfinite(affine).all():
        raise InputError(f"{path}: the voxel-to-world matrix (affine) holds NaN or infinite values; "
                         "expected a finite affine (check the header's qform / sform)")
    return Volume(array=array, affine=affine, path=str(path),
                  stored_affine=None if stored_affine is None else np.asarray(stored_affine, dtype=float))


def read_nifti(path: Path) -> Volume:
    """A NIfTI file (nibabel), reoriented to the closest canonical (RAS+) voxel order."""
    try:
        img = nib.load(str(path))
    except Exception as exc:
        raise InputError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    _check_shape(path, img.shape)
    try:
        stored = nib.funcs.squeeze_image(img)
        img = nib.as_closest_canonical(stored)
        array = np.asanyarray(img.dataobj)
    except Exception as exc:  # truncated or corrupt data block
        raise InputError(f"{path}: NIfTI data could not be read, the file may be truncated "
                         f"({type(exc).__name__}: {exc})") from exc
    return _as_volume(path, array, img.affine, stored_affine=stored.affine)


def nifti_grid(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    """(shape, affine) of the grid a NIfTI file is stored on, from its header."""
    img = nib.funcs.squeeze_image(nib.load(str(path)))
    return tuple(int(s) for s in img.shape[:3]), np.asarray(img.affine, dtype=float)


def _lps_affine(direction, spacing, origin) -> np.ndarray:
    """ITK geometry (direction, spacing, origin; LPS world) → RAS voxel-to-world affine."""
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(direction, dtype=float).reshape(3, 3) * np.asarray(spacing, dtype=float)[None, :]
    lps[:3, 3] = np.asarray(origin, dtype=float)
    return LPS_TO_RAS @ lps


def _sitk_to_ras(image) -> tuple[np.ndarray, np.ndarray]:
    """SimpleITK image (LPS world) → (array (X, Y, Z), RAS affine)."""
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(image)  # (z, y, x)
    array = np.transpose(array, tuple(range(array.ndim))[::-1])
    return array, _lps_affine(image.GetDirection(), image.GetSpacing(), image.GetOrigin())


_ITK_STDERR = threading.Lock()   # fd 2 is the process's: one capture at a time


@contextlib.contextmanager
def itk_messages():
    """Capture what ITK / GDCM write to file descriptor 2 inside the block; yields a list that
    holds, after the block, the first line of each message (``ImageSeriesReader (0x...): ...``
    without the source-file line)."""
    found: list[str] = []
    with _ITK_STDERR, tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield found
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", errors="replace")
            found.extend(re.sub(r" \(0x[0-9a-f]+\)", "", line.strip()) for line in text.splitlines()
                         if line.strip() and not line.startswith(("WARNING: In ", "ERROR: In ")))


def read_sitk(path: Path, series: bool) -> Volume:
    """:func:`_read_sitk` with ITK's stderr messages captured: dropped when the read fails (the
    error says why), one Python warning per message when it works."""
    with itk_messages() as messages:
        try:
            volume = _read_sitk(path, series)
        except InputError:
            messages.clear()
            raise
    for message in messages:
        warnings.warn(f"{path}: {message}", stacklevel=2)
    return volume


def _read_sitk(path: Path, series: bool) -> Volume:
    """NRRD / MHA / MHD / a DICOM file, or a folder holding one DICOM image series
    (:func:`rn_classifier.data.dicom_series.find_image_series`), in RAS voxel order."""
    import SimpleITK as sitk

    try:
        if series:
            from .dicom_series import find_image_series

            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(list(find_image_series(path).files))
            image = reader.Execute()
        else:
            info = sitk.ImageFileReader()
            info.SetFileName(str(path))
            info.ReadImageInformation()
            _check_shape(path, info.GetSize())
            if info.GetNumberOfComponents() != 1:
                raise InputError(f"{path}: expected a scalar image, found "
                                 f"{info.GetNumberOfComponents()} components per voxel")
            image = sitk.ReadImage(str(path))
    except InputError:
        raise
    except Exception as exc:  # ITK raises RuntimeError for corrupt / truncated files
        first = str(exc).strip().splitlines()
        raise InputError(f"{path}: not a readable image ({first[-1] if first else exc})") from exc
    _check_shape(path, image.GetSize())
    if image.GetDimension() != 3:
        raise InputError(f"{path}: expected a 3D volume, found {image.GetDimension()}D")
    array, affine = _sitk_to_ras(image)
    img = nib.as_closest_canonical(nib.Nifti1Image(array, affine))
    # a series has no stored voxel order of its own (GDCM stacks its slices along their normal)
    return _as_volume(path, np.asanyarray(img.dataobj), img.affine, stored_affine=None if series else affine)


def sitk_grid(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    """(shape, RAS affine) of the grid a NRRD / MHA / DICOM file is stored on, from its header."""
    import SimpleITK as sitk

    info = sitk.ImageFileReader()
    info.SetFileName(str(path))
    info.ReadImageInformation()
    return (tuple(int(s) for s in info.GetSize()[:3]),
            _lps_affine(info.GetDirection(), info.GetSpacing(), info.GetOrigin()))


def geometry_mismatch(image: Volume, mask: Volume, atol_mm: float = 1e-3) -> str | None:
    """Describe how ``mask``'s voxel grid differs from ``image``'s, or None when they agree.

    The tolerance is in mm on the affine (spacing, direction and origin together), like
    pyradiomics' ``geometryTolerance``.
    """
    if image.shape != mask.shape:
        return f"mask shape {mask.shape} differs from image shape {image.shape}"
    diff = np.abs(image.affine - mask.affine).max()
    if diff > atol_mm:
        return (f"mask geometry differs from the image (largest affine difference {diff:.4g} mm; "
                f"image spacing {np.round(image.spacing, 4).tolist()}, mask spacing "
                f"{np.round(mask.spacing, 4).tolist()})")
    return None


def resample(volume: Volume, spacing, mode: str = "bilinear") -> Volume:
    """Resample to ``spacing`` mm (``mode="nearest"`` for masks, else trilinear).

    The output grid is MONAI ``Spacing``'s (``zoom_affine`` + ``compute_shape_offset``, corners
    aligned: voxel centres map to voxel centres); the voxels are interpolated by SimpleITK's
    ``ResampleImageFilter`` on that grid (linear, the edge extended as MONAI's
    ``padding_mode="border"``; nearest with zeros outside). The values equal MONAI ``Spacing``'s to
    float32 rounding, except that a point exactly halfway between two voxels (only at spacing
    ratios such as 2 mm → 1.5 mm) may take the other neighbour in nearest mode; SimpleITK computes them about 5x faster than MONAI's ``affine_grid`` +
    ``grid_sample``, which were two thirds of preprocessing a case (benchmarks/preprocess_speed.py).
    """
    import SimpleITK as sitk

    target = tuple(float(s) for s in spacing)
    if np.allclose(volume.spacing, target, atol=1e-4):
        return volume
    affine = np.asarray(volume.affine, dtype=np.float64)
    shape, out_affine = spacing_grid(volume.array.shape, affine, target)
    nearest = mode == "nearest"
    if nearest:   # zeros outside, as MONAI's padding_mode="zeros"
        source, source_affine = np.asarray(volume.array), affine
    else:
        # MONAI's padding_mode="border" clamps a point outside to the edge, then interpolates along
        # the other axes: the same as linear interpolation in the image extended by copies of its
        # edge voxels, as far out as the output grid reaches (half an output voxel)
        pad = int(np.ceil(0.5 * max(target) / min(volume.spacing))) + 1
        voxels = np.asarray(volume.array)
        # interpolated in float32; integers float32 holds exactly are handed over as they are
        # (half the bytes to copy), the output being float32 either way
        exact = voxels.dtype in (np.uint8, np.int8, np.uint16, np.int16)
        source = np.pad(voxels if exact else voxels.astype(np.float32, copy=False), pad, mode="edge")
        source_affine = affine.copy()
        source_affine[:3, 3] = affine[:3, :3] @ np.full(3, -pad, dtype=float) + affine[:3, 3]
    # SimpleITK stores voxels x fastest and reads a C-order array (a, b, c) as its (c, b, a).
    # The voxels are handed over in the memory order they already have, never reordered: a C-order
    # (X, Y, Z) array with SimpleITK's index axes given our axes in reverse (the affine's columns
    # reversed), a Fortran-order one (what nibabel and the SimpleITK readers return) as its
    # transpose, a C-order view, with the axes as they are. The output comes back in the same order.
    fortran = not source.flags.c_contiguous
    if fortran:
        source = np.asfortranarray(source).T
    axes = [0, 1, 2, 3] if fortran else [2, 1, 0, 3]
    image = sitk.GetImageFromArray(source)
    _set_sitk_geometry(image, source_affine[:, axes])
    reference = sitk.Image([int(shape[a]) for a in axes[:3]], sitk.sitkUInt8)
    _set_sitk_geometry(reference, out_affine[:, axes])
    resampler = sitk.ResampleImageFilter()
    resampler.SetReferenceImage(reference)
    resampler.SetInterpolator(sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear)
    resampler.SetOutputPixelType(image.GetPixelID() if nearest else sitk.sitkFloat32)
    resampler.SetDefaultPixelValue(0)
    array = sitk.GetArrayFromImage(resampler.Execute(image))
    return Volume(array=array.T if fortran else array, affine=out_affine, path=volume.path)


def spacing_grid(shape, affine: np.ndarray, spacing) -> tuple[tuple[int, ...], np.ndarray]:
    """``(shape, affine)`` of MONAI ``Spacing(pixdim=spacing, diagonal=False)``'s output grid for an
    image of ``shape`` and RAS ``affine``: the same axes (rotation kept, spacing replaced), the
    corner voxel centres of the input inside it (``monai.data.utils.zoom_affine`` and
    ``compute_shape_offset``, ``scale_extent=False``). Computed here in NumPy so that preprocessing
    never imports torch (MONAI's import costs every spawned worker seconds); tested equal to MONAI's.
    """
    affine = np.asarray(affine, dtype=np.float64)
    in_shape = np.asarray(shape, dtype=float)
    # zoom_affine: the rotation of the affine's polar decomposition, times the new spacing
    rzs = affine[:3, :3]
    zs = np.linalg.cholesky(rzs.T @ rzs).T
    out_affine = np.eye(4)
    out_affine[:3, :3] = rzs @ np.linalg.inv(zs) @ np.diag(np.sign(np.diag(zs)) * np.abs(np.asarray(spacing, float)))
    # compute_shape_offset: the input's corner voxel centres in the output grid
    corners = np.asarray(np.meshgrid(*[(0.0, n - 1.0) for n in in_shape], indexing="ij")).reshape(3, -1)
    corners = np.concatenate((corners, np.ones_like(corners[:1])))
    corners_out = np.linalg.solve(out_affine, affine) @ corners
    world = affine @ corners
    distances = corners_out[:-1].copy()
    out_shape = np.round(np.ptp(corners_out[:-1] / corners_out[-1], axis=1) + 1.0)
    offset = None
    for i in range(corners.shape[1]):
        if np.allclose(np.min(distances - distances[:, i:i + 1], 1), 0.0, rtol=1e-3):
            offset = world[:-1, i]      # this corner is the smallest along every axis: the origin
            break
    if offset is None:                  # else centre the output on the input
        offset = rzs @ (in_shape / 2.0) + affine[:3, 3] - out_affine[:3, :3] @ (out_shape / 2.0)
    out_affine[:3, 3] = offset
    return tuple(int(n) for n in out_shape), out_affine


def _set_sitk_geometry(image, ras_affine: np.ndarray) -> None:
    """Origin, spacing and direction of a SimpleITK image (LPS world) from a RAS voxel-to-world affine."""
    lps = LPS_TO_RAS @ ras_affine           # diag(-1, -1, 1) is its own inverse
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:3, :3] / spacing[None, :]).ravel().tolist())
    image.SetOrigin(lps[:3, 3].tolist())


def normalise(array: np.ndarray, method: str = "zscore_foreground",
              clip_percentiles=(0.5, 99.5)) -> np.ndarray:
    """Intensity normalisation for T1CE, the same for pretraining, fine-tuning and predict.

    ``zscore_foreground``: clip the intensities to the given percentiles of the foreground
    voxels, then subtract the foreground mean and divide by its standard deviation (MONAI
    ``NormalizeIntensity`` with those statistics, :func:`apply_zscore`). Foreground = voxels brighter than 10 % of the
    image's 99th percentile: head tissue, not air, also when the background holds scanner noise.
    ``percentile``: map the percentiles to [0, 1] and clip (MONAI
    ``ScaleIntensityRangePercentiles``). ``none``: unchanged.
    """
    from monai.transforms import ScaleIntensityRangePercentiles

    methods = ("zscore_foreground", "percentile", "none")
    if method not in methods:
        raise InputError(f"normalisation method must be one of {list(methods)}, got {method!r}")
    x = np.asarray(array, dtype=np.float32)
    if method == "none":
        return x
    lo, hi = (float(v) for v in clip_percentiles)
    if not 0 <= lo < hi <= 100:
        raise InputError(f"clip_percentiles must satisfy 0 <= low < high <= 100, got {[lo, hi]}")
    if method == "percentile":
        return np.asarray(ScaleIntensityRangePercentiles(lower=lo, upper=hi, b_min=0.0, b_max=1.0,
                                                         clip=True)(x[None])[0], dtype=np.float32)
    return apply_zscore(x, zscore_statistics(x, (lo, hi)))


@dataclass(frozen=True)
class ZScoreStatistics:
    """What ``zscore_foreground`` takes from a whole image: the foreground threshold, the clip
    range and the clipped foreground's mean and standard deviation. The first three are NumPy
    float64 scalars, so a float32 image is compared and clipped in float64 (NumPy's promotion),
    exactly as when the statistics and the normalisation were one pass over the image."""

    threshold: np.float64
    low: np.float64
    high: np.float64
    mean: float
    std: float


def zscore_statistics(array: np.ndarray, clip_percentiles=(0.5, 99.5)) -> ZScoreStatistics:
    """The statistics of :func:`normalise`'s ``zscore_foreground`` over the whole ``array``."""
    # the voxels in memory order (a view of a C- or Fortran-order image): no statistic here
    # depends on the order, except the last bits of the float64 sums, far below float32's
    x = np.asarray(array, dtype=np.float32).ravel(order="K")
    if not np.isfinite(x).all():
        raise InputError("image holds NaN or infinite voxels")
    threshold = 0.1 * percentile(x, 99)
    foreground = x[x > threshold]
    if foreground.size == 0:
        raise InputError("image has no foreground (it is constant or all zeros)")
    p_lo, p_hi = percentile(foreground, [float(v) for v in clip_percentiles])
    clipped = np.clip(foreground, p_lo, p_hi)           # float64: the bounds are
    mean = float(clipped.mean())
    deviation = np.subtract(clipped, mean, out=clipped)
    std = float(np.sqrt(np.dot(deviation, deviation) / deviation.size))
    return ZScoreStatistics(np.float64(threshold), np.float64(p_lo), np.float64(p_hi), mean,
                            std if std > 0 else 1.0)


def apply_zscore(array: np.ndarray, stats: ZScoreStatistics) -> np.ndarray:
    """``zscore_foreground`` with ``stats`` of the whole image, voxel by voxel: a crop of the
    normalised image equals this applied to the same crop of the raw one (preprocessing
    normalises only the lesion crop, a fifth of a head at 1 mm)."""
    x = np.asarray(array, dtype=np.float32)
    clipped = np.where(x > stats.threshold, np.clip(x, stats.low, stats.high), np.minimum(x, stats.high))
    # MONAI NormalizeIntensity(subtrahend=mean, divisor=std): float32 arithmetic with the scalars
    # rounded to float32 (NumPy's weak Python scalars), the same values without importing torch
    return (clipped.astype(np.float32) - stats.mean) / stats.std

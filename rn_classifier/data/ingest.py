"""Read clinical MRI the way it arrives into one in-memory form, reoriented to RAS.

NIfTI (``.nii``, ``.nii.gz``) is read with nibabel; NRRD, MHA/MHD and DICOM series (a
folder holding one image series, :mod:`rn_classifier.data.dicom_series`) with SimpleITK, whose
LPS geometry is converted to the RAS convention of NIfTI. A mask may also be an RTSTRUCT or a
DICOM-SEG of the image's series (:func:`load_mask`, :mod:`rn_classifier.data.dicom_rt`). Every
volume is then brought to the closest canonical (RAS+) voxel order: increasing index along
array axis 0 / 1 / 2 moves towards the patient's Right / Anterior / Superior. Resampling and intensity normalisation are MONAI transforms (``Spacing``,
``NormalizeIntensity``, ``ScaleIntensityRangePercentiles``).

A volume larger than :data:`MAX_VOXELS` is refused from its header, before any voxel is read,
so a corrupt or hostile header cannot exhaust memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InputError

MAX_VOXELS = 1024**3  # about 2 GB as int16; far beyond any clinical T1CE volume
NIFTI_SUFFIXES = (".nii", ".nii.gz")
SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Volume:
    """A 3D image in RAS voxel order.

    array: (X, Y, Z) voxel values; affine: (4, 4) voxel index → world RAS mm; path: the source.
    """

    array: np.ndarray
    affine: np.ndarray
    path: str = ""

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


def image_format(path: str | os.PathLike) -> str:
    """'nifti', 'sitk' (NRRD/MHA/MHD/single DICOM) or 'dicom_series' (a folder)."""
    p = Path(path)
    name = p.name.lower()
    if p.is_dir():
        return "dicom_series"
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(SITK_SUFFIXES):
        return "sitk"
    raise InputError(f"{p}: unsupported image format; expected one of "
                     f"{list(NIFTI_SUFFIXES + SITK_SUFFIXES)} or a DICOM series folder")


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


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        img = nib.load(str(path))
    except Exception as exc:
        raise InputError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    _check_shape(path, img.shape)
    try:
        img = nib.as_closest_canonical(nib.funcs.squeeze_image(img))
        array = np.asanyarray(img.dataobj)
    except Exception as exc:  # truncated or corrupt data block
        raise InputError(f"{path}: NIfTI data could not be read, the file may be truncated "
                         f"({type(exc).__name__}: {exc})") from exc
    return array, img.affine


def _sitk_to_ras(image) -> tuple[np.ndarray, np.ndarray]:
    """SimpleITK image (LPS world) → (array (X, Y, Z), RAS affine)."""
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(image)  # (z, y, x)
    array = np.transpose(array, tuple(range(array.ndim))[::-1])
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    origin = np.asarray(image.GetOrigin(), dtype=float)
    lps = np.eye(4)
    lps[:3, :3] = direction * spacing[None, :]
    lps[:3, 3] = origin
    return array, LPS_TO_RAS @ lps


def volume_to_sitk(volume: Volume):
    """A :class:`Volume` as a SimpleITK image (LPS world, RAS voxel order)."""
    import SimpleITK as sitk

    lps = LPS_TO_RAS @ volume.affine          # the RAS <-> LPS flip is its own inverse
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    image = sitk.GetImageFromArray(np.transpose(np.asarray(volume.array), (2, 1, 0)))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(tuple(float(v) for v in (lps[:3, :3] / spacing[None, :]).ravel()))
    image.SetOrigin(tuple(float(v) for v in lps[:3, 3]))
    return image


def _read_sitk_image(path: Path, series: bool):
    """A SimpleITK image as stored; ``series``: ``path`` is a folder holding one DICOM image series."""
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
    return image


def _read_sitk(path: Path, series: bool) -> tuple[np.ndarray, np.ndarray]:
    array, affine = _sitk_to_ras(_read_sitk_image(path, series))
    img = nib.as_closest_canonical(nib.Nifti1Image(array, affine))
    return np.asanyarray(img.dataobj), img.affine


def load_volume(path: str | os.PathLike) -> Volume:
    """Read an image or mask from disk into a RAS-ordered :class:`Volume`."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: file does not exist")
    kind = image_format(p)
    if kind == "nifti":
        array, affine = _read_nifti(p)
    else:
        array, affine = _read_sitk(p, series=kind == "dicom_series")
    array = np.asarray(array)
    if array.ndim != 3:
        raise InputError(f"{p}: expected a 3D volume, found shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
            or array.dtype == np.bool_):
        raise InputError(f"{p}: voxels are of type {array.dtype}; expected one real number per voxel "
                         "(integer or floating point), not complex, RGB or structured values")
    affine = np.asarray(affine, dtype=float)
    if not np.isfinite(affine).all():
        raise InputError(f"{p}: the voxel-to-world matrix (affine) holds NaN or infinite values; "
                         "expected a finite affine (check the header's qform / sform)")
    return Volume(array=array, affine=affine, path=str(p))


def load_mask(mask_path: str | os.PathLike, labels, image: Volume) -> tuple[Volume, tuple[int, ...]]:
    """A case's mask on its image's grid, and the mask values that make up its lesion.

    A label image (NIfTI, NRRD, ...) is read as it is; ``labels`` are its lesion codes. An
    RTSTRUCT (``labels`` = ROI names) or DICOM-SEG (segment numbers or labels) is rasterised on
    ``image``'s grid, which must be read from the DICOM series folder it references
    (``image.path``); its ``k``-th ROI or segment gets the value ``k``, and those values are
    returned as the lesion's codes.
    """
    from .dicom_rt import dicom_mask_kind, read_rtstruct, read_seg

    kind = dicom_mask_kind(mask_path)
    if kind is None:
        bad = [v for v in labels if not isinstance(v, (int, np.integer))]
        if bad:
            raise InputError(f"{mask_path}: mask labels {bad} are names, which only an RTSTRUCT or "
                             "DICOM-SEG mask has; expected the integer codes of this label image")
        return load_volume(mask_path), tuple(int(v) for v in labels)
    from .dicom_series import find_image_series

    if not image.path or image_format(image.path) != "dicom_series":
        raise InputError(f"{mask_path}: an {kind.upper()} mask needs as image the DICOM series folder it "
                         f"was drawn on; got {image.path or 'an image without a file'}")
    series = find_image_series(image.path)
    read = read_rtstruct if kind == "rtstruct" else read_seg
    names = [str(v) for v in labels] if kind == "rtstruct" else list(labels)
    array = read(mask_path, names, series, image.affine, image.shape)
    codes = tuple(int(v) for v in np.unique(array) if v)
    return Volume(array=array, affine=image.affine.copy(), path=str(mask_path)), codes


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


def missing_lesion_codes(mask: Volume, labels) -> str | None:
    """Describe the listed lesion codes absent from ``mask``, or None when all are present."""
    values = np.unique(np.asarray(mask.array))
    fractional = values[values != np.round(values)] if np.issubdtype(values.dtype, np.floating) else []
    if len(fractional):
        return (f"mask {mask.path} holds non-integer values (e.g. {float(fractional[0]):g}); expected "
                "integer lesion codes (resampled or smoothed with a non-nearest interpolation?)")
    present = {int(v) for v in values if v != 0}
    missing = [int(code) for code in labels if int(code) not in present]
    if not missing:
        return None
    return (f"mask {mask.path} lacks lesion code(s) {missing}; expected {[int(c) for c in labels]}, "
            f"found {sorted(present)}")


def lesion_mask(mask: Volume, labels) -> np.ndarray:
    """Boolean union of the given mask values (all non-zero values when ``labels`` is empty)."""
    data = np.asarray(mask.array)
    if labels:
        return np.isin(data, np.asarray(list(labels)))
    return data > 0


def resample(volume: Volume, spacing, mode: str = "bilinear") -> Volume:
    """Resample to ``spacing`` mm with MONAI ``Spacing`` (``mode="nearest"`` for masks)."""
    from monai.data import MetaTensor
    from monai.transforms import Spacing

    target = tuple(float(s) for s in spacing)
    if np.allclose(volume.spacing, target, atol=1e-4):
        return volume
    dtype = np.float32 if mode != "nearest" else volume.array.dtype
    tensor = MetaTensor(np.asarray(volume.array, dtype=np.float32)[None], affine=volume.affine)
    out = Spacing(pixdim=target, mode=mode, padding_mode="border" if mode != "nearest" else "zeros",
                  align_corners=True)(tensor)
    array = out[0].numpy()
    if mode == "nearest":
        array = np.rint(array).astype(dtype)
    return Volume(array=array, affine=np.asarray(out.affine, dtype=float), path=volume.path)


def normalise(array: np.ndarray, method: str = "zscore_foreground",
              clip_percentiles=(0.5, 99.5)) -> np.ndarray:
    """Intensity normalisation for T1CE, the same for pretraining, fine-tuning and predict.

    ``zscore_foreground``: clip the intensities to the given percentiles of the foreground
    voxels, then subtract the foreground mean and divide by its standard deviation (MONAI
    ``NormalizeIntensity`` with those statistics). Foreground = voxels brighter than 10 % of the
    image's 99th percentile: head tissue, not air, also when the background holds scanner noise.
    ``percentile``: map the percentiles to [0, 1] and clip (MONAI
    ``ScaleIntensityRangePercentiles``). ``none``: unchanged.
    """
    from monai.transforms import NormalizeIntensity, ScaleIntensityRangePercentiles

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
    if not np.isfinite(x).all():
        raise InputError("image holds NaN or infinite voxels")
    foreground = x > 0.1 * np.percentile(x, 99)
    if not foreground.any():
        raise InputError("image has no foreground (it is constant or all zeros)")
    p_lo, p_hi = np.percentile(x[foreground], [lo, hi])
    clipped = np.where(foreground, np.clip(x, p_lo, p_hi), np.minimum(x, p_hi))
    fg = clipped[foreground]
    std = float(fg.std())
    out = NormalizeIntensity(subtrahend=float(fg.mean()), divisor=std if std > 0 else 1.0)(clipped[None])[0]
    return np.asarray(out, dtype=np.float32)

"""The one road from a case's files to the model's input crop (design seam 6).

:func:`read_case` reads the image and its lesion mask (:mod:`.readers`: any registered image
and mask format), :func:`lesion_crop` brings them to a :class:`CropSetting` — resample to the
setting's spacing (image linear, lesion nearest), normalise the intensities, cut a two-channel
crop ``(T1CE, lesion)`` centred on the lesion's centroid and shifted, where the lesion fits, so
that the whole lesion lies in the crop (:func:`lesion_crop_start`) — :func:`pool_crop` does the same
for an unlabeled pool image (one channel, centred on the head), and :func:`sub_volume_crop` for
a pool sub-volume with a given centre (two channels; the mask may be empty). Preprocessing writes these crops
to the cache, prediction computes them for a new case, and both stop at the same float16
values, so a model serves the inputs it was trained on.

The model sees the centre of a cached crop (:func:`centre_crop`, MONAI's
``CenterSpatialCrop``). Because a crop of size ``s`` starts at ``round(centroid) - s // 2`` and
MONAI's centre crop of ``n`` to ``s`` starts at ``n // 2 - s // 2``, the centre of a larger
cached crop is exactly the lesion crop cut at the model's size: :func:`model_input` cuts that.
The shift that holds the whole lesion is computed for the crop's central ``lesion_view`` voxels
(the model's crop size; default the whole crop), so with ``lesion_view`` = the model's size it
is the same shift in the cached crop and in the model's crop, and the equality still holds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .ingest import Volume, apply_zscore, normalise, resample, zscore_statistics
from .order_statistics import percentile
from .readers import LesionMask, MaskLabel, read_image, read_mask

CROP_DTYPE = np.float16   # what the cache stores and the model is trained on


@dataclass(frozen=True)
class CropSetting:
    """The training setting a case is brought to: voxel spacing (mm, RAS), crop size (voxels),
    intensity normalisation (:func:`rn_classifier.data.ingest.normalise`)."""

    spacing: tuple[float, float, float]
    crop_size: tuple[int, int, int]
    normalisation: str = "zscore_foreground"
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    # the crop's central voxels the whole lesion is placed in where it fits (None: the whole crop)
    lesion_view: tuple[int, int, int] | None = None

    @classmethod
    def from_dict(cls, spacing, crop_size, normalisation: dict | None, lesion_view=None) -> CropSetting:
        """From the stored form (``normalisation``: ``{"method", "clip_percentiles"}``)."""
        norm = dict(normalisation or {})
        return cls(tuple(float(s) for s in spacing), tuple(int(c) for c in crop_size),
                   str(norm.get("method", "zscore_foreground")),
                   tuple(float(p) for p in norm.get("clip_percentiles", (0.5, 99.5))),
                   tuple(int(v) for v in lesion_view) if lesion_view else None)


@dataclass
class Case:
    """A case's files as read: the image (RAS voxel order) and its lesion on the image's grid
    (None for an unlabeled pool image)."""

    image: Volume
    mask: LesionMask | None = None

    @property
    def lesion_volume_ml(self) -> float:
        """The lesion's volume at the stored spacing (mL)."""
        return float(self.mask.voxels * np.prod(self.image.spacing) / 1000.0)


@dataclass
class Crop:
    """A crop at a :class:`CropSetting`.

    array: ``(C, X, Y, Z)`` :data:`CROP_DTYPE` (T1CE, lesion) or ``(1, X, Y, Z)`` (pool).
    affine: crop voxel → world RAS mm. resampled: the image at the setting's spacing (its grid
    is the one the crop is cut from). lesion_*: for a lesion crop, at the setting's spacing.
    """

    array: np.ndarray
    affine: np.ndarray
    resampled: Volume
    lesion_voxels: int | None = None
    lesion_inside_crop: bool | None = None
    lesion_volume_ml: float | None = None


def read_case(image_path: str | os.PathLike, mask_path: str | os.PathLike | None = None,
              mask_labels: Sequence[MaskLabel] = ()) -> Case:
    """Read a case's image and (when given) its lesion mask; the lesion of ``mask_labels`` (empty:
    every non-zero label) on the image's grid. Raises InputError naming the file."""
    image = read_image(image_path)
    voxels = np.asarray(image.array)
    if voxels.dtype.kind == "f" and not np.isfinite(voxels.astype(np.float32, copy=False)).all():
        raise InputError(f"image {image.path} holds NaN or infinite voxels (expected finite intensities)")
    mask = read_mask(mask_path, mask_labels, image) if mask_path else None
    return Case(image=image, mask=mask)


def crop_start(center_voxel, size) -> np.ndarray:
    """First voxel of a crop of ``size`` centred on ``center_voxel`` (rounded half up)."""
    return np.floor(np.asarray(center_voxel) + 0.5).astype(int) - np.asarray(size, dtype=int) // 2


def lesion_crop_start(voxels: np.ndarray, size, lesion_view=None) -> np.ndarray:
    """First voxel of a lesion crop of ``size``: centred on the lesion's centroid, then shifted
    the least along each axis so that the lesion's bounding box lies inside the crop's central
    ``lesion_view`` voxels (default, and at most, the whole crop) where it fits. Where the
    lesion is longer than that, the centroid crop is kept (cut on both sides).

    voxels: ``(N, 3)`` lesion voxel indices. A lesion the centroid crop already holds is not
    moved, so only crops that cut a lesion change.
    """
    size = np.asarray(size, dtype=int)
    view = size if lesion_view is None else np.minimum(np.asarray(lesion_view, dtype=int), size)
    start = crop_start(voxels.mean(axis=0), size)
    window = start + centre_offset(size, view)           # first voxel of the central view
    lo, hi = voxels.min(axis=0), voxels.max(axis=0)
    shift = np.where(window > lo, lo - window, 0) + np.where(window + view - 1 < hi, hi - (window + view - 1), 0)
    return start + np.where(hi - lo + 1 <= view, shift, 0)


def crop_affine(image_affine: np.ndarray, start) -> np.ndarray:
    """Affine of a crop whose voxel 0 is voxel ``start`` of the image with ``image_affine``."""
    affine = np.array(image_affine, dtype=float, copy=True)
    affine[:3, 3] = image_affine[:3, :3] @ np.asarray(start, dtype=float) + image_affine[:3, 3]
    return affine


def crop_with_padding(array: np.ndarray, start, size, pad_value: float) -> np.ndarray:
    """``array[start : start + size]`` in 3D, padded with ``pad_value`` where it leaves the array."""
    start = np.asarray(start, dtype=int)
    size = np.asarray(size, dtype=int)
    out = np.full(tuple(size), pad_value, dtype=array.dtype)
    src_lo = np.maximum(start, 0)
    src_hi = np.minimum(start + size, array.shape)
    if np.any(src_hi <= src_lo):
        return out
    dst_lo = src_lo - start
    dst_hi = dst_lo + (src_hi - src_lo)
    out[tuple(slice(a, b) for a, b in zip(dst_lo, dst_hi))] = \
        array[tuple(slice(a, b) for a, b in zip(src_lo, src_hi))]
    return out


def keep_inside(start, size, shape) -> np.ndarray:
    """Shift a crop start so the crop stays inside the image along every axis the image is at
    least as long as the crop (the pool crops are centred on the head's foreground centroid,
    which sits off-centre in a small sub-volume; padding would teach the encoder flat edges)."""
    start, size, shape = (np.asarray(a, dtype=int) for a in (start, size, shape))
    fits = shape >= size
    return np.where(fits, np.clip(start, 0, np.maximum(shape - size, 0)), start)


def centre_crop(array, size: Sequence[int]):
    """The centre ``size`` voxels of ``array: (C, *spatial)``, zero-padded where it is smaller
    (MONAI ``ResizeWithPadOrCrop``; where the array is larger it is MONAI's ``CenterSpatialCrop``,
    the crop fine-tuning evaluates on). Returns the type MONAI returns for the input."""
    from monai.transforms import ResizeWithPadOrCrop

    return ResizeWithPadOrCrop(spatial_size=tuple(int(s) for s in size), mode="constant")(array)


def centre_offset(shape: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """Voxel of ``shape`` where :func:`centre_crop` to ``size`` starts (``shape`` ≥ ``size``):
    MONAI's centre ``shape // 2`` minus ``size // 2``."""
    return np.asarray(shape, dtype=int) // 2 - np.asarray(size, dtype=int) // 2


def _normalised(image: Volume, setting: CropSetting) -> tuple[Volume, np.ndarray]:
    resampled = resample(image, setting.spacing, mode="bilinear")
    return resampled, _normalise_or_name(resampled, setting)


def _normalised_crop(resampled: Volume, setting: CropSetting, start, size) -> np.ndarray:
    """The crop of the normalised image (padded with its lowest value), normalising only the crop
    where the normalisation is voxel-wise with whole-image statistics (``zscore_foreground``):
    the same values as normalising the whole image first, at a fraction of the cost."""
    if setting.normalisation != "zscore_foreground":
        norm = _normalise_or_name(resampled, setting)
        return crop_with_padding(norm, start, size, float(norm.min()))
    raw = np.asarray(resampled.array, dtype=np.float32)
    try:
        stats = zscore_statistics(raw, setting.clip_percentiles)
    except InputError as exc:
        raise InputError(f"image {resampled.path}: {exc}; expected a T1CE scan") from None
    # the normalisation never decreases an intensity's rank, so the raw minimum pads to the
    # normalised minimum
    return apply_zscore(crop_with_padding(raw, start, size, float(raw.min())), stats)


def _normalise_or_name(resampled: Volume, setting: CropSetting) -> np.ndarray:
    try:
        return normalise(resampled.array, setting.normalisation, setting.clip_percentiles)
    except InputError as exc:  # e.g. a blank image: name the file
        raise InputError(f"image {resampled.path}: {exc}; expected a T1CE scan") from None


def lesion_crop(case: Case, setting: CropSetting) -> Crop:
    """The two-channel crop ``(normalised T1CE, lesion)`` centred on the lesion at ``setting``,
    placed to hold the whole lesion where it fits (:func:`lesion_crop_start`).

    Outside the image the T1CE channel is padded with the image's lowest normalised value.
    Raises InputError when the lesion vanishes at the setting's spacing.
    """
    if case.mask is None:
        raise InputError(f"image {case.image.path}: a lesion crop needs the case's lesion mask")
    resampled = resample(case.image, setting.spacing, mode="bilinear")
    lesion_grid = Volume(case.mask.lesion.astype(np.uint8), case.image.affine, case.mask.path)
    lesion = resample(lesion_grid, setting.spacing, mode="nearest").array > 0
    if not lesion.any():
        raise InputError(f"mask {case.mask.path}: the lesion of {list(case.mask.labels) or 'every non-zero label'} "
                         f"is empty at {list(setting.spacing)} mm ({case.mask.voxels} voxel(s) at the "
                         "stored spacing)")
    size = np.asarray(setting.crop_size, dtype=int)
    voxels = lesion_voxels(lesion)
    start = lesion_crop_start(voxels, size, setting.lesion_view)
    inside = bool((voxels.min(0) >= start).all() and (voxels.max(0) < start + size).all())
    array = np.stack([_normalised_crop(resampled, setting, start, size),
                      crop_with_padding(lesion, start, size, False).astype(np.float32)])
    return Crop(array=array.astype(CROP_DTYPE), affine=crop_affine(resampled.affine, start),
                resampled=resampled, lesion_voxels=len(voxels), lesion_inside_crop=inside,
                lesion_volume_ml=float(len(voxels) * np.prod(setting.spacing) / 1000.0))


def lesion_voxels(lesion: np.ndarray) -> np.ndarray:
    """The ``(N, 3)`` voxel indices of ``lesion`` (those of ``np.argwhere``), found in one scan of
    its voxels in memory order (a view of a C- or Fortran-order array), so possibly in another
    order: what they give (centroid, bounding box, count) is the same in any order, the centroid
    being a mean of integers."""
    order = "F" if lesion.flags.f_contiguous and not lesion.flags.c_contiguous else "C"
    flat = np.flatnonzero(lesion.ravel(order=order))
    return np.stack(np.unravel_index(flat, lesion.shape, order=order), axis=1)


def pool_crop(image: Volume, setting: CropSetting) -> Crop:
    """The one-channel crop of an unlabeled pool image, centred on the head's foreground
    (voxels above the median) and kept inside the image where it fits."""
    resampled, norm = _normalised(image, setting)
    size = np.asarray(setting.crop_size, dtype=int)
    foreground = norm > percentile(norm, 50)
    center = (np.argwhere(foreground).mean(axis=0) if foreground.any()
              else (np.asarray(norm.shape) - 1) / 2)
    start = keep_inside(crop_start(center, size), size, norm.shape)
    array = crop_with_padding(norm, start, size, float(norm.min()))[None]
    return Crop(array=array.astype(CROP_DTYPE), affine=crop_affine(resampled.affine, start),
                resampled=resampled)


def sub_volume_crop(case: Case, centre_world, setting: CropSetting) -> Crop:
    """The two-channel crop ``(normalised T1CE, lesion)`` centred on a world point (RAS mm):
    one sub-volume of a pretraining pool (``build-pool``'s ``centre_x, centre_y, centre_z``).

    The lesion channel is zero where the scan has no mask (a lesion-free collection), so every
    pool crop has the channels of a labelled crop and lesion-aware views can read the mask.
    Raises InputError when the centre lies outside the image.
    """
    resampled, norm = _normalised(case.image, setting)
    centre = resampled.world_to_voxel(np.asarray(centre_world, dtype=float))
    if np.any(centre < -0.5) or np.any(centre > np.asarray(norm.shape) - 0.5):
        raise InputError(f"image {case.image.path}: the sub-volume centre {np.round(centre_world, 1).tolist()} "
                         f"mm lies outside the image (voxel {np.round(centre, 1).tolist()} of {list(norm.shape)})")
    if case.mask is not None:
        lesion_grid = Volume(case.mask.lesion.astype(np.uint8), case.image.affine, case.mask.path)
        lesion = resample(lesion_grid, setting.spacing, mode="nearest").array > 0
    else:
        lesion = np.zeros(norm.shape, dtype=bool)
    size = np.asarray(setting.crop_size, dtype=int)
    start = crop_start(centre, size)
    array = np.stack([crop_with_padding(norm, start, size, float(norm.min())),
                      crop_with_padding(lesion.astype(np.float32), start, size, 0.0)])
    inside = crop_with_padding(lesion, start, size, False)
    return Crop(array=array.astype(CROP_DTYPE), affine=crop_affine(resampled.affine, start),
                resampled=resampled, lesion_voxels=int(inside.sum()),
                lesion_volume_ml=float(inside.sum() * np.prod(setting.spacing) / 1000.0))


def model_input(case: Case, setting: CropSetting) -> tuple[np.ndarray, Crop]:
    """The model's input for a new case: ``(2, X, Y, Z)`` float32 at ``setting`` (whose crop size
    is the model's), equal to the centre of the case's cached crop; and the crop it comes from."""
    crop = lesion_crop(case, setting)
    return crop.array.astype(np.float32), crop

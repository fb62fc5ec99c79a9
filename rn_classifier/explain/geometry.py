"""Placing a map computed on the model's crop back into the patient's image.

Three grids take part, all in world RAS millimetres:

* the **patch grid** of the ViT (e.g. 4³ patches of 8³ voxels): one attention value per patch;
* the **crop**: the model's input, ``crop_size`` voxels at the training spacing, cut around the
  lesion centroid from the resampled RAS image; its affine (crop voxel → world) is the
  resampled image's affine with the origin moved to the crop's first voxel
  (:func:`rn_classifier.data.crop.crop_affine`, the affine the cache holds);
* the **image grid**: the grid the user's file is stored on (shape + affine), where the saved
  NIfTI lives so that it opens aligned with the image in 3D Slicer or ITK-SNAP.

:func:`upsample_to_crop` interpolates the patch values trilinearly to crop voxels (each patch
value sits at its patch's centre), :func:`crop_to_grid` samples the crop map at the world
position of every image voxel (trilinear; zero outside the crop), so no orientation convention
has to be matched: only world coordinates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class Grid:
    """A voxel grid: ``shape`` (X, Y, Z) and ``affine`` (4, 4) voxel index → world RAS mm."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))


def upsample_to_crop(patch_map: np.ndarray, crop_size) -> np.ndarray:
    """``(gx, gy, gz)`` patch values → ``crop_size`` voxels, trilinear between patch centres."""
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(np.asarray(patch_map, dtype=np.float32))[None, None]
    out = F.interpolate(x, size=tuple(int(s) for s in crop_size), mode="trilinear",
                        align_corners=False)
    return out[0, 0].numpy()


def crop_to_grid(crop_map: np.ndarray, crop_affine_: np.ndarray, grid: Grid) -> np.ndarray:
    """Sample ``crop_map`` (on the crop with ``crop_affine_``) at every voxel of ``grid``.

    Returns ``grid.shape`` float32, trilinear inside the crop and 0 outside it. Only the
    image voxels inside the crop's bounding box are sampled.
    """
    from scipy.ndimage import map_coordinates

    crop_map = np.asarray(crop_map, dtype=np.float32)
    out = np.zeros(grid.shape, dtype=np.float32)
    # crop corners → image voxel coordinates → the bounding box of image voxels to sample
    corners = np.array([[i, j, k] for i in (-0.5, crop_map.shape[0] - 0.5)
                        for j in (-0.5, crop_map.shape[1] - 0.5)
                        for k in (-0.5, crop_map.shape[2] - 0.5)])
    world = corners @ crop_affine_[:3, :3].T + crop_affine_[:3, 3]
    to_grid = np.linalg.inv(grid.affine)
    ijk = world @ to_grid[:3, :3].T + to_grid[:3, 3]
    lo = np.maximum(np.floor(ijk.min(axis=0)).astype(int), 0)
    hi = np.minimum(np.ceil(ijk.max(axis=0)).astype(int) + 1, grid.shape)
    if np.any(hi <= lo):
        return out
    axes = [np.arange(a, b) for a, b in zip(lo, hi)]
    ii, jj, kk = np.meshgrid(*axes, indexing="ij")
    voxels = np.stack([ii.ravel(), jj.ravel(), kk.ravel()], axis=1).astype(float)
    grid_to_crop = np.linalg.inv(crop_affine_) @ grid.affine
    coords = voxels @ grid_to_crop[:3, :3].T + grid_to_crop[:3, 3]
    # mode="constant" with cval 0: the map is 0 outside the crop; within half a voxel of the
    # crop border the nearest crop value is used (no fade towards 0 inside the crop)
    inside = np.all((coords >= -0.5) & (coords <= np.asarray(crop_map.shape) - 0.5), axis=1)
    clipped = np.clip(coords, 0, np.asarray(crop_map.shape) - 1)
    values = map_coordinates(crop_map, clipped.T, order=1, mode="nearest")
    block = np.where(inside, values, 0.0).reshape(ii.shape)
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = block
    return out


def stored_grid(path: str | os.PathLike, fallback: Grid | None = None) -> Grid:
    """The voxel grid the file at ``path`` is stored on, read from its header only
    (:func:`rn_classifier.data.readers.stored_grid`: NIfTI's affine; NRRD / MHA / a DICOM file's
    LPS geometry converted to RAS). A DICOM series folder has no single stored grid: ``fallback``
    (the RAS grid it was read into) is used."""
    from ..data.readers import stored_grid as header_grid

    p = Path(path)
    found = header_grid(p)
    if found is not None:
        return Grid(found[0], found[1])
    if fallback is None:
        raise InputError(f"{p}: a DICOM series has no single stored grid; pass the grid it was read into")
    return fallback


def save_map_nifti(array: np.ndarray, grid: Grid, path: str | os.PathLike, description: str) -> Path:
    """Write a float32 map on ``grid`` as NIfTI (sform and qform = the grid's affine), atomically.

    array: ``grid.shape``, or ``(*grid.shape, K)`` for K maps in one file (e.g. one per head).
    """
    from .. import atomic

    if tuple(array.shape[:3]) != tuple(grid.shape) or array.ndim not in (3, 4):
        raise ValueError(f"map shape {array.shape} differs from its grid {grid.shape}")
    img = nib.Nifti1Image(np.asarray(array, dtype=np.float32), grid.affine)
    img.header.set_sform(grid.affine, code=1)   # scanner-anatomical world, as the image
    img.header.set_qform(grid.affine, code=1)
    img.header["descrip"] = description[:79].encode()
    path = Path(path)
    with atomic.atomic_path(path, suffix=".nii.gz") as tmp:
        nib.save(img, str(tmp))
    return path

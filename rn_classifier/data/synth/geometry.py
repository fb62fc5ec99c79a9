"""Voxel grids and rigid transforms in world (RAS, mm) coordinates.

Every synthetic image is rendered on a :class:`Grid`: an axis-aligned RAS voxel lattice with a
per-axis spacing (anisotropic for the 5 mm-slice centre). Anatomy, lesions and scanner effects
all work in world millimetres, so the same patient can be rendered on any grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    """An axis-aligned RAS voxel lattice.

    ``shape``: voxels along x, y, z; ``spacing``: mm per voxel; ``origin``: world RAS mm of the
    centre of voxel (0, 0, 0).
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    @classmethod
    def covering(cls, lo_mm, hi_mm, spacing) -> "Grid":
        """Smallest grid with ``spacing`` whose voxel centres span the box [lo_mm, hi_mm]."""
        lo = np.asarray(lo_mm, float)
        hi = np.asarray(hi_mm, float)
        sp = np.asarray(spacing, float)
        shape = np.maximum(np.ceil((hi - lo) / sp).astype(int) + 1, 1)
        # centre the lattice on the box so rounding spreads evenly on both sides
        origin = (lo + hi) / 2 - (shape - 1) * sp / 2
        return cls(tuple(int(s) for s in shape), tuple(float(s) for s in sp),
                   tuple(float(o) for o in origin))

    @property
    def affine(self) -> np.ndarray:
        """4x4 voxel → world RAS affine (diagonal: the grid is axis-aligned)."""
        aff = np.diag([*self.spacing, 1.0])
        aff[:3, 3] = self.origin
        return aff

    def axes(self) -> list[np.ndarray]:
        """World coordinate of the voxel centres along each axis: three 1-D arrays."""
        return [o + s * np.arange(n, dtype=np.float32)
                for o, s, n in zip(self.origin, self.spacing, self.shape)]

    def world(self, index_slices: tuple[slice, slice, slice] | None = None) -> np.ndarray:
        """World coordinates of (a box of) the voxel centres: float32 (3, X, Y, Z)."""
        axes = self.axes()
        if index_slices is not None:
            axes = [a[s] for a, s in zip(axes, index_slices)]
        return np.stack(np.meshgrid(*axes, indexing="ij")).astype(np.float32)

    def box(self, center_mm, half_width_mm, align_z: int = 1) -> tuple[slice, slice, slice]:
        """Index slices of the voxels within ``half_width_mm`` of ``center_mm`` (clipped).

        ``align_z``: the z start and stop are rounded outwards to multiples of it, so a box on a
        fine grid maps onto whole slices when ``align_z`` fine slices make one thick slice.
        """
        c = np.asarray(center_mm, float)
        out = []
        for axis in range(3):
            lo = (c[axis] - half_width_mm - self.origin[axis]) / self.spacing[axis]
            hi = (c[axis] + half_width_mm - self.origin[axis]) / self.spacing[axis]
            start = max(int(np.floor(lo)), 0)
            stop = min(int(np.ceil(hi)) + 1, self.shape[axis])
            if axis == 2 and align_z > 1:
                start = (start // align_z) * align_z
                stop = min(-(-stop // align_z) * align_z, self.shape[axis])
            out.append(slice(start, max(stop, start)))
        return tuple(out)

    def refined_z(self, factor: int) -> "Grid":
        """The same field of view with each slice split into ``factor`` thinner slices.

        Used to simulate thick slices: render on the refined grid, then average blocks of
        ``factor`` slices (:func:`average_slices`) — a box slice profile.
        """
        if factor == 1:
            return self
        sz = self.spacing[2] / factor
        z0 = self.origin[2] - self.spacing[2] / 2 + sz / 2
        return Grid((self.shape[0], self.shape[1], self.shape[2] * factor),
                    (self.spacing[0], self.spacing[1], sz), (self.origin[0], self.origin[1], z0))


def average_slices(volume: np.ndarray, factor: int) -> np.ndarray:
    """Average consecutive blocks of ``factor`` slices along the last axis: (X, Y, Z*f) → (X, Y, Z)."""
    if factor == 1:
        return volume
    x, y, z = volume.shape
    if z % factor:
        raise ValueError(f"slice count {z} is not a multiple of the averaging factor {factor}")
    return volume.reshape(x, y, z // factor, factor).mean(axis=3, dtype=np.float32)


def rotation_matrix(angles_rad) -> np.ndarray:
    """Rotation about x, then y, then z (radians): (3, 3)."""
    ax, ay, az = angles_rad
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3-D rotation (QR of a Gaussian matrix, sign-fixed): (3, 3)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


@dataclass(frozen=True)
class RigidTransform:
    """p = R @ x + t: maps a scan's world coordinates ``x`` into the patient's own frame ``p``.

    Each time point of a patient is the same head placed slightly differently in the scanner.
    """

    rotation: np.ndarray
    translation: np.ndarray

    @classmethod
    def identity(cls) -> "RigidTransform":
        return cls(np.eye(3), np.zeros(3))

    @classmethod
    def random(cls, rng: np.random.Generator, max_deg: float, max_mm: float) -> "RigidTransform":
        angles = np.deg2rad(rng.uniform(-max_deg, max_deg, 3))
        return cls(rotation_matrix(angles), rng.uniform(-max_mm, max_mm, 3))

    def apply(self, points: np.ndarray) -> np.ndarray:
        """points: (3, ...) world mm → (3, ...) patient-frame mm (float32)."""
        flat = points.reshape(3, -1).astype(np.float32, copy=False)
        out = self.rotation.astype(np.float32) @ flat + self.translation.astype(np.float32)[:, None]
        return out.reshape(points.shape)

    def inverse_apply(self, points: np.ndarray) -> np.ndarray:
        """points: (3, ...) patient-frame mm → (3, ...) scan world mm."""
        flat = points.reshape(3, -1).astype(np.float32) - self.translation.astype(np.float32)[:, None]
        return (self.rotation.T.astype(np.float32) @ flat).reshape(points.shape)

"""Synthetic head anatomy with T1CE-like contrast, built from the MNI152 template.

The template is nilearn's shipped ICBM152 2009 T1 template (1 mm, skull-stripped) with its
brain mask and white-matter probability map — package data, nothing is downloaded. Each
synthetic patient is the template under a random affine (head size, pose) plus a smooth random
displacement field (individual anatomy). Post-contrast T1 appearance is approximated by:

* brain tissue: the template T1 intensity rescaled so white matter ≈ 1, with a per-patient
  grey/white contrast (a gamma on the intensity);
* a simple head around the brain, as layers by distance from the brain surface: subarachnoid
  CSF, dura (enhancing after gadolinium), skull (dark cortical bone, brighter diploë) and scalp
  fat (bright on T1);
* enhancing vessels: thin tubes following random smooth paths from the sulci, which give the
  image bright tubular structures that are not lesions (as on real T1CE).

Intensities are relative (white matter ≈ 1); the scanner model in ``centers.py`` turns them
into stored values.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .geometry import Grid, RigidTransform, rotation_matrix

# Head layers outside the brain, by distance from the brain surface (mm) → relative T1CE
# intensity. Thicknesses are typical adult values; exact numbers do not matter for the study.
_HEAD_LAYERS_MM = [  # (outer edge, intensity)
    (2.5, 0.30),   # subarachnoid CSF
    (3.5, 0.30),   # dura (its enhancement is added separately, see dura channel)
    (5.0, 0.08),   # outer table of the skull
    (7.0, 0.45),   # diploë (marrow)
    (8.5, 0.08),   # inner table
    (14.0, 0.85),  # scalp, mostly fat: bright on T1
]
_PAD_MM = 18          # template padding so the head layers fit inside the array
_TEMPLATE_WM_T1 = 0.87  # mean template intensity where white-matter probability > 0.9
_DURA_GAIN = 0.7        # dural enhancement relative to white matter


@dataclass(frozen=True)
class TemplateLevel:
    """Template channels on one lattice: ``t1`` T1CE-like intensity with head layers and
    enhancing dura (white matter ≈ 1), ``wm`` white-matter probability, both float32
    (X, Y, Z); ``affine``: voxel → MNI world (mm)."""

    t1: np.ndarray
    wm: np.ndarray
    affine: np.ndarray

    @property
    def inverse_affine(self) -> np.ndarray:
        return np.linalg.inv(self.affine)

    def sample(self, channel: str, template_world: np.ndarray) -> np.ndarray:
        """Trilinear samples of a channel at template-world points (3, ...) → (...)."""
        inv = self.inverse_affine.astype(np.float32)
        flat = template_world.reshape(3, -1)
        idx = inv[:3, :3] @ flat + inv[:3, 3, None]
        values = ndimage.map_coordinates(getattr(self, channel), idx, order=1,
                                         mode="constant", cval=0.0)
        return values.reshape(template_world.shape[1:])


@dataclass(frozen=True)
class Template:
    """The MNI152 head at 1 mm (``fine``) and 2 mm (``coarse``, block-averaged, used for
    grids of ≥ 2 mm so sampling is faster and not aliased), plus tables of the coarse brain
    voxels used to place lesions and vessels: ``brain_points`` (N, 3) template world mm,
    ``brain_depth`` (N,) distance inside the brain (mm), ``brain_wm`` (N,) white-matter
    probability, ``brain_t1`` (N,) intensity."""

    fine: TemplateLevel
    coarse: TemplateLevel
    brain_points: np.ndarray
    brain_depth: np.ndarray
    brain_wm: np.ndarray
    brain_t1: np.ndarray

    def level_for(self, spacing) -> TemplateLevel:
        return self.coarse if min(spacing) >= 2.0 else self.fine

    def brain_box_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """World bounding box (lo, hi) of the brain, mm."""
        return self.brain_points.min(0), self.brain_points.max(0)


@functools.lru_cache(maxsize=1)
def load_template() -> Template:
    """Load nilearn's packaged MNI152 template (1 mm) and derive the head channels.

    Uses only files shipped inside nilearn (``nilearn/datasets/data``); no network access.
    """
    from nilearn import datasets

    t1_img = datasets.load_mni152_template(resolution=1)
    t1 = t1_img.get_fdata(dtype=np.float32)
    brain = datasets.load_mni152_brain_mask(resolution=1).get_fdata(dtype=np.float32) > 0.5
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32)

    pad = _PAD_MM
    t1 = np.pad(t1, pad) / _TEMPLATE_WM_T1
    brain = np.pad(brain, pad)
    wm = np.pad(wm, pad)
    affine = t1_img.affine.copy()
    affine[:3, 3] -= affine[:3, :3] @ np.full(3, pad)

    # distances to the brain surface (mm), computed at 2 mm: they only shape the smooth head
    # layers and the lesion placement, so the coarse version is exact enough and 10x faster
    brain2 = _block_mean(brain.astype(np.float32)) > 0.5
    outside = ndimage.distance_transform_edt(~brain2, sampling=2.0).astype(np.float32)
    depth = ndimage.distance_transform_edt(brain2, sampling=2.0).astype(np.float32)
    dist = ndimage.zoom(outside, 2, order=1)[: brain.shape[0], : brain.shape[1], : brain.shape[2]]
    dist = np.pad(dist, [(0, b - d) for b, d in zip(brain.shape, dist.shape)], mode="edge")

    head = np.zeros_like(t1)
    inner = 0.0
    for outer, value in _HEAD_LAYERS_MM:
        head[(dist > inner) & (dist <= outer)] = value
        inner = outer
    head = ndimage.gaussian_filter(head, 0.7)
    dura = np.exp(-(((dist - 3.0) / 0.8) ** 2))
    t1_head = np.where(brain, t1, head + _DURA_GAIN * dura).astype(np.float32)
    fine = TemplateLevel(t1=t1_head, wm=wm.astype(np.float32), affine=affine)

    coarse_affine = affine.copy()
    coarse_affine[:3, :3] *= 2
    coarse_affine[:3, 3] += affine[:3, :3] @ np.full(3, 0.5)   # centre of each 2x2x2 block
    coarse = TemplateLevel(t1=_block_mean(t1_head), wm=_block_mean(wm), affine=coarse_affine)
    idx = np.argwhere(depth > 0)
    points = idx @ coarse_affine[:3, :3].T + coarse_affine[:3, 3]
    cells = tuple(idx.T)
    return Template(fine=fine, coarse=coarse, brain_points=points.astype(np.float32),
                    brain_depth=depth[cells], brain_wm=coarse.wm[cells], brain_t1=coarse.t1[cells])


def _block_mean(a: np.ndarray) -> np.ndarray:
    """Mean over 2x2x2 blocks (odd trailing voxels dropped): (X, Y, Z) → (X//2, Y//2, Z//2)."""
    x, y, z = (s // 2 * 2 for s in a.shape)
    return a[:x, :y, :z].reshape(x // 2, 2, y // 2, 2, z // 2, 2).mean((1, 3, 5)).astype(np.float32)


@dataclass(frozen=True)
class PatientAnatomy:
    """One synthetic patient's head: how the template is deformed and how it looks.

    ``linear`` (3, 3) and ``offset`` (3,): patient frame (mm) → template world (mm) before
    the displacement; ``displacement``: (3, NX, NY, NZ) cubic B-spline coefficients (already
    prefiltered) of the displacement in mm on a coarse control lattice in template world
    (origin ``disp_origin``, spacing ``disp_spacing`` mm per axis); ``gamma``: grey/white
    contrast exponent; ``vessel_gain``: vessel enhancement; ``vessels``: (N, 3) points along
    the vessel paths, patient frame.
    """

    linear: np.ndarray
    offset: np.ndarray
    displacement: np.ndarray
    disp_origin: np.ndarray
    disp_spacing: np.ndarray
    gamma: float
    vessel_gain: float
    vessels: np.ndarray

    def affine_to_template(self, points: np.ndarray) -> np.ndarray:
        """The affine part only: (3, ...) patient frame → (3, ...) template world."""
        flat = points.reshape(3, -1)
        out = self.linear.astype(np.float32) @ flat + self.offset.astype(np.float32)[:, None]
        return out.reshape(points.shape)

    def displacement_at(self, template_world: np.ndarray) -> np.ndarray:
        """Smooth displacement (mm) at template-world points: (3, N) → (3, N)."""
        idx = ((template_world - self.disp_origin[:, None]) / self.disp_spacing[:, None]).astype(np.float32)
        return np.stack([ndimage.map_coordinates(c, idx, order=3, mode="nearest", prefilter=False)
                         for c in self.displacement])

    def to_template(self, points: np.ndarray) -> np.ndarray:
        """points: (3, ...) patient frame → (3, ...) template world, mm."""
        tw = self.affine_to_template(points).reshape(3, -1)
        return (tw + self.displacement_at(tw)).reshape(points.shape)

    def from_template_affine(self, template_world: np.ndarray) -> np.ndarray:
        """Approximate inverse (affine part only): (3, N) template world → (3, N) patient frame."""
        return np.linalg.solve(self.linear, template_world - self.offset[:, None])


def draw_patient_anatomy(rng: np.random.Generator, template: Template,
                         deformation_mm: float = 3.0) -> PatientAnatomy:
    """Draw a random patient: pose/size affine, smooth displacement, contrast, vessels."""
    scale = rng.uniform(0.92, 1.08) * rng.uniform(0.97, 1.03, 3)
    rot = rotation_matrix(np.deg2rad(rng.uniform(-6, 6, 3)))
    linear = rot @ np.diag(1.0 / scale)          # patient → template: undo the patient's size
    offset = rng.uniform(-5, 5, 3)

    # smooth displacement: Gaussian noise on a ~35 mm control lattice (cubic B-spline)
    lo, hi = template.brain_box_mm()
    lo, hi = lo - 40, hi + 40
    lattice = np.array([7, 8, 7])
    control = rng.standard_normal((3, *lattice)).astype(np.float32) * deformation_mm
    # B-spline coefficients once here, so each evaluation skips the prefilter
    control = np.stack([ndimage.spline_filter(c, order=3, mode="nearest") for c in control])
    vessels = _draw_vessels(rng, template, linear, offset)
    return PatientAnatomy(
        linear=linear, offset=offset, displacement=control,
        disp_origin=lo, disp_spacing=(hi - lo) / (lattice - 1), gamma=float(rng.uniform(0.85, 1.25)),
        vessel_gain=float(rng.uniform(0.5, 1.1)), vessels=vessels,
    )


def _draw_vessels(rng, template: Template, linear, offset, n_range=(12, 24)) -> np.ndarray:
    """Random smooth paths starting in sulcal / ventricular CSF: (N, 3) patient-frame points.

    Each path is a momentum random walk with 0.5 mm steps, 15-60 mm long; points are mapped
    back to the patient frame with the inverse affine (the small displacement is ignored: the
    vessels only need to look plausible, not to follow real anatomy).
    """
    csf = template.brain_points[(template.brain_t1 < 0.5) & (template.brain_t1 > 0.1)]
    n = int(rng.integers(*n_range))
    starts = csf[rng.integers(0, len(csf), n)]
    step = 0.5
    paths = []
    for pos in starts:
        n_steps = int(rng.uniform(15, 60) / step)
        # direction = running sum of small random turns, normalised: a smooth curve
        turns = rng.standard_normal((n_steps, 3)) * 0.15
        turns[0] = rng.standard_normal(3)
        direction = np.cumsum(turns, axis=0)
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        paths.append(pos + step * np.cumsum(direction, axis=0))
    points_template = np.concatenate(paths)
    return np.linalg.solve(linear, (points_template - offset).T).T.astype(np.float32)


@dataclass
class AnatomyRender:
    """Anatomy on a scan grid: ``t1ce`` float32 (X, Y, Z), relative intensity (white
    matter ≈ 1); ``template_world`` float32 (3, X, Y, Z): where each voxel came from in the
    template (lesion rendering samples the white-matter map there, for oedema)."""

    t1ce: np.ndarray
    template_world: np.ndarray


def render_anatomy(template: Template, anatomy: PatientAnatomy, grid: Grid,
                   pose: RigidTransform, mass_effects=()) -> AnatomyRender:
    """Render the patient's head on ``grid`` for a scan with head pose ``pose``.

    ``mass_effects``: iterable of (centre (3,) patient frame mm, radius_mm): tissue is pushed
    radially away from each centre as if a sphere of that radius had been inserted
    (incompressible shell: a point at distance r moves to (r³ + R³)^(1/3)).

    The smooth displacement is evaluated on a ~10 mm sub-lattice of the grid and interpolated
    separably to every voxel (exact for the affine part, which is added per voxel); only the
    template intensity itself is sampled per voxel.
    """
    patient = pose.apply(grid.world())                    # (3, X, Y, Z) patient frame
    for centre, radius in mass_effects:
        _push_away(patient, grid, pose, np.asarray(centre, np.float32), float(radius))
    tw = anatomy.affine_to_template(patient)
    tw += _smooth_displacement(anatomy, grid, pose)
    level = template.level_for(grid.spacing)
    t1 = level.sample("t1", tw)
    t1ce = np.power(np.clip(t1, 0, None), anatomy.gamma, dtype=np.float32)
    if anatomy.vessel_gain > 0:
        t1ce += anatomy.vessel_gain * _vessel_map(anatomy.vessels, grid, pose)
    return AnatomyRender(t1ce=t1ce.astype(np.float32), template_world=tw)


def _smooth_displacement(anatomy: PatientAnatomy, grid: Grid, pose: RigidTransform) -> np.ndarray:
    """The displacement field on every voxel of ``grid``: (3, X, Y, Z) mm."""
    # 10 mm knots: the field varies over ~35 mm, so linear interpolation between knots is
    # within ~0.3 mm of the spline
    step = [max(int(round(10.0 / s)), 1) for s in grid.spacing]
    sub_idx = [np.arange(0, n + st, st) for n, st in zip(grid.shape, step)]  # covers the grid
    sub_axes = [o + s * i for o, s, i in zip(grid.origin, grid.spacing, sub_idx)]
    sub_world = np.stack(np.meshgrid(*sub_axes, indexing="ij")).astype(np.float32)
    sub_tw = anatomy.affine_to_template(pose.apply(sub_world)).reshape(3, -1)
    coarse = anatomy.displacement_at(sub_tw).reshape(3, *sub_world.shape[1:])
    weights = [_linear_weights(np.arange(n), i) for n, i in zip(grid.shape, sub_idx)]
    # separable interpolation: one matrix product per axis (float32 BLAS)
    wx, wy, wz = weights
    c, a, b, k = coarse.shape
    nx, ny, nz = grid.shape
    out = np.tensordot(wx, coarse.astype(np.float32), axes=(1, 1))            # (X, c, b, k)
    out = wy[None] @ out.reshape(nx * c, b, k)                                # (X*c, Y, k)
    out = out.reshape(nx * c * ny, k) @ wz.T                                  # (X*c*Y, Z)
    return out.reshape(nx, c, ny, nz).transpose(1, 0, 2, 3)


def _linear_weights(fine: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Linear interpolation matrix from values at ``knots`` to positions ``fine``: (F, K)."""
    pos = np.interp(fine, knots, np.arange(len(knots)))
    lo = np.clip(np.floor(pos).astype(int), 0, len(knots) - 1)
    hi = np.clip(lo + 1, 0, len(knots) - 1)
    frac = (pos - lo).astype(np.float32)
    w = np.zeros((len(fine), len(knots)), np.float32)
    w[np.arange(len(fine)), lo] += 1 - frac
    w[np.arange(len(fine)), hi] += frac
    return w


def _push_away(points: np.ndarray, grid: Grid, pose: RigidTransform, centre: np.ndarray,
               radius: float) -> None:
    """In place: displace patient-frame sampling points near ``centre`` (mass effect)."""
    reach = 4.0 * radius
    box = grid.box(pose.inverse_apply(centre.reshape(3, 1)).ravel(), reach)
    local = points[(slice(None), *box)]
    rel = local - centre.reshape(3, 1, 1, 1)
    r = np.sqrt((rel ** 2).sum(0)) + 1e-3
    # tissue seen at r came from r_src < r: r = (r_src³ + R³)^(1/3) ⇒ r_src = (r³ - R³)^(1/3)
    r_src = np.cbrt(np.clip(r ** 3 - radius ** 3, 0, None))
    taper = np.clip((reach - r) / radius, 0, 1)          # fade to zero at the box edge
    local -= rel / r * ((r - r_src) * taper)


def _vessel_map(vessels: np.ndarray, grid: Grid, pose: RigidTransform) -> np.ndarray:
    """Splat vessel points onto the grid and blur them into ~2 mm tubes: (X, Y, Z) in 0..1."""
    world = pose.inverse_apply(vessels.T)                 # (3, N) scan world
    idx = np.rint((world - np.asarray(grid.origin, np.float32)[:, None])
                  / np.asarray(grid.spacing, np.float32)[:, None]).astype(int)
    keep = np.all((idx >= 0) & (idx < np.asarray(grid.shape)[:, None]), axis=0)
    volume = np.zeros(grid.shape, np.float32)
    np.add.at(volume, tuple(idx[:, keep]), 1.0)
    sigma_mm = 0.8
    sigma = [max(sigma_mm / s, 0.5) for s in grid.spacing]
    volume = ndimage.gaussian_filter(volume, sigma)
    # a straight path of 0.5 mm steps peaks at this count after blurring (thin-line density
    # λ/(2πσ²) per mm³ times the voxel volume); divide by it so a vessel's centre is ≈ 1
    points_per_mm = 2.0
    peak = points_per_mm / (2 * np.pi * sigma_mm ** 2) * float(np.prod(grid.spacing))
    return np.clip(volume / peak, 0, 1)

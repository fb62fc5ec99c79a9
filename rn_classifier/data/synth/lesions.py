"""Synthetic post-radiosurgery lesions: radiation necrosis (RN) and tumour progression.

The two phenotypes differ the way neuroradiology describes them on post-contrast T1
(e.g. Kumar et al., Radiology 2000, "Swiss cheese / soap-bubble" enhancement of RN; Mullins
et al., AJNR 2005):

* **progression** — thick, nodular, avid enhancing wall (solid tumour); smaller necrotic core;
  well-defined lobulated margin; less perilesional oedema; grows between time points;
* **radiation necrosis** — thin, feathery enhancing wall with an ill-defined spiky margin
  ("spreading wavefront"); "soap-bubble" interior: several cysts separated by thin enhancing
  septa, hence a larger necrotic fraction; more oedema (T1 hypointensity in white matter);
  stable or shrinking between time points.

Every trait is a continuous latent parameter drawn from a class-conditional distribution:
``z ~ N(±d'/2 · separation, 1)``, mapped monotonically to its physical range. The per-trait
separations ``d'`` are modest, so each trait alone separates the classes only weakly (AUC
≈ 0.6–0.8 if measured perfectly) while all traits together bound the achievable AUC at
≈ 0.95 (Bayes-optimal) — a strong image model can reach the published range, not 1.0. Lesion size is drawn independently of the class, so size alone does
not give the answer. Several traits (oedema outside the mask, septa and margin texture) are
visible in the image but not in the segmentation mask: handcrafted mask-based radiomics sees
part of the signal, a model of the image sees more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import ndtr

RN, PROGRESSION = 1, 0


@dataclass(frozen=True)
class Trait:
    """One phenotype trait: physical range, whether RN has the higher values, and the
    class separation ``dprime`` (difference of class means in latent standard deviations)."""

    name: str
    lo: float
    hi: float
    rn_higher: bool
    dprime: float
    log: bool = False


# d' values chosen so that the Bayes-optimal AUC over all traits is ≈ 0.95 at separation 1
# (sqrt(sum d'^2) ≈ 2.4) while no single trait exceeds AUC ≈ 0.8. The traits seen outside the
# mask or only in fine texture (oedema, feathering, septa) carry the larger d': a model of the
# image around the lesion can beat radiomics of the masked lesion. With 109 cases, a logistic
# model given the exact latent traits reaches CV AUC ≈ 0.91 (in-mask traits only: ≈ 0.86).
TRAITS: tuple[Trait, ...] = (
    Trait("rim_fraction", 0.08, 0.45, rn_higher=False, dprime=0.9),    # wall thickness / radius
    Trait("nodularity", 0.0, 1.0, rn_higher=False, dprime=0.9),     # inward solid nodules
    Trait("lobulation", 0.0, 1.0, rn_higher=False, dprime=0.35),    # low-frequency contour
    Trait("feathering", 0.0, 1.0, rn_higher=True, dprime=1.1),     # spiky, fuzzy margin
    Trait("bubbles", 0.0, 1.0, rn_higher=True, dprime=1.05),        # soap-bubble septation
    Trait("oedema_mm", 2.0, 24.0, rn_higher=True, dprime=1.2, log=True),
    Trait("oedema_depth", 0.12, 0.35, rn_higher=True, dprime=0.35),
    Trait("enhancement", 1.35, 2.1, rn_higher=False, dprime=0.35),  # avid solid enhancement
    Trait("heterogeneity", 0.1, 0.6, rn_higher=True, dprime=0.35),
)


@dataclass(frozen=True)
class LesionPhenotype:
    """Latent parameters of one lesion (kept out of manifests; written to cohort.json).

    ``radius_mm``: mean outer radius at the first time point; ``growth``: radius factor per
    later time point (progression > 1, RN ≤ ~1); ``shape_seed``: fixes the lobe, nodule and
    septum geometry so the same lesion keeps its look across time points. The other fields
    are the :data:`TRAITS`.
    """

    label: int
    radius_mm: float
    growth: float
    shape_seed: int
    rim_fraction: float
    nodularity: float
    lobulation: float
    feathering: float
    bubbles: float
    oedema_mm: float
    oedema_depth: float
    enhancement: float
    heterogeneity: float

    def as_dict(self) -> dict:
        return asdict(self)

    def radius_at(self, timepoint: int) -> float:
        """Mean outer radius (mm) at time point index ``timepoint`` (0 = first scan)."""
        return self.radius_mm * self.growth ** timepoint

    def max_extent_mm(self, n_timepoints: int) -> float:
        """Largest distance from the centre reached by the lesion plus its oedema."""
        radius = max(self.radius_at(t) for t in range(n_timepoints))
        return radius * (1 + 0.4 * self.lobulation + 0.3 * self.feathering) + 1.5 * self.oedema_mm + 4


def draw_phenotype(label: int, rng: np.random.Generator, separation: float = 1.0,
                   radius_range_mm: tuple[float, float] = (4.0, 17.5)) -> LesionPhenotype:
    """Draw a lesion of class ``label`` (1 = RN, 0 = progression).

    ``separation`` scales every trait's d' (1 = designed overlap; 0 = classes identical).
    The radius is log-uniform in ``radius_range_mm`` for both classes (8–35 mm diameter).
    """
    if label not in (RN, PROGRESSION):
        raise ValueError(f"label must be 1 (RN) or 0 (progression), got {label!r}")
    sign = 1.0 if label == RN else -1.0
    values = {}
    for trait in TRAITS:
        direction = 1.0 if trait.rn_higher else -1.0
        z = rng.normal(sign * direction * trait.dprime * separation / 2, 1.0)
        # map through the pooled latent distribution so the two classes overlap in range
        u = float(ndtr(z / np.sqrt(1 + (trait.dprime * separation / 2) ** 2)))
        if trait.log:
            values[trait.name] = float(np.exp(np.log(trait.lo) + u * np.log(trait.hi / trait.lo)))
        else:
            values[trait.name] = trait.lo + u * (trait.hi - trait.lo)
    radius = float(np.exp(rng.uniform(*np.log(radius_range_mm))))
    if label == PROGRESSION:
        growth = float(rng.uniform(1.1, 1.5))
    else:
        growth = float(rng.uniform(0.8, 1.05))
    return LesionPhenotype(label=int(label), radius_mm=radius, growth=growth,
                           shape_seed=int(rng.integers(2**31)), **values)


@dataclass(frozen=True)
class LesionFields:
    """A lesion rendered at N points, each float32 (N,).

    ``inside``: fraction of the point's voxel inside the lesion (partial volume);
    ``enhancing``: fraction a reader would call enhancing (wall, septa at reduced weight);
    ``signal``: lesion intensity contribution (already weighted by ``inside``);
    ``oedema``: multiplicative darkening of the surrounding tissue, 0..1.
    """

    inside: np.ndarray
    enhancing: np.ndarray
    signal: np.ndarray
    oedema: np.ndarray


class _Shape:
    """Random geometry fixed by a lesion's ``shape_seed``: orientation, lobes, spikes,
    nodules, cyst seeds (unit ball), and the enhancement texture waves."""

    def __init__(self, ph: LesionPhenotype):
        rng = np.random.default_rng(ph.shape_seed)
        q, r = np.linalg.qr(rng.standard_normal((3, 3)))
        self.rotation = q * np.sign(np.diag(r))
        self.lobes = _VonMisesSum(rng, n=6, kappa=3.0, signed=True)
        self.spikes = _VonMisesSum(rng, n=60, kappa=80.0, signed=True)
        self.nodules = _VonMisesSum(rng, n=int(rng.integers(2, 5)), kappa=10.0, signed=False)
        self.oedema_lobes = _VonMisesSum(rng, n=5, kappa=4.0, signed=False)
        n_cysts = int(round(2 + 9 * ph.bubbles))
        seeds = rng.standard_normal((n_cysts, 3))
        seeds /= np.linalg.norm(seeds, axis=1, keepdims=True)
        self.cyst_seeds = seeds * rng.uniform(0, 1, (n_cysts, 1)) ** (1 / 3)
        wavelength = rng.uniform(4.0, 9.0, 8)
        k = rng.standard_normal((8, 3))
        self.waves = k / np.linalg.norm(k, axis=1, keepdims=True) * (2 * np.pi / wavelength)[:, None]
        self.phases = rng.uniform(0, 2 * np.pi, 8)

    def texture(self, q: np.ndarray) -> np.ndarray:
        """Smooth random field of unit variance at points q (3, N) mm."""
        waves = self.waves.astype(np.float32)
        return np.cos(waves @ q + self.phases.astype(np.float32)[:, None]).sum(0) / np.float32(2.0)


class _VonMisesSum:
    """f(u) = Σ_j w_j exp(κ (u·v_j − 1)) over random unit vectors v_j: a smooth random function
    on the sphere (signed: zero-mean, unit spread; unsigned: bumps in 0..~1)."""

    def __init__(self, rng: np.random.Generator, n: int, kappa: float, signed: bool):
        v = rng.standard_normal((n, 3))
        self.dirs = v / np.linalg.norm(v, axis=1, keepdims=True)
        self.kappa = kappa
        self.weights = rng.choice([-1.0, 1.0], n) if signed else rng.uniform(0.6, 1.0, n)
        self.signed = signed
        if signed:  # normalise to unit standard deviation over the sphere
            probe = rng.standard_normal((3, 2000))
            probe /= np.linalg.norm(probe, axis=0)
            raw = self._raw(probe)
            self.mean, self.std = float(raw.mean()), float(raw.std() + 1e-6)

    def _raw(self, u: np.ndarray) -> np.ndarray:
        dots = self.dirs.astype(np.float32) @ u.astype(np.float32)
        return self.weights.astype(np.float32) @ np.exp(np.float32(self.kappa) * (dots - 1))

    def __call__(self, u: np.ndarray) -> np.ndarray:
        """u: (3, N) unit vectors → (N,)."""
        raw = self._raw(u)
        if self.signed:
            return np.clip((raw - self.mean) / self.std, -2.5, 2.5)
        return np.clip(raw, 0, 1.2)


def render_lesion(ph: LesionPhenotype, timepoint: int, offset_mm: np.ndarray,
                  white_matter: Callable[[np.ndarray], np.ndarray], voxel_mm: float) -> LesionFields:
    """Render one lesion at points given by their offset from the lesion centre.

    offset_mm: (3, N) patient-frame mm; white_matter: maps indices into the N points to the
    white-matter probability there (oedema spreads in white matter; asked only for points the
    oedema can reach); voxel_mm: edge length that sets the partial-volume ramp of every
    boundary (a boundary is blurred over about one voxel, as in a real scan).
    """
    shape = _Shape(ph)
    q = shape.rotation.astype(np.float32) @ offset_mm.astype(np.float32)
    r = np.sqrt((q ** 2).sum(0)) + 1e-4
    u = q / r
    radius = ph.radius_at(timepoint)
    # the wall is specified relative to the first radius: a progressing tumour's wall thickens
    # as it grows, an RN wall keeps its thickness
    thickening = ph.growth ** timepoint if ph.label == PROGRESSION else 1.0
    rim = max(ph.rim_fraction * ph.radius_mm * thickening, 1.0)
    oedema_mm = ph.oedema_mm * ph.growth ** timepoint
    outer_ramp = voxel_mm + 2.0 * ph.feathering           # RN: ill-defined outer margin

    smooth_outer = radius * (1 + 0.15 * ph.lobulation * shape.lobes(u))
    # oedema: white-matter hypointensity reaching oedema_mm beyond the wall, lobed
    reach = oedema_mm * (0.5 + 0.8 * shape.oedema_lobes(u))
    extent = np.clip((reach - (r - smooth_outer)) / 3.0, 0, 1)
    oedema = np.zeros(r.shape, np.float32)
    reached = np.flatnonzero(extent > 0)
    if reached.size:
        wm = np.clip(white_matter(reached), 0, 1)
        oedema[reached] = ph.oedema_depth * extent[reached] * wm ** 0.7

    # the lesion itself: only points that can be inside need the detailed geometry
    n = r.shape[0]
    inside, enhancing, signal = (np.zeros(n, np.float32) for _ in range(3))
    near = np.flatnonzero(r < smooth_outer + 0.12 * 2.5 * radius * ph.feathering + outer_ramp)
    if near.size:
        fields = _lesion_core(ph, shape, q[:, near], r[near], u[:, near], smooth_outer[near],
                              radius, rim, outer_ramp, voxel_mm)
        inside[near], enhancing[near], signal[near] = fields
    return LesionFields(inside=inside, enhancing=enhancing, signal=signal, oedema=oedema)


def _lesion_core(ph: LesionPhenotype, shape: "_Shape", q, r, u, smooth_outer, radius, rim,
                 outer_ramp, voxel_mm):
    """(inside, enhancing, signal) at points near the lesion; see :func:`render_lesion`."""
    outer = smooth_outer + radius * 0.12 * ph.feathering * shape.spikes(u)
    depth = outer - r                                     # > 0 inside the lesion
    inside = _ramp(depth, outer_ramp)

    wall = rim * (1 + 2.0 * ph.nodularity * shape.nodules(u))
    wall = np.minimum(wall, 0.8 * outer)                  # always leave a necrotic core
    inner_ramp = voxel_mm + 2.5 * ph.feathering           # RN: ill-defined inner wall
    enh_wall = _ramp(wall - depth, inner_ramp) * inside
    core = inside - enh_wall

    # soap-bubble septa: thin walls between Voronoi cells of the cyst seeds
    core_radius = max(radius - rim, 0.5)
    seeds = (shape.cyst_seeds * core_radius).astype(np.float32)[:, :, None]     # (n, 3, 1)
    d = np.sqrt(((q[None, :, :] - seeds) ** 2).sum(1))                          # (n, N)
    d.sort(axis=0)
    if d.shape[0] > 1:
        septum_half_mm = 0.2 + 0.25 * ph.bubbles
        septa = _ramp(septum_half_mm - (d[1] - d[0]) / 2, voxel_mm) * ph.bubbles
    else:
        septa = np.zeros_like(r)
    enh_septa = core * septa

    tex = shape.texture(q)
    enhanced = ph.enhancement * (1 + 0.35 * ph.heterogeneity * tex)
    necrosis = 0.38 + 0.06 * tex
    # septa enhance less than the wall (thin, partly collapsed cyst walls)
    signal = enh_wall * enhanced + enh_septa * 0.8 * enhanced + (core - enh_septa) * necrosis
    # a reader outlines the enhancing wall; faint septa inside the cavity mostly stay in the
    # necrotic/cystic segment, so they count at reduced weight towards "enhancing"
    return inside, enh_wall + 0.7 * enh_septa, signal


def _ramp(distance: np.ndarray, width: float) -> np.ndarray:
    """Partial-volume ramp: 0 at distance ≤ −width/2, 1 at ≥ +width/2, linear between."""
    return np.clip(distance / width + 0.5, 0.0, 1.0)


def composite(background: np.ndarray, fields: LesionFields) -> np.ndarray:
    """Voxel intensity with the lesion in place: tissue (darkened by oedema) where the voxel is
    not lesion, plus the lesion's own signal. background: (N,) relative intensity."""
    tissue = background * (1 - fields.oedema)
    return (1 - fields.inside) * tissue + fields.signal


def segment_codes(inside: np.ndarray, enhancing: np.ndarray, lesion_number: int) -> np.ndarray:
    """MOLAB mask codes from partial-volume fractions, as a reader would segment the lesion.

    A voxel belongs to the lesion when at least half of it is lesion; it is the enhancing
    segment (code lesion·10 + 1) when enhancing tissue makes up at least half of the lesion
    part, otherwise necrosis (lesion·10 + 2). Both segments are guaranteed: if thresholding
    leaves one empty, the voxel most typical of it is relabelled (tiny or very thin lesions).
    Returns int16 codes, 0 outside the lesion.
    """
    codes = np.zeros(inside.shape, np.int16)
    lesion = inside >= 0.5
    if lesion.sum() < 2:  # a lesion needs two voxels to hold both segments
        lesion.flat[np.argsort(inside, axis=None)[-2:]] = True
    frac = np.where(lesion, enhancing / np.maximum(inside, 1e-6), 0.0)
    enh = lesion & (frac >= 0.5)
    nec = lesion & ~enh
    if not enh.any():
        enh.flat[int(np.argmax(np.where(lesion, frac, -1)))] = True
        nec &= ~enh
    if not nec.any():
        idx = int(np.argmin(np.where(lesion, frac, 2)))
        nec.flat[idx] = True
        enh.flat[idx] = False
    codes[enh] = lesion_number * 10 + 1
    codes[nec] = lesion_number * 10 + 2
    return codes

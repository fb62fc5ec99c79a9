"""Named sizes of the synthetic cohort: ``paper``, ``demo`` and ``tiny`` (tests).

``paper`` matches the published study's sizes: MOLAB (≈75 patients, 109 labelled lesion time
points, several lesions / time points per patient), an external centre of 28 cases and an
unlabeled pretraining pool (2,000 sub-volumes by default; ``pool_size=10167`` gives the
paper's count). ``demo`` keeps the labelled counts but uses 2 mm voxels and a small pool so
the whole study runs in minutes on 2 CPU cores. ``tiny`` is for unit tests; ``mini`` (14 internal
patients, 5 external, 12 pool sub-volumes, 3 mm) is the smallest cohort a whole study (split into
internal test + 2 folds, DeLong) runs on, for the study tests and notebooks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ...errors import InputError
from .centers import ScannerProfile
from .clinical import CaseMix

# MOLAB is mostly lung and breast primaries; the external centre sees more melanoma.
INTERNAL_PRIMARIES = {1: 0.25, 2: 0.40, 3: 0.05, 4: 0.11, 5: 0.06, 6: 0.05, 7: 0.015, 8: 0.02,
                      9: 0.01, 10: 0.01, 11: 0.01, 12: 0.015}
EXTERNAL_PRIMARIES = {1: 0.30, 2: 0.25, 3: 0.03, 4: 0.22, 5: 0.08, 6: 0.06, 7: 0.01, 8: 0.02,
                      9: 0.01, 10: 0.005, 11: 0.005, 12: 0.01}


@dataclass(frozen=True)
class CenterSpec:
    """One centre: who is scanned (case mix, counts) and how (scanner).

    ``n_cases`` counts lesion × time point; patients get 1..``max_lesions`` lesions and
    1..``max_timepoints`` scans so that the totals are met exactly.
    """

    key: str                 # folder name: internal / external
    name: str                # centre name in manifests
    id_prefix: str           # patient ids: <prefix>-001 (no underscores: MOLAB splits on "_")
    n_patients: int
    n_cases: int
    max_lesions: int
    max_timepoints: int
    case_mix: CaseMix
    scanner: ScannerProfile


@dataclass(frozen=True)
class PoolSpec:
    """The unlabeled pretraining pool: ``size`` sub-volumes of ``shape`` voxels at isotropic
    ``spacing`` mm, a fraction ``lesion_fraction`` of them containing a lesion, each acquired
    by one of ``scanners`` (several "public sources")."""

    size: int
    shape: tuple[int, int, int]
    spacing: float
    lesion_fraction: float
    scanners: tuple[ScannerProfile, ...]


@dataclass(frozen=True)
class CohortPreset:
    name: str
    internal: CenterSpec
    external: CenterSpec
    pool: PoolSpec
    separation: float = 1.0       # scales every phenotype trait's class separation
    missing_rate: float = 0.04    # share of clinical values left empty


def _internal_scanner(spacing: float) -> ScannerProfile:
    return ScannerProfile("SYN-A 3D T1 post-Gd", spacing=(spacing,) * 3, gamma=(0.95, 1.05),
                          bias_strength=0.08, white_matter_value=(650, 850),
                          noise_sigma=(0.02, 0.035))


def _external_scanner(in_plane: float) -> ScannerProfile:
    # 2D spin-echo-like: 5 mm slices, softer contrast, strong coil shading, more noise
    return ScannerProfile("SYN-B 2D T1 SE post-Gd", spacing=(in_plane, in_plane, 5.0),
                          slice_subsamples=3, blur_mm=0.5, gamma=(0.75, 0.9),
                          bias_strength=0.3, white_matter_value=(280, 420), offset=(20, 60),
                          noise_sigma=(0.05, 0.08))


def _pool_scanners(spacing: float) -> tuple[ScannerProfile, ...]:
    iso = (spacing,) * 3
    return (
        replace(_internal_scanner(spacing), name="pool source 1"),
        replace(_external_scanner(spacing), name="pool source 2", spacing=iso, slice_subsamples=1),
        ScannerProfile("pool source 3", spacing=iso, gamma=(1.1, 1.3), bias_strength=0.15,
                       white_matter_value=(1000, 1400), noise_sigma=(0.03, 0.06)),
    )


def _centers(internal_spacing: float, external_in_plane: float, n_internal_patients: int,
             n_internal: int, n_external_patients: int, n_external: int):
    internal = CenterSpec("internal", "SYN-A", "SYN-INT", n_internal_patients, n_internal,
                          max_lesions=3, max_timepoints=3,
                          case_mix=CaseMix(0.45, INTERNAL_PRIMARIES),
                          scanner=_internal_scanner(internal_spacing))
    external = CenterSpec("external", "SYN-B", "SYN-EXT", n_external_patients, n_external,
                          max_lesions=3, max_timepoints=1,
                          case_mix=CaseMix(0.6, EXTERNAL_PRIMARIES),
                          scanner=_external_scanner(external_in_plane))
    return internal, external


def _build() -> dict[str, CohortPreset]:
    presets = {}
    internal, external = _centers(1.5, 1.0, 75, 109, 22, 28)
    presets["paper"] = CohortPreset("paper", internal, external,
                                    PoolSpec(2000, (64, 64, 64), 2.0, 0.5, _pool_scanners(2.0)))
    internal, external = _centers(2.0, 2.0, 75, 109, 22, 28)
    presets["demo"] = CohortPreset("demo", internal, external,
                                   PoolSpec(300, (48, 48, 48), 2.0, 0.5, _pool_scanners(2.0)))
    # The demo's centres and class design with ~8x the lesions, for diagnostics and the
    # label-efficiency benchmark: 300 held-out lesions resolve an AUC difference of ~0.05.
    internal, external = _centers(2.0, 2.0, 600, 900, 200, 300)
    presets["large"] = CohortPreset("large", internal, external,
                                    PoolSpec(0, (48, 48, 48), 2.0, 0.5, _pool_scanners(2.0)))
    internal, external = _centers(3.0, 3.0, 4, 6, 2, 3)
    presets["tiny"] = CohortPreset("tiny", internal, external,
                                   PoolSpec(4, (24, 24, 24), 3.0, 0.5, _pool_scanners(3.0)))
    internal, external = _centers(3.0, 3.0, 14, 20, 5, 8)
    presets["mini"] = CohortPreset("mini", internal, external,
                                   PoolSpec(12, (24, 24, 24), 3.0, 0.5, _pool_scanners(3.0)))
    return presets


PRESETS: dict[str, CohortPreset] = _build()


def get_preset(name: str, pool_size: int | None = None) -> CohortPreset:
    """The named preset, with the pool size overridden when ``pool_size`` is given."""
    if name not in PRESETS:
        raise InputError(f"unknown synthetic cohort preset {name!r}; choose one of {sorted(PRESETS)}")
    preset = PRESETS[name]
    if pool_size is not None:
        if int(pool_size) < 0:
            raise InputError(f"pool_size must be ≥ 0, got {pool_size}")
        preset = replace(preset, pool=replace(preset.pool, size=int(pool_size)))
    return preset

"""Build a SYNTHETIC MOLAB-like cohort: internal centre, external centre, unlabeled pool.

``make_synthetic_cohort(out, preset, seed)`` writes::

    out/
      README.md                  what this is (synthetic), seed, preset, folder contents
      cohort.json                generation parameters and per-lesion latent phenotypes
      internal/molab/<patient>/<patient>/NIFTI/<patient>_<tp>_img.nii.gz (+ _msk.nii.gz)
      internal/labels.csv        patient, timepoint, lesion, label (1 = RN), synthetic
      internal/clinical.xlsx     MOLAB-form spreadsheet: 2 header rows, columns by position
      external/...               the same for the second centre (5 mm slices, other scanner)
      unlabeled/<id>_img.nii.gz  pretraining sub-volumes (no labels); <id>_mask.nii.gz where
                                 the sub-volume holds a lesion (public collections are segmented)
      manifests/{internal,external,unlabeled}.csv

The internal and external manifests are produced by the MOLAB importer
(:func:`rn_classifier.data.molab.import_molab`) reading the trees just written — the same code
path real MOLAB data takes. Everything is deterministic for a seed, whatever the number of
worker processes: each patient and pool item draws from its own
``numpy.random.SeedSequence([seed, stream, index])``.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ...atomic import atomic_dir, write_csv, write_json, write_text
from ...errors import InputError
from ..manifest import format_mask_labels
from .anatomy import PatientAnatomy, Template, draw_patient_anatomy, load_template, render_anatomy
from .centers import ScannerProfile, acquire
from .clinical import blank_some, column_map, draw_lesion, draw_patient, draw_patient_labels
from .geometry import Grid, RigidTransform, average_slices
from .lesions import LesionPhenotype, composite, draw_phenotype, render_lesion, segment_codes
from .presets import CenterSpec, CohortPreset, PoolSpec, get_preset
from .writer import DESCRIP, write_clinical_workbook, write_labels, write_nifti

log = logging.getLogger(__name__)

POOL_CENTER = "SYN-POOL"
MAX_RADIUS_MM = 22.0          # cap on a progressing lesion's radius at its last scan
_STREAMS = {"plan": 0, "internal": 1, "external": 2, "pool": 3}


# ----------------------------------------------------------------------------- planning

@dataclass(frozen=True)
class LesionPlan:
    number: int
    label: int
    phenotype: LesionPhenotype
    treatment: dict


@dataclass(frozen=True)
class PatientPlan:
    patient_id: str
    n_timepoints: int
    lesions: tuple[LesionPlan, ...]
    demographics: dict
    seed: tuple[int, ...]

    @property
    def timepoints(self) -> list[str]:
        return [f"t{i + 1}" for i in range(self.n_timepoints)]


def split_counts(rng: np.random.Generator, n_patients: int, n_cases: int, max_lesions: int,
                 max_timepoints: int) -> list[tuple[int, int]]:
    """(lesions, time points) per patient so that Σ lesions × time points = ``n_cases``.

    Starts from one lesion at one scan per patient and adds lesions or scans to random
    patients until the total is met exactly.
    """
    if n_cases < n_patients or n_cases > n_patients * max_lesions * max_timepoints:
        raise InputError(f"cannot give {n_patients} patients {n_cases} lesion time points with "
                         f"≤ {max_lesions} lesions and ≤ {max_timepoints} scans each")
    counts = [[1, 1] for _ in range(n_patients)]
    remaining = n_cases - n_patients
    while remaining > 0:
        progressed = False
        for i in rng.permutation(n_patients):
            nl, nt = counts[i]
            options = []
            if nl < max_lesions and nt <= remaining:
                options.append((0, nt))      # one more lesion, seen at every scan
            if nt < max_timepoints and nl <= remaining:
                options.append((1, nl))      # one more scan of every lesion
            if not options:
                continue
            axis, added = options[int(rng.integers(len(options)))]
            counts[i][axis] += 1
            remaining -= added
            progressed = True
            break
        if not progressed:
            raise InputError(f"cannot distribute {n_cases} lesion time points over {n_patients} patients")
    return [tuple(c) for c in counts]


def plan_center(spec: CenterSpec, seed: int, separation: float, missing_rate: float) -> list[PatientPlan]:
    """Patients, lesions, labels, phenotypes and clinical variables of one centre."""
    stream = _STREAMS[spec.key]
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAMS["plan"], stream]))
    plans = []
    for i, (n_lesions, n_tp) in enumerate(split_counts(rng, spec.n_patients, spec.n_cases,
                                                       spec.max_lesions, spec.max_timepoints)):
        labels = draw_patient_labels(rng, n_lesions, spec.case_mix)
        demographics = blank_some(rng, draw_patient(rng, labels, spec.case_mix), missing_rate)
        lesions = []
        for k, label in enumerate(labels):
            ph = draw_phenotype(label, rng, separation)
            if n_tp > 1 and ph.radius_at(n_tp - 1) > MAX_RADIUS_MM:
                ph = replace(ph, growth=float((MAX_RADIUS_MM / ph.radius_mm) ** (1 / (n_tp - 1))))
            treatment = blank_some(rng, draw_lesion(rng, label), missing_rate)
            lesions.append(LesionPlan(k + 1, label, ph, treatment))
        plans.append(PatientPlan(f"{spec.id_prefix}-{i + 1:03d}", n_tp, tuple(lesions),
                                 demographics, (seed, stream, i)))
    return plans


# ----------------------------------------------------------------------------- rendering

def render_scan(template: Template, anatomy: PatientAnatomy, grid: Grid, pose: RigidTransform,
                lesions: list[tuple[int, LesionPhenotype, np.ndarray]], timepoint: int,
                profile: ScannerProfile, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    """One acquisition of a patient: (int16 image, int16 MOLAB mask, scanner draws).

    lesions: (lesion number, phenotype, centre in the patient frame (3,) mm); timepoint: scan
    index (0 = first) for growth. Rendering happens on the profile's refined grid (thin
    sub-slices), then slices are averaged to the stored thickness before segmenting.
    """
    k = profile.slice_subsamples
    fine = profile.render_grid(grid)
    mass = [(c, 0.6 * ph.radius_at(timepoint)) for _, ph, c in lesions]
    anat = render_anatomy(template, anatomy, fine, pose, mass)
    image = anat.t1ce
    level = template.level_for(fine.spacing)
    voxel_mm = float(np.cbrt(np.prod(fine.spacing)))
    parts = []
    for number, ph, centre in lesions:
        centre_scan = pose.inverse_apply(np.asarray(centre, np.float32).reshape(3, 1)).ravel()
        box = fine.box(centre_scan, ph.max_extent_mm(timepoint + 1), align_z=k)
        offsets = pose.apply(fine.world(box)) - np.asarray(centre, np.float32).reshape(3, 1, 1, 1)
        box_shape = offsets.shape[1:]
        source = anat.template_world[(slice(None), *box)].reshape(3, -1)
        fields = render_lesion(ph, timepoint, offsets.reshape(3, -1),
                               lambda idx, source=source: level.sample("wm", source[:, idx]), voxel_mm)
        image[box] = composite(image[box].ravel(), fields).reshape(box_shape)
        parts.append((number, box, fields.inside.reshape(box_shape), fields.enhancing.reshape(box_shape)))
    image = average_slices(image, k)
    mask = np.zeros(grid.shape, np.int16)
    for number, box, inside, enhancing in parts:
        stored_box = (box[0], box[1], slice(box[2].start // k, box[2].stop // k))
        codes = segment_codes(average_slices(inside, k), average_slices(enhancing, k), number)
        region = mask[stored_box]
        region[codes > 0] = codes[codes > 0]
    stored, draws = acquire(image, grid, profile, rng)
    return stored, mask, draws


def _patient_grid(template: Template, anatomy: PatientAnatomy, spacing) -> Grid:
    """A field of view covering the patient's head: the brain's bounding box in the patient
    frame plus 16 mm for the scalp (and a few mm of head motion between scans)."""
    brain = anatomy.from_template_affine(template.brain_points.T.astype(np.float64))
    return Grid.covering(brain.min(1) - 16, brain.max(1) + 16, spacing)


def _to_patient_frame(anatomy: PatientAnatomy, template_point: np.ndarray) -> np.ndarray:
    """Patient-frame point that the deformation maps onto ``template_point`` (fixed point
    iteration on the smooth displacement)."""
    target = template_point.reshape(3, 1)
    p = anatomy.from_template_affine(target)
    for _ in range(3):
        shift = anatomy.displacement_at(anatomy.affine_to_template(p).astype(np.float32))
        p = anatomy.from_template_affine(target - shift)
    return p.ravel()


def place_lesions(rng: np.random.Generator, template: Template, anatomy: PatientAnatomy,
                  phenotypes: list[LesionPhenotype], n_timepoints: int) -> list[np.ndarray]:
    """Lesion centres (patient frame, mm), deep enough to fit, near the grey/white junction
    where metastases seed, and apart from each other."""
    world, depth, wm = template.brain_points, template.brain_depth, template.brain_wm
    junction = (wm > 0.25) & (wm < 0.85)
    placed: list[tuple[np.ndarray, float]] = []
    order = sorted(range(len(phenotypes)), key=lambda j: -phenotypes[j].radius_mm)
    centres: dict[int, np.ndarray] = {}
    for j in order:
        ph = phenotypes[j]
        largest = max(ph.radius_at(t) for t in range(n_timepoints))
        size = largest * (1 + 0.4 * ph.lobulation + 0.3 * ph.feathering)
        for need_junction, gap in ((True, 15.0), (False, 15.0), (False, 5.0)):
            ok = depth >= size + 4
            if need_junction:
                ok &= junction
            for point, other in placed:
                ok &= np.linalg.norm(world - point, axis=1) >= size + other + gap
            if ok.any():
                break
        else:
            raise RuntimeError("no room left in the brain for another lesion")
        choice = world[rng.choice(np.flatnonzero(ok))]
        placed.append((choice, size))
        centres[j] = _to_patient_frame(anatomy, choice)
    return [centres[j] for j in range(len(phenotypes))]


def _nifti_dir(root: Path, patient_id: str) -> Path:
    return root / patient_id / patient_id / "NIFTI"


def render_patient(plan: PatientPlan, spec: CenterSpec, root: Path) -> dict:
    """Render and write every scan of one patient; returns its metadata for cohort.json."""
    rng = np.random.default_rng(np.random.SeedSequence(list(plan.seed)))
    template = load_template()
    anatomy = draw_patient_anatomy(rng, template)
    phenotypes = [lp.phenotype for lp in plan.lesions]
    centres = place_lesions(rng, template, anatomy, phenotypes, plan.n_timepoints)
    grid = _patient_grid(template, anatomy, spec.scanner.spacing)
    folder = _nifti_dir(root, plan.patient_id)
    scans = []
    for t, tp in enumerate(plan.timepoints):
        pose = RigidTransform.identity() if t == 0 else RigidTransform.random(rng, 3.0, 4.0)
        lesions = [(lp.number, lp.phenotype, c) for lp, c in zip(plan.lesions, centres)]
        image, mask, draws = render_scan(template, anatomy, grid, pose, lesions, t, spec.scanner, rng)
        write_nifti(folder / f"{plan.patient_id}_{tp}_img.nii.gz", image, grid.affine)
        write_nifti(folder / f"{plan.patient_id}_{tp}_msk.nii.gz", mask, grid.affine)
        voxels = {int(c): int(n) for c, n in zip(*np.unique(mask[mask > 0], return_counts=True))}
        scans.append({"timepoint": tp, "shape": list(grid.shape), "spacing_mm": list(grid.spacing),
                      "mask_voxels": voxels, "scanner": draws})
    return {"patient_id": plan.patient_id, "center": spec.name,
            "lesion_centres_mm": [np.round(c, 2).tolist() for c in centres], "scans": scans}


def render_pool_item(index: int, seed: int, pool: PoolSpec, separation: float, root: Path) -> dict:
    """One unlabeled sub-volume: a random brain region of a new synthetic head, with a lesion
    of either class in ``pool.lesion_fraction`` of items, from a random pool scanner."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAMS["pool"], index]))
    template = load_template()
    anatomy = draw_patient_anatomy(rng, template)
    scanner = pool.scanners[int(rng.integers(len(pool.scanners)))]
    # deep in the brain, and above the template's lower edge (MNI z = -72 cuts the brainstem
    # flat; a sub-volume reaching it would show that straight cut)
    points = template.brain_points
    deep = template.brain_depth >= 12
    above_cut = points[:, 2] >= -72 + 0.5 * pool.spacing * pool.shape[2]
    deep = points[deep & above_cut] if (deep & above_cut).any() else points[deep]
    centre = _to_patient_frame(anatomy, deep[rng.integers(len(deep))].astype(np.float64))
    pose = RigidTransform.random(rng, 10.0, 0.0)
    half = (np.asarray(pool.shape) - 1) / 2 * pool.spacing
    centre_scan = pose.inverse_apply(centre.reshape(3, 1)).ravel() + rng.uniform(-8, 8, 3)
    grid = Grid(tuple(pool.shape), (pool.spacing,) * 3, tuple(centre_scan - half))
    lesions, label = [], None
    if rng.random() < pool.lesion_fraction:
        label = int(rng.integers(2))
        fit = float(min(half)) * 0.45
        ph = draw_phenotype(label, rng, separation, radius_range_mm=(4.0, max(min(14.0, fit), 4.5)))
        lesions = [(1, ph, centre + rng.uniform(-6, 6, 3))]
    image, mask, _ = render_scan(template, anatomy, grid, pose, lesions, 0, scanner, rng)
    case_id = f"{POOL_CENTER}-{index + 1:05d}"
    write_nifti(root / f"{case_id}_img.nii.gz", image, grid.affine)
    # Public pretraining collections come with segmentations: a lesion item keeps its mask and
    # is centred on it (as build-pool's lesion sub-volumes), a lesion-free item on its grid.
    has_lesion = bool(lesions) and bool(mask.any())
    if has_lesion:
        write_nifti(root / f"{case_id}_mask.nii.gz", mask, grid.affine)
        centre_voxel = np.argwhere(mask > 0).mean(axis=0)
    else:
        centre_voxel = (np.asarray(grid.shape) - 1) / 2
    centre_world = grid.affine[:3, :3] @ centre_voxel + grid.affine[:3, 3]
    return {"case_id": case_id, "scanner": scanner.name, "has_lesion": has_lesion,
            "latent_label": label, "centre": [round(float(c), 3) for c in centre_world],
            "mask_labels": sorted(int(v) for v in np.unique(mask[mask > 0]))}


def _run_task(task):
    kind, args = task
    if kind == "patient":
        return render_patient(*args)
    return render_pool_item(*args)


def _run_all(tasks: list, workers: int) -> list:
    if workers <= 1 or len(tasks) <= 1:
        return [_run_task(t) for t in tasks]
    # spawn, not fork: a forked child of a process that already ran torch (OpenMP threads, e.g.
    # the study runner or a test session) can deadlock; each worker loads the template once
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        return list(pool.map(_run_task, tasks, chunksize=max(1, len(tasks) // (8 * workers))))


# ----------------------------------------------------------------------------- outputs

def _check_out(out: Path) -> None:
    """Refuse to replace a non-empty folder unless it is an earlier synthetic cohort."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        marker = out / "cohort.json"
        try:
            ok = marker.is_file() and json.loads(marker.read_text()).get("synthetic") is True
        except (OSError, ValueError):
            ok = False
        if not ok:
            raise InputError(f"--out {out} is a non-empty folder that is not a synthetic cohort "
                             "(no cohort.json with synthetic: true); choose an empty or new folder")


def _center_tables(plans: list[PatientPlan]) -> tuple[list[dict], list[dict]]:
    labels, clinical = [], []
    for plan in plans:
        for lp in plan.lesions:
            for tp in plan.timepoints:
                labels.append({"patient": plan.patient_id, "timepoint": tp, "lesion": lp.number,
                               "label": lp.label})
            clinical.append({"patient": plan.patient_id, "lesion": lp.number,
                             **plan.demographics, **lp.treatment})
    return labels, clinical


DICOM_RT_NOTE = """
**Format dicom-rt**: `internal/` and `external/` hold `dicom/<patient>/<YYYYMMDD>/MR/` (one MR
Image Storage file per axial slice) and `RS.dcm` (RTSTRUCT, one ROI `GTV_<lesion>` per lesion:
enhancing and necrotic parts together) instead of the MOLAB tree and spreadsheet; `labels.csv`
is `patient, study, roi, label` + the clinical columns; the manifests come from `import-dicom`.
"""


def _readme(preset: CohortPreset, seed: int, counts: dict, fmt: str = "nifti") -> str:
    return f"""# SYNTHETIC cohort — not patient data

Generated by `rn-classifier synth --preset {preset.name} --seed {seed}` (rn-classifier's
synthetic stand-in for MOLAB / OpenBTAI-METS, which cannot be shipped). Every image header says
`{DESCRIP.decode()}`; every CSV has a `synthetic` column set to 1. Results obtained on these
files describe the synthetic generator, not radiation necrosis in real patients.

Heads are nilearn's MNI152 template under random deformations with T1CE-like contrast; lesions
are radiation necrosis (label 1) or progression (label 0) phenotypes with overlapping traits
(see `rn_classifier/data/synth/lesions.py`).

| path | holds |
|---|---|
| `internal/molab/` | centre {preset.internal.name}: MOLAB layout `<patient>/<patient>/NIFTI/<patient>_<tp>_img.nii.gz` + `_msk.nii.gz` (mask = lesion·10 + 1 enhancing / 2 necrosis), {preset.internal.scanner.spacing} mm voxels |
| `internal/labels.csv` | `patient, timepoint, lesion, label` (1 = RN, 0 = progression), `synthetic` |
| `internal/clinical.xlsx` | MOLAB-form spreadsheet, 2 header rows, one row per patient-lesion; columns by position: patient, age, sex (1 F / 2 M), GPA, lesion, primary code, dose (Gy), fractions, months since radiosurgery, steroids |
| `external/` | the same for centre {preset.external.name}: {preset.external.scanner.spacing} mm voxels (5 mm slices), other scanner, other case mix |
| `unlabeled/` | {counts['unlabeled']} pretraining sub-volumes `{POOL_CENTER}-NNNNN_img.nii.gz` ({preset.pool.shape} voxels, {preset.pool.spacing} mm), no labels; a lesion's mask `_mask.nii.gz` where it holds one (manifest: `kind`, `centre_x/y/z`) |
| `manifests/` | `internal.csv`, `external.csv` (written by the MOLAB importer from the trees above), `unlabeled.csv` |
| `cohort.json` | generation parameters and each lesion's latent phenotype (for debugging only) |

Counts: {counts['internal_cases']} internal lesion time points ({counts['internal_patients']} patients,
{counts['internal_rn']} RN), {counts['external_cases']} external ({counts['external_patients']} patients,
{counts['external_rn']} RN), {counts['unlabeled']} unlabeled sub-volumes.
{DICOM_RT_NOTE if fmt == "dicom-rt" else ""}"""


FORMATS = ("nifti", "dicom-rt")


def make_synthetic_cohort(out: str | os.PathLike, preset: str = "demo", seed: int = 0,
                          pool_size: int | None = None, workers: int = 1,
                          separation: float | None = None, fmt: str = "nifti") -> dict:
    """Write a synthetic MOLAB-like cohort (see the module docstring) and return a summary.

    ``pool_size`` overrides the preset's unlabeled pool size (paper: 10167); ``separation``
    scales the class separation of every lesion trait (1 = the designed overlap, 0 = image
    carries no label information) — for studying what the models pick up.
    ``fmt="dicom-rt"`` writes the internal and external centres as DICOM MR series + RTSTRUCT
    (:mod:`rn_classifier.data.synth.dicom_export`) with manifests made by ``import-dicom``; the
    pool stays NIfTI (public collections come that way).
    The folder appears complete or not at all (written beside ``out``, then renamed); an
    earlier synthetic cohort in ``out`` is replaced, any other non-empty folder is refused.
    Returns ``{"out", "preset", "seed", "counts", "manifests"}``.
    """
    out = Path(out)
    spec = get_preset(preset, pool_size)
    if separation is not None:
        if not np.isfinite(separation) or separation < 0:
            raise InputError(f"separation must be a finite number ≥ 0, got {separation}")
        spec = replace(spec, separation=float(separation))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    if int(workers) < 1:
        raise InputError(f"workers must be ≥ 1, got {workers}")
    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {list(FORMATS)}, got {fmt!r}")
    seed = int(seed)
    _check_out(out)
    load_template()   # once, before any worker is forked

    plans = {c.key: plan_center(c, seed, spec.separation, spec.missing_rate)
             for c in (spec.internal, spec.external)}
    with atomic_dir(out) as tmp:
        centers = {c.key: c for c in (spec.internal, spec.external)}
        tasks = [("patient", (plan, centers[key], tmp / key / "molab"))
                 for key, center_plans in plans.items() for plan in center_plans]
        tasks += [("pool", (i, seed, spec.pool, spec.separation, tmp / "unlabeled"))
                  for i in range(spec.pool.size)]
        (tmp / "unlabeled").mkdir(parents=True, exist_ok=True)
        results = _run_all(tasks, int(workers))
        n_patients = sum(len(p) for p in plans.values())
        patient_meta, pool_meta = results[:n_patients], results[n_patients:]

        manifests = {}
        counts = {}
        for key, center in centers.items():
            labels, clinical = _center_tables(plans[key])
            write_labels(tmp / key / "labels.csv", labels)
            write_clinical_workbook(tmp / key / "clinical.xlsx", clinical,
                                    note=f"SYNTHETIC clinical data (rn-classifier synth, preset "
                                         f"{spec.name}, seed {seed}, centre {center.name}). "
                                         "Not patient data.")
            manifests[key] = _import(tmp, key, center)
            if fmt == "dicom-rt":
                from .dicom_export import export_center

                manifests[key] = export_center(tmp / key, tmp / "manifests" / f"{key}.csv", center.name)
            counts[f"{key}_cases"] = len(manifests[key])
            counts[f"{key}_patients"] = int(manifests[key]["patient_id"].nunique())
            counts[f"{key}_rn"] = int((manifests[key]["label"] == 1).sum())
        pool_rows = pd.DataFrame({
            "case_id": [m["case_id"] for m in pool_meta],
            "patient_id": [m["case_id"] for m in pool_meta],
            "center": POOL_CENTER,
            "image": [f"../unlabeled/{m['case_id']}_img.nii.gz" for m in pool_meta],
            "mask": [f"../unlabeled/{m['case_id']}_mask.nii.gz" if m["has_lesion"] else ""
                     for m in pool_meta],
            "mask_labels": [format_mask_labels(m["mask_labels"]) if m["has_lesion"] else ""
                            for m in pool_meta],
            "label": "", "synthetic": 1,
            "kind": ["lesion" if m["has_lesion"] else "random" for m in pool_meta],
            **{f"centre_{axis}": [m["centre"][i] for m in pool_meta] for i, axis in enumerate("xyz")},
        }, columns=["case_id", "patient_id", "center", "image", "mask", "mask_labels", "label",
                    "synthetic", "kind", "centre_x", "centre_y", "centre_z"])
        write_csv(tmp / "manifests" / "unlabeled.csv", pool_rows)
        counts["unlabeled"] = len(pool_rows)

        write_json(tmp / "cohort.json", {
            "synthetic": True, "generator": "rn_classifier.data.synth", "preset": spec.name,
            "seed": seed, "counts": counts, "separation": spec.separation, "format": fmt,
            "centers": {key: {"name": c.name, "scanner": c.scanner.describe(),
                              "rn_prevalence": c.case_mix.rn_prevalence} for key, c in centers.items()},
            "pool": {"size": spec.pool.size, "shape": list(spec.pool.shape),
                     "spacing_mm": spec.pool.spacing, "lesion_fraction": spec.pool.lesion_fraction},
            "patients": [_patient_record(plan, meta) for plan, meta in
                         zip([p for key in plans for p in plans[key]], patient_meta)],
            "pool_items": pool_meta,
        })
        write_text(tmp / "README.md", _readme(spec, seed, counts, fmt))
    log.info("synthetic cohort %s (preset %s, seed %d): %s", out, spec.name, seed, counts)
    return {"out": str(out), "preset": spec.name, "seed": seed, "counts": counts,
            "manifests": {k: str(out / "manifests" / f"{k}.csv")
                          for k in ("internal", "external", "unlabeled")}}


def _import(tmp: Path, key: str, center: CenterSpec) -> pd.DataFrame:
    from ..molab import import_molab

    return import_molab(tmp / key / "molab", tmp / key / "labels.csv", tmp / key / "clinical.xlsx",
                        center=center.name, out=tmp / "manifests" / f"{key}.csv",
                        column_map=column_map(), synthetic=True)


def _patient_record(plan: PatientPlan, meta: dict) -> dict:
    return {**meta, "timepoints": plan.timepoints, "demographics": plan.demographics,
            "lesions": [{"lesion": lp.number, "label": lp.label, "treatment": lp.treatment,
                         "phenotype": lp.phenotype.as_dict()} for lp in plan.lesions]}


__all__ = ["make_synthetic_cohort", "render_scan", "plan_center", "split_counts"]

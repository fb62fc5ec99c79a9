"""``build-pool``: the unlabeled pretraining pool from public brain-metastasis collections.

Sources (a YAML config, :class:`PoolConfig`) are folders in a known layout: ``brats-mets``
(``<id>/<id>-t1c.nii.gz`` + ``<id>-seg.nii.gz``; patient = the id without its ``-NNN`` time
point; lesion = labels 1 necrosis + 3 enhancing, not 2 oedema) or ``pattern``: an image and a
mask path relative to the root with an ``{id}`` placeholder (``"{id}/T1post.nii.gz"``,
``"{id}/seg.nii.gz"``; the mask may be absent). Each scan gives

* one lesion-centred sub-volume per lesion component (26-connected) of at least
  ``min_lesion_ml``, and
* random brain sub-volumes (centres at least ``random_depth_mm`` inside the head's foreground),
  as many as make ``random_share`` of the pool, spread over the scans.

Each row of the manifest is one sub-volume: the scan's image and mask (``mask_labels`` = the
source's lesion labels, so the sub-volume's lesion mask is there for lesion-aware views), its
centre in world RAS mm (``centre_x, centre_y, centre_z``), ``kind`` (lesion / random) and the
component's volume. ``label`` stays empty.

Patients are de-duplicated across sources — by declared identity (an id-mapping CSV ``source,
source_id, patient`` maps a source's id to one person) and by image content (a hash of the voxel
values on the RAS grid, so a scan redistributed by two collections is found whatever its file
name) — and every patient of the labelled cohorts is excluded (their manifests: patient ids via
the mapping, image hashes). ``exclusions.csv`` lists every excluded scan with the reason and the
match; ``counts.csv`` the per-source counts (the paper reports its pool this way).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from .. import atomic
from ..errors import ConfigError, InputError
from .ingest import Volume, geometry_mismatch
from .readers import read_image
from .manifest import format_mask_labels, load_manifest, write_manifest

LAYOUTS = {  # layout: (image pattern, mask pattern, patient regex on the id, lesion labels)
    "brats-mets": ("{id}/{id}-t1c.nii.gz", "{id}/{id}-seg.nii.gz", r"^(?P<patient>.+?)(-\d{3})?$", [1, 3]),
}
POOL_COLUMNS = ["source", "source_id", "kind", "component", "centre_x", "centre_y", "centre_z", "lesion_ml"]


@dataclass
class PoolSource:
    name: str = "?"
    root: str = "?"
    layout: str = "pattern"                   # brats-mets | pattern
    image: Optional[str] = None               # pattern layout: "{id}/..." relative to root
    mask: Optional[str] = None                # pattern layout; null: no segmentations
    patient_regex: Optional[str] = None       # named group 'patient' applied to the id; null: id = patient
    lesion_labels: Optional[list[int]] = None  # mask values that are lesion (null: layout default / all)


@dataclass
class PoolConfig:
    sources: list[PoolSource] = field(default_factory=list)
    min_lesion_ml: float = 0.1                # smaller lesion components get no sub-volume
    random_share: float = 0.25                # share of the pool that is random brain sub-volumes
    random_depth_mm: float = 16.0             # random centres at least this far inside the head
    exclude_manifests: list[str] = field(default_factory=list)   # labelled cohorts (manifest CSVs)
    id_map: Optional[str] = None              # CSV source, source_id, patient
    seed: int = 0


@dataclass
class Scan:
    source: str
    source_id: str
    patient: str                              # identity after the id mapping
    image: Path
    mask: Path | None
    lesion_labels: tuple[int, ...]
    digest: str = ""                          # image_digest, once read


# -- finding scans --------------------------------------------------------------------------------

def _pattern_regex(pattern: str) -> re.Pattern:
    parts = [re.escape(p) for p in pattern.split("{id}")]
    return re.compile("^" + "(?P<id>[^/]+)".join(parts[:2]) + "".join(f"(?P=id){p}" for p in parts[2:]) + "$")


def _resolved(source: PoolSource):
    if source.layout == "pattern":
        if not source.image or "{id}" not in source.image:
            raise ConfigError(f"pool source {source.name}: layout 'pattern' needs `image` with an {{id}} "
                              f"placeholder, got {source.image!r}")
        return source.image, source.mask, source.patient_regex, source.lesion_labels or []
    if source.layout not in LAYOUTS:
        raise ConfigError(f"pool source {source.name}: layout must be one of {['pattern', *LAYOUTS]}, "
                          f"got {source.layout!r}")
    image, mask, regex, labels = LAYOUTS[source.layout]
    return image, mask, source.patient_regex or regex, source.lesion_labels or labels


def find_scans(source: PoolSource, id_map: dict[tuple[str, str], str]) -> list[Scan]:
    """Every scan of one source, sorted by id."""
    root = Path(source.root)
    if not root.is_dir():
        raise InputError(f"pool source {source.name}: root {root} is not a folder")
    image_pattern, mask_pattern, patient_regex, labels = _resolved(source)
    matcher = _pattern_regex(image_pattern)
    glob = image_pattern.replace("{id}", "*")
    scans = []
    for path in sorted(root.glob(glob)):
        m = matcher.match(path.relative_to(root).as_posix())
        if not m:
            continue
        sid = m.group("id")
        mask = root / mask_pattern.replace("{id}", sid) if mask_pattern else None
        patient = sid
        if patient_regex:
            pm = re.match(patient_regex, sid)
            patient = pm.group("patient") if pm and "patient" in pm.groupdict() else sid
        identity = id_map.get((source.name, sid)) or id_map.get((source.name, patient)) or f"{source.name}:{patient}"
        scans.append(Scan(source.name, sid, identity, path, mask if mask and mask.is_file() else None,
                          tuple(int(v) for v in labels)))
    if not scans:
        raise InputError(f"pool source {source.name}: no image matches {image_pattern!r} under {root}")
    return scans


def read_id_map(path: str | None) -> dict[tuple[str, str], str]:
    if not path:
        return {}
    if not Path(path).is_file():
        raise InputError(f"id map {path} does not exist")
    df = pd.read_csv(path, dtype=str)
    missing = [c for c in ("source", "source_id", "patient") if c not in df.columns]
    if missing:
        raise InputError(f"id map {path}: missing column(s) {missing}; expected source, source_id, patient")
    return {(r.source.strip(), r.source_id.strip()): r.patient.strip() for r in df.itertuples()}


# -- de-duplication and exclusion -----------------------------------------------------------------

def image_digest(volume: Volume) -> str:
    """Hash of the voxel values on the RAS grid with the grid's shape and spacing (0.01 mm): the
    same scan in another container, file name or integer type hashes the same."""
    h = hashlib.sha256()
    h.update(repr((volume.shape, tuple(round(s, 2) for s in volume.spacing))).encode())
    h.update(np.ascontiguousarray(np.asarray(volume.array, dtype=np.float32)).tobytes())
    return h.hexdigest()


def labelled_patients(manifests: list[str], id_map: dict) -> tuple[set[str], dict[str, str]]:
    """(patient ids, {image digest: case id}) of the labelled cohorts."""
    ids, digests = set(), {}
    for path in manifests:
        df = load_manifest(path)
        ids.update(df["patient_id"].astype(str))
        for image, cid in dict(zip(df["image_path"], df["case_id"])).items():
            digests.setdefault(image_digest(read_image(image)), f"{Path(path).name}:{cid}")
    return ids, digests


class Screen:
    """Decides, scan by scan in config order, which scans the pool keeps: labelled-cohort
    patients are excluded first, then repeats of a patient or image already kept (the first
    source in the config keeps it). ``audit`` lists every excluded scan."""

    def __init__(self, labelled_ids: set[str], labelled_digests: dict[str, str]):
        self.labelled_ids, self.labelled_digests = labelled_ids, labelled_digests
        self.patients: dict[str, str] = {}
        self.digests: dict[str, str] = {}
        self.excluded_patients: set[str] = set()
        self.audit: list[dict] = []

    def _reason(self, scan: Scan) -> tuple[str, str, str] | None:
        if scan.patient in self.labelled_ids:
            return "labelled cohort", "patient id", scan.patient
        if scan.digest in self.labelled_digests:
            return "labelled cohort", "image hash", self.labelled_digests[scan.digest]
        if scan.patient in self.excluded_patients:
            return "labelled cohort", "patient id (another scan of an excluded patient)", scan.patient
        if scan.digest in self.digests:
            return "duplicate", "image hash", self.digests[scan.digest]
        first = self.patients.get(scan.patient)
        if first and first.split(":")[0] != scan.source:
            return "duplicate", "patient id", first
        return None

    def keep(self, scan: Scan) -> bool:
        reason = self._reason(scan)
        if reason:
            if reason[0] == "labelled cohort":
                self.excluded_patients.add(scan.patient)
            self.audit.append({"source": scan.source, "source_id": scan.source_id, "patient": scan.patient,
                               "image": str(scan.image), "reason": reason[0], "by": reason[1],
                               "matches": reason[2]})
            return False
        self.digests[scan.digest] = f"{scan.source}:{scan.source_id}"
        self.patients.setdefault(scan.patient, f"{scan.source}:{scan.source_id}")
        return True


# -- sub-volumes ----------------------------------------------------------------------------------

def lesion_components(scan: Scan, image: Volume, min_ml: float) -> list[dict]:
    """One row per lesion component of at least ``min_ml`` (centroid in world RAS mm)."""
    from scipy import ndimage

    if scan.mask is None:
        return []
    mask = read_image(scan.mask)
    mismatch = geometry_mismatch(image, mask)
    if mismatch:
        raise InputError(f"pool source {scan.source}, {scan.source_id}: {mismatch} ({scan.mask})")
    values = np.asarray(mask.array)
    lesion = np.isin(values, scan.lesion_labels) if scan.lesion_labels else values > 0
    components, n = ndimage.label(lesion, structure=np.ones((3, 3, 3)))
    voxel_ml = float(np.prod(image.spacing)) / 1000.0
    rows = []
    for k, (size, centre) in enumerate(zip(ndimage.sum_labels(lesion, components, range(1, n + 1)),
                                           ndimage.center_of_mass(lesion, components, range(1, n + 1))), start=1):
        if size * voxel_ml >= min_ml:
            rows.append({"kind": "lesion", "component": k, "lesion_ml": round(float(size * voxel_ml), 4),
                         **_centre(image, centre)})
    return rows


def _centre(image: Volume, voxel) -> dict:
    x, y, z = image.voxel_to_world(np.asarray(voxel, float))
    return {"centre_x": round(float(x), 3), "centre_y": round(float(y), 3), "centre_z": round(float(z), 3)}


def random_centres(image: Volume, n: int, depth_mm: float, rng: np.random.Generator) -> list[dict]:
    """``n`` random voxel centres at least ``depth_mm`` inside the head's foreground."""
    from scipy import ndimage

    data = np.asarray(image.array, dtype=np.float32)
    foreground = ndimage.binary_fill_holes(data > 0.1 * np.percentile(data, 99))
    depth = ndimage.distance_transform_edt(foreground, sampling=image.spacing)
    candidates = np.argwhere(depth >= depth_mm)
    if not len(candidates):
        candidates = np.argwhere(depth >= depth.max() * 0.5)
    picks = candidates[rng.choice(len(candidates), size=n, replace=len(candidates) < n)]
    return [{"kind": "random", "component": 0, "lesion_ml": 0.0, **_centre(image, p)} for p in picks]


def _allocate_random(n_lesion_rows: list[int], share: float, rng: np.random.Generator) -> list[int]:
    """Random sub-volumes per scan so that they are ``share`` of the pool (scans without lesion
    sub-volumes included); spread evenly, the remainder to scans drawn at random."""
    n_scans = len(n_lesion_rows)
    total_lesion = sum(n_lesion_rows)
    total = int(round(total_lesion * share / (1 - share))) if total_lesion else n_scans * (share > 0)
    base, extra = divmod(total, n_scans)
    counts = np.full(n_scans, base)
    counts[rng.choice(n_scans, size=extra, replace=False)] += 1
    return counts.tolist()


# -- the command ------------------------------------------------------------------------------------

def check_config(cfg: PoolConfig) -> None:
    if not cfg.sources:
        raise ConfigError("build-pool: the config lists no sources")
    names = [s.name for s in cfg.sources]
    if len(set(names)) != len(names):
        raise ConfigError(f"build-pool: source names must be unique, got {names}")
    if not 0 <= cfg.random_share < 1:
        raise ConfigError(f"random_share must be in [0, 1), got {cfg.random_share}")
    if cfg.min_lesion_ml < 0 or cfg.random_depth_mm < 0:
        raise ConfigError("min_lesion_ml and random_depth_mm must be ≥ 0")


def build_pool(cfg: PoolConfig, out: str | os.PathLike) -> dict:
    """Write ``out/unlabeled.csv``, ``out/exclusions.csv``, ``out/counts.csv``; returns the counts.

    Two passes over the kept scans, one image in memory at a time: lesion components (and the
    image hash) first, then the random centres once their number per scan is known.
    """
    check_config(cfg)
    out = Path(out)
    id_map = read_id_map(cfg.id_map)
    scans = [scan for source in cfg.sources for scan in find_scans(source, id_map)]
    screen = Screen(*labelled_patients(cfg.exclude_manifests, id_map))
    kept, lesion_rows = [], []
    for scan in scans:
        image = read_image(scan.image)
        scan.digest = image_digest(image)
        if screen.keep(scan):
            kept.append(scan)
            lesion_rows.append(lesion_components(scan, image, cfg.min_lesion_ml))
    if not kept:
        raise InputError(f"build-pool: every one of the {len(scans)} scans is excluded (see the audit: "
                         + "; ".join(f"{a['source']}:{a['source_id']} {a['reason']}" for a in screen.audit[:5]) + ")")
    rng = np.random.default_rng(cfg.seed)
    randoms = _allocate_random([len(r) for r in lesion_rows], cfg.random_share, rng)
    rows = []
    for scan, lesions, n_random in zip(kept, lesion_rows, randoms):
        extra = random_centres(read_image(scan.image), n_random, cfg.random_depth_mm, rng) if n_random else []
        rows += [_row(scan, sub, i, out) for i, sub in enumerate(lesions + extra)]
    counts = _counts(cfg, scans, kept, screen.audit, rows)
    write_manifest(pd.DataFrame(rows), out / "unlabeled.csv")
    atomic.write_csv(out / "exclusions.csv", pd.DataFrame(screen.audit, columns=[
        "source", "source_id", "patient", "image", "reason", "by", "matches"]))
    atomic.write_csv(out / "counts.csv", counts)
    return {"counts": counts, "exclusions": screen.audit, "n": len(rows)}


def _row(scan: Scan, sub: dict, i: int, out: Path) -> dict:
    base = out.resolve()
    tag = f"L{sub['component']}" if sub["kind"] == "lesion" else f"R{i}"
    return {"case_id": f"{scan.source}:{scan.source_id}:{tag}", "patient_id": scan.patient,
            "center": scan.source, "image": os.path.relpath(scan.image.resolve(), base),
            "mask": os.path.relpath(scan.mask.resolve(), base) if scan.mask else "",
            "mask_labels": format_mask_labels(scan.lesion_labels) if scan.mask else "", "label": "",
            "synthetic": 0, "source": scan.source, "source_id": scan.source_id,
            **{k: sub[k] for k in POOL_COLUMNS[2:]}}


def _counts(cfg: PoolConfig, scans, kept, audit, rows) -> pd.DataFrame:
    table = []
    for source in [s.name for s in cfg.sources] + ["total"]:
        mine = (lambda items, key: [x for x in items if source == "total" or key(x) == source])
        sub = mine(rows, lambda r: r["source"])
        excluded = mine(audit, lambda a: a["source"])
        table.append({"source": source, "scans": len(mine(scans, lambda s: s.source)),
                      "excluded_duplicate": sum(a["reason"] == "duplicate" for a in excluded),
                      "excluded_labelled": sum(a["reason"] == "labelled cohort" for a in excluded),
                      "scans_used": len(mine(kept, lambda s: s.source)),
                      "patients": len({s.patient for s in mine(kept, lambda s: s.source)}),
                      "lesion_subvolumes": sum(r["kind"] == "lesion" for r in sub),
                      "random_subvolumes": sum(r["kind"] == "random" for r in sub),
                      "subvolumes": len(sub)})
    return pd.DataFrame(table)

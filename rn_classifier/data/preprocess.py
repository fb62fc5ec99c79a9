"""``preprocess``: bring every case to the training setting once and cache the crops.

For each case, through the one road of :mod:`rn_classifier.data.crop` (the one prediction
takes too): read (RAS), resample to the target spacing (image linear, mask nearest),
normalise intensities, then cut a crop:

* labelled cases (the manifest has masks): a two-channel crop ``(t1ce, lesion mask)`` centred
  on the lesion's centroid, shifted to hold the whole lesion in its central ``lesion_view``
  voxels where it fits, the lesion being the union of the case's ``mask_labels``
  (:func:`~rn_classifier.data.crop.lesion_crop`);
* unlabeled pool (no masks): a one-channel crop centred on the head's foreground
  (:func:`~rn_classifier.data.crop.pool_crop`);
* a pool of sub-volumes (the manifest has ``centre_x, centre_y, centre_z``, as ``build-pool``
  and the synthetic pool write): a two-channel crop ``(t1ce, lesion mask)`` of the pool crop
  size centred on each row's centre; the mask channel is empty where a row has no mask
  (:func:`~rn_classifier.data.crop.sub_volume_crop`).

Crops are written as one float16 memory-mapped array with an index (see
:mod:`rn_classifier.data.cache`). Outside the image the crop is padded with the image's
background value. The cache records a hash of its sources and config: a rerun with the same
inputs does nothing.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from .. import atomic
from ..config import to_dict
from ..errors import DataIntegrityError, InputError
from .cache import CACHE_VERSION, CROPS_FILE, INDEX_FILE, META_FILE
from .case_crop import CENTRE_COLUMNS, HEAD, LESION, SUB_VOLUME, case_crop, crop_or_problem, share_cores
from .crop import CropSetting
from .manifest import load_manifest


@dataclass
class NormalisationConfig:
    method: str = "zscore_foreground"  # zscore_foreground | percentile | none
    clip_percentiles: list[float] = field(default_factory=lambda: [0.5, 99.5])


@dataclass
class PreprocessConfig:
    spacing: list[float] = field(default_factory=lambda: [2.0, 2.0, 2.0])  # mm, RAS
    labelled_crop: list[int] = field(default_factory=lambda: [40, 40, 40])  # voxels
    pool_crop: list[int] = field(default_factory=lambda: [48, 48, 48])  # voxels
    # the model's crop size: a lesion that fits is placed whole in the crop's centre of this size
    # (the view the model evaluates); null: in the whole crop
    lesion_view: Optional[list[int]] = None
    normalisation: NormalisationConfig = field(default_factory=NormalisationConfig)
    workers: int = 2


def crop_kind(manifest: pd.DataFrame, manifest_path: Path) -> str:
    has_mask = manifest["mask_path"].astype(bool)
    if all(c in manifest.columns for c in CENTRE_COLUMNS):
        missing = manifest[list(CENTRE_COLUMNS)].isna().any(axis=1)
        if missing.any():
            raise InputError(f"manifest {manifest_path}: case(s) {', '.join(manifest.loc[missing, 'case_id'].astype(str)[:5])} "
                             f"lack a sub-volume centre; every row of a pool with {', '.join(CENTRE_COLUMNS)} needs one")
        return SUB_VOLUME
    if has_mask.any() and not has_mask.all():
        raise InputError(f"manifest {manifest_path}: {int((~has_mask).sum())} case(s) lack a mask while "
                         f"{int(has_mask.sum())} have one; put the unlabeled pool in its own manifest "
                         f"(or give every row a sub-volume centre: {', '.join(CENTRE_COLUMNS)})")
    return LESION if has_mask.all() else HEAD


def crop_setting(cfg: PreprocessConfig, labelled: bool) -> CropSetting:
    """The setting of this config's lesion crops (labelled) or pool crops."""
    return CropSetting(tuple(cfg.spacing), tuple(cfg.labelled_crop if labelled else cfg.pool_crop),
                       cfg.normalisation.method, tuple(cfg.normalisation.clip_percentiles),
                       tuple(cfg.lesion_view) if labelled and cfg.lesion_view else None)


def process_case(row: dict, cfg: PreprocessConfig, kind: str) -> tuple[np.ndarray, dict]:
    """One case → (crop (C, X, Y, Z) float16, index row) at ``cfg``. Raises InputError naming the case."""
    return case_crop(row, crop_setting(cfg, kind == LESION), kind)


def source_hash(manifest: pd.DataFrame, manifest_path: Path, cfg: PreprocessConfig) -> str:
    """Hash of the config, the manifest and each source file's size and modification time.

    A DICOM series is a folder: every file in it counts, so a re-exported or edited slice
    invalidates the cache as an edited NIfTI does.
    """
    h = hashlib.sha256()
    settings = to_dict(cfg) | {"workers": None}
    if settings.get("lesion_view") is None:     # the default: caches made before the key stay valid
        settings.pop("lesion_view", None)
    h.update(json.dumps(settings, sort_keys=True).encode())
    h.update(manifest_path.read_bytes())
    for source in list(manifest["image_path"]) + [m for m in manifest["mask_path"] if m]:
        files = sorted(Path(source).rglob("*")) if os.path.isdir(source) else [Path(source)]
        for p in files:
            st = os.stat(p) if p.exists() else None
            h.update(f"{p}:{st.st_size if st else -1}:{st.st_mtime_ns if st else -1}".encode())
    return h.hexdigest()[:16]


def preprocess(manifest_path: str | os.PathLike, out: str | os.PathLike,
               cfg: PreprocessConfig | None = None, progress: bool = False) -> dict:
    """Build the crop cache of one manifest in ``out``; returns its meta.

    Skips all work when ``out`` already holds a cache of the same sources and config.
    """
    cfg = cfg or PreprocessConfig()
    for name, values in (("spacing", cfg.spacing), ("labelled_crop", cfg.labelled_crop),
                         ("pool_crop", cfg.pool_crop), ("lesion_view", cfg.lesion_view or [1, 1, 1])):
        if len(values) != 3 or min(values) <= 0:
            raise InputError(f"preprocess.{name} must be 3 positive numbers, got {list(values)}")
    manifest_path, out = Path(manifest_path), Path(out)
    df = load_manifest(manifest_path)
    kind = crop_kind(df, manifest_path)
    digest = source_hash(df, manifest_path, cfg)
    meta_path = out / META_FILE
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if old.get("source_hash") == digest and (out / CROPS_FILE).is_file():
            return old | {"skipped": True}

    rows = [dict(r) for _, r in df.iterrows()]
    size = cfg.labelled_crop if kind == LESION else cfg.pool_crop
    n_channels = 1 if kind == HEAD else 2
    results: list[dict | None] = [None] * len(rows)
    problems: list[str] = []
    with atomic.atomic_dir(out) as tmp:
        crops = np.lib.format.open_memmap(tmp / CROPS_FILE, mode="w+", dtype=np.float16,
                                          shape=(len(rows), n_channels, *size))
        atomic.reserve_space(tmp / CROPS_FILE)  # a full disk: one error now, not SIGBUS mid-way
        setting = crop_setting(cfg, kind == LESION)
        jobs = ((row, setting, kind) for row in rows)
        if cfg.workers > 1:
            # spawn, not fork: a forked child of a process that already ran torch (OpenMP
            # threads) can deadlock on a lock held by a thread that does not exist in the child
            # each worker resamples with its share of the cores; chunks small enough that a short
            # manifest is shared evenly
            pool = ProcessPoolExecutor(max_workers=cfg.workers, initializer=share_cores,
                                       initargs=(max(1, (os.cpu_count() or 1) // cfg.workers),),
                                       mp_context=multiprocessing.get_context("spawn"))
            iterator = pool.map(crop_or_problem, jobs, chunksize=max(1, min(4, len(rows) // (4 * cfg.workers))))
        else:
            pool, iterator = None, map(crop_or_problem, jobs)
        try:
            if progress:
                from rich.progress import track

                iterator = track(iterator, total=len(rows), description=f"preprocess {manifest_path.name}")
            for i, (result, error) in enumerate(iterator):
                if error:
                    problems.append(error)
                    continue
                crops[i] = result[0]
                results[i] = result[1]
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        if problems:
            raise DataIntegrityError(f"preprocess of {manifest_path}", problems)
        crops.flush()
        del crops
        index = pd.DataFrame(results)
        index.insert(0, "row", np.arange(len(index)))
        index.to_csv(tmp / INDEX_FILE, index=False)
        meta = {"version": CACHE_VERSION, "spacing": list(cfg.spacing), "crop_size": list(size),
                "channels": ["t1ce"] if kind == HEAD else ["t1ce", "mask"],
                "normalisation": to_dict(cfg.normalisation), "synthetic": bool(df["synthetic"].any()),
                **({"lesion_view": list(cfg.lesion_view)} if kind == LESION and cfg.lesion_view else {}),
                "n": len(rows), "source_hash": digest, "manifest": manifest_path.name}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return meta | {"skipped": False}

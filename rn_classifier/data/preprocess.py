"""``preprocess``: bring every case to the training setting once and cache the crops.

For each case: read (RAS), resample to the target spacing (image linear, mask nearest),
normalise intensities, then cut a crop:

* labelled cases (the manifest has masks): a two-channel crop ``(t1ce, lesion mask)`` centred
  on the lesion's centroid, the lesion being the union of the case's ``mask_labels``;
* unlabeled pool (no masks): a one-channel crop centred on the head's foreground.

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

import numpy as np
import pandas as pd

from .. import atomic
from ..config import to_dict
from ..errors import DataIntegrityError, InputError
from .cache import CACHE_VERSION, CROPS_FILE, INDEX_FILE, META_FILE
from .ingest import (geometry_mismatch, lesion_mask, load_mask, load_volume, missing_lesion_codes,
                     normalise, resample)
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
    normalisation: NormalisationConfig = field(default_factory=NormalisationConfig)
    workers: int = 2


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


def _crop_start(center_voxel, size) -> np.ndarray:
    return np.floor(np.asarray(center_voxel) + 0.5).astype(int) - np.asarray(size, dtype=int) // 2


def _keep_inside(start, size, shape) -> np.ndarray:
    """Shift a crop start so the crop stays inside the image along every axis the image is at
    least as long as the crop (the pool crops are centred on the head's foreground centroid,
    which sits off-centre in a small sub-volume; padding would teach the encoder flat edges)."""
    start, size, shape = (np.asarray(a, dtype=int) for a in (start, size, shape))
    fits = shape >= size
    return np.where(fits, np.clip(start, 0, np.maximum(shape - size, 0)), start)


def process_case(row: dict, cfg: PreprocessConfig, labelled: bool) -> tuple[np.ndarray, dict]:
    """One case → (crop (C, X, Y, Z) float16, index row). Raises InputError naming the case."""
    cid = row["case_id"]
    try:
        image = load_volume(row["image_path"])
        if not np.isfinite(np.asarray(image.array, dtype=np.float32)).all():
            raise InputError(f"image {image.path} holds NaN or infinite voxels (expected finite intensities)")
        if labelled:
            mask, codes = load_mask(row["mask_path"], row["mask_labels"], image)
            mismatch = geometry_mismatch(image, mask)
            if mismatch:
                raise InputError(mismatch)
            # before resampling, which may remove a small segment: the manifest and mask disagree
            missing = missing_lesion_codes(mask, codes)
            if missing:
                raise InputError(missing)
        image = resample(image, cfg.spacing, mode="bilinear")
        try:
            norm = normalise(image.array, cfg.normalisation.method, cfg.normalisation.clip_percentiles)
        except InputError as exc:  # e.g. a blank image: name the file
            raise InputError(f"image {image.path}: {exc}; expected a T1CE scan") from None
        pad_value = float(norm.min())
        if labelled:
            mask = resample(mask, cfg.spacing, mode="nearest")
            lesion = lesion_mask(mask, codes)
            if not lesion.any():
                raise InputError(f"lesion mask is empty for codes {list(row['mask_labels'])}")
            size = cfg.labelled_crop
            voxels = np.argwhere(lesion)
            center = voxels.mean(axis=0)
            start = _crop_start(center, size)
            inside = (voxels.min(0) >= start).all() and (voxels.max(0) < start + np.asarray(size)).all()
            channels = [crop_with_padding(norm, start, size, pad_value),
                        crop_with_padding(lesion.astype(np.float32), start, size, 0.0)]
            extra = {"lesion_voxels": int(lesion.sum()), "lesion_inside_crop": bool(inside),
                     "lesion_volume_ml": float(lesion.sum() * np.prod(cfg.spacing) / 1000.0)}
        else:
            size = cfg.pool_crop
            foreground = norm > np.percentile(norm, 50)
            center = (np.argwhere(foreground).mean(axis=0) if foreground.any()
                      else (np.asarray(norm.shape) - 1) / 2)
            start = _keep_inside(_crop_start(center, size), size, norm.shape)
            channels = [crop_with_padding(norm, start, size, pad_value)]
            extra = {}
    except InputError as exc:
        raise InputError(f"case {cid}: {exc}") from None
    affine = image.affine.copy()
    affine[:3, 3] = image.voxel_to_world(start)
    index_row = {"case_id": cid, "patient_id": row["patient_id"], "center": row["center"],
                 "label": row["label"], "synthetic": row.get("synthetic", 0),
                 "origin_x": affine[0, 3], "origin_y": affine[1, 3], "origin_z": affine[2, 3],
                 "affine": json.dumps(np.round(affine, 6).ravel().tolist()), **extra}
    return np.stack(channels).astype(np.float16), index_row


def source_hash(manifest: pd.DataFrame, manifest_path: Path, cfg: PreprocessConfig) -> str:
    """Hash of the config, the manifest and each source file's size and modification time."""
    h = hashlib.sha256()
    h.update(json.dumps(to_dict(cfg) | {"workers": None}, sort_keys=True).encode())
    h.update(manifest_path.read_bytes())
    for p in list(manifest["image_path"]) + [m for m in manifest["mask_path"] if m]:
        st = os.stat(p) if os.path.exists(p) else None
        h.update(f"{p}:{st.st_size if st else -1}:{st.st_mtime_ns if st else -1}".encode())
    return h.hexdigest()[:16]


def _worker(args):
    row, cfg, labelled = args
    try:
        return process_case(row, cfg, labelled), None
    except InputError as exc:
        return None, str(exc)


def preprocess(manifest_path: str | os.PathLike, out: str | os.PathLike,
               cfg: PreprocessConfig | None = None, progress: bool = False) -> dict:
    """Build the crop cache of one manifest in ``out``; returns its meta.

    Skips all work when ``out`` already holds a cache of the same sources and config.
    """
    cfg = cfg or PreprocessConfig()
    for name, values in (("spacing", cfg.spacing), ("labelled_crop", cfg.labelled_crop),
                         ("pool_crop", cfg.pool_crop)):
        if len(values) != 3 or min(values) <= 0:
            raise InputError(f"preprocess.{name} must be 3 positive numbers, got {list(values)}")
    manifest_path, out = Path(manifest_path), Path(out)
    df = load_manifest(manifest_path)
    has_mask = df["mask_path"].astype(bool)
    if has_mask.any() and not has_mask.all():
        raise InputError(f"manifest {manifest_path}: {int((~has_mask).sum())} case(s) lack a mask while "
                         f"{int(has_mask.sum())} have one; put the unlabeled pool in its own manifest")
    labelled = bool(has_mask.all())
    digest = source_hash(df, manifest_path, cfg)
    meta_path = out / META_FILE
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if old.get("source_hash") == digest and (out / CROPS_FILE).is_file():
            return old | {"skipped": True}

    rows = [dict(r) for _, r in df.iterrows()]
    size = cfg.labelled_crop if labelled else cfg.pool_crop
    n_channels = 2 if labelled else 1
    results: list[dict | None] = [None] * len(rows)
    problems: list[str] = []
    with atomic.atomic_dir(out) as tmp:
        crops = np.lib.format.open_memmap(tmp / CROPS_FILE, mode="w+", dtype=np.float16,
                                          shape=(len(rows), n_channels, *size))
        atomic.reserve_space(tmp / CROPS_FILE)  # a full disk: one error now, not SIGBUS mid-way
        jobs = ((row, cfg, labelled) for row in rows)
        if cfg.workers > 1:
            # spawn, not fork: a forked child of a process that already ran torch (OpenMP
            # threads) can deadlock on a lock held by a thread that does not exist in the child
            pool = ProcessPoolExecutor(max_workers=cfg.workers,
                                       mp_context=multiprocessing.get_context("spawn"))
            iterator = pool.map(_worker, jobs, chunksize=4)
        else:
            pool, iterator = None, map(_worker, jobs)
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
                "channels": ["t1ce", "mask"] if labelled else ["t1ce"],
                "normalisation": to_dict(cfg.normalisation), "synthetic": bool(df["synthetic"].any()),
                "n": len(rows), "source_hash": digest, "manifest": manifest_path.name}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return meta | {"skipped": False}

"""The preprocess-once crop cache, read by pretraining, fine-tuning and attention maps.

Folder layout (written by ``rn-classifier preprocess``):

``meta.json``
    ``version, spacing`` (mm, RAS), ``crop_size`` (voxels), ``channels`` (``["t1ce", "mask"]``
    for labelled cases, ``["t1ce"]`` for the unlabeled pool), ``normalisation``, ``synthetic``,
    ``n``, ``source_hash`` (what the cache was built from; a rerun with the same hash is skipped).
``crops.npy``
    float16 array ``(N, C, X, Y, Z)`` in RAS voxel order, opened memory-mapped, so a training
    loader reads only the crops it samples (random access, no decompression).
``index.csv``
    one row per crop: ``row, case_id, patient_id, center, label, synthetic`` and the crop's
    placement ``origin_x/y/z`` (world RAS mm of crop voxel 0) so maps can be put back into the
    original image; ``source_spacing_x/y/z``: the source image's voxel size (mm, RAS; caches
    written before it was recorded lack these columns).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .. import atomic
from ..errors import InputError

CACHE_VERSION = 1
META_FILE, CROPS_FILE, INDEX_FILE = "meta.json", "crops.npy", "index.csv"


class CropCache:
    """Random access to cached crops: ``cache[i]`` → float32 ``(C, X, Y, Z)``."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        for name in (META_FILE, CROPS_FILE, INDEX_FILE):
            if not (self.folder / name).is_file():
                raise InputError(f"{self.folder} is not a preprocess cache: {name} is missing "
                                 "(run `rn-classifier preprocess MANIFEST --out CACHE` first)")
        try:
            self.meta = json.loads((self.folder / META_FILE).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{self.folder / META_FILE} is not valid JSON ({exc}); rebuild the cache "
                             "with `rn-classifier preprocess`") from None
        if not isinstance(self.meta, dict) or self.meta.get("version") != CACHE_VERSION:
            found = self.meta.get("version") if isinstance(self.meta, dict) else None
            raise InputError(f"{self.folder}: cache version {found} is not the "
                             f"supported version {CACHE_VERSION}; rebuild it with `preprocess`")
        self.index = pd.read_csv(self.folder / INDEX_FILE, dtype={"case_id": str, "patient_id": str,
                                                                  "center": str})
        self.index["label"] = pd.to_numeric(self.index["label"], errors="coerce").astype("Int64")
        self._crops = None  # opened lazily, so a cache pickles cheaply into loader workers
        _ = self.crops      # ... but checked now: a damaged file is one error here, not in a worker
        self._crops = None

    @property
    def crops(self) -> np.ndarray:
        if self._crops is None:
            try:  # allow_pickle stays False: an object array is refused, never unpickled
                self._crops = np.load(self.folder / CROPS_FILE, mmap_mode="r")
            except (ValueError, OSError, EOFError) as exc:
                why = ("it holds pickled objects, which are never loaded (they could run code)"
                       if "pickled" in str(exc) or "Python objects" in str(exc)
                       else f"{exc}; the file may be truncated")
                raise InputError(f"{self.folder / CROPS_FILE} is not a readable crop array ({why}); "
                                 "rebuild the cache with `rn-classifier preprocess`") from None
            if self._crops.shape[0] != len(self.index):
                raise InputError(f"{self.folder}: crops.npy holds {self._crops.shape[0]} crops but "
                                 f"index.csv lists {len(self.index)}; rebuild the cache")
        return self._crops

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_crops"] = None
        return state

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self.crops[i], dtype=np.float32)

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(s) for s in self.meta["spacing"])

    @property
    def crop_size(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.meta["crop_size"])

    @property
    def channels(self) -> list[str]:
        return list(self.meta["channels"])

    def rows_for(self, case_ids) -> np.ndarray:
        """Row numbers of the given case ids (in the given order); unknown ids are an error."""
        lookup = pd.Series(self.index["row"].to_numpy(), index=self.index["case_id"])
        missing = [c for c in case_ids if c not in lookup.index]
        if missing:
            raise InputError(f"{self.folder}: case(s) {missing[:10]} are not in the cache")
        return lookup.loc[list(case_ids)].to_numpy()

    def check_spacing(self, spacing, what: str = "the config") -> None:
        """Refuse a cache built with another voxel spacing than the one the config asks for."""
        want = tuple(float(s) for s in spacing)
        if len(want) != len(self.spacing) or not np.allclose(want, self.spacing, atol=1e-3):
            raise InputError(f"{self.folder} was built with spacing {list(self.spacing)} mm but "
                             f"{what} asks for {list(want)} mm; rebuild the cache with that spacing")


def write_cache(folder: str | os.PathLike, crops: np.ndarray, index: pd.DataFrame,
                meta: dict) -> Path:
    """Write a whole cache atomically (the folder appears complete or not at all)."""
    crops = np.asarray(crops)
    if crops.ndim < 3:
        raise ValueError(f"crops must be (N, C, *spatial), got shape {crops.shape}")
    if len(index) != crops.shape[0]:
        raise ValueError(f"index has {len(index)} rows but crops has {crops.shape[0]}")
    index = index.reset_index(drop=True).copy()
    index.insert(0, "row", np.arange(len(index))) if "row" not in index.columns else None
    meta = {"version": CACHE_VERSION, **meta, "n": int(crops.shape[0]),
            "crop_size": list(crops.shape[2:])}
    with atomic.atomic_dir(folder) as tmp:
        np.save(tmp / CROPS_FILE, crops.astype(np.float16, copy=False))
        index.to_csv(tmp / INDEX_FILE, index=False)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return Path(folder)

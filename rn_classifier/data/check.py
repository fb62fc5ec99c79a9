"""``check-data``: open every case of a manifest and list every problem at once.

Checks, per case: image and mask readable, image 3D, no NaN/Inf voxels, image not constant,
mask geometry equal to the image's within tolerance, the listed lesion codes (or RTSTRUCT
ROIs / SEG segments, checked against the image's series) present and non-empty; per table: unique case ids, labels in {0, 1} or empty, declared clinical types.
Like nnU-Net's ``verify_dataset_integrity``, nothing stops at the first failure: the user gets
the full list (case id, expected vs found) and fixes the dataset in one pass.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from ..errors import InputError
from .ingest import geometry_mismatch, lesion_mask, load_mask, load_volume, missing_lesion_codes
from .manifest import load_manifest


def check_case(row: pd.Series, atol_mm: float = 1e-3) -> list[str]:
    """Problems of one case (empty list when clean)."""
    cid = row["case_id"]
    problems = []
    try:
        image = load_volume(row["image_path"])
    except InputError as exc:
        return [f"case {cid}: image: {exc}"]
    data = np.asarray(image.array)
    if np.issubdtype(data.dtype, np.floating):
        n_bad = int((~np.isfinite(data)).sum())
        if n_bad:
            problems.append(f"case {cid}: image {image.path} holds {n_bad} NaN/infinite voxels "
                            "(expected finite intensities)")
    if np.nanmax(data) == np.nanmin(data):
        problems.append(f"case {cid}: image {image.path} is constant ({np.nanmin(data)}), expected a T1CE scan")
    mask_path = row.get("mask_path", "")
    labels = tuple(row.get("mask_labels", ()) or ())
    if not mask_path:
        if not pd.isna(row.get("label")):
            problems.append(f"case {cid}: labelled case has no mask (expected a lesion mask)")
        return problems
    try:
        mask, labels = load_mask(mask_path, labels, image)
    except InputError as exc:
        return problems + [f"case {cid}: mask: {exc}"]
    mismatch = geometry_mismatch(image, mask, atol_mm)
    if mismatch:
        problems.append(f"case {cid}: {mismatch}")
    missing = missing_lesion_codes(mask, labels)
    if missing:
        problems.append(f"case {cid}: {missing}")
    if not lesion_mask(mask, labels).any():
        problems.append(f"case {cid}: lesion mask is empty for codes {list(labels) or 'any non-zero'}")
    return problems


def check_manifest(path: str | os.PathLike, clinical: Mapping[str, str] | None = None,
                   workers: int = 2, progress: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """All problems of a manifest: the table's first, then each case's in manifest order."""
    problems: list[str] = []
    df = load_manifest(path, clinical=clinical, collect=problems)
    rows = [row for _, row in df.iterrows()]
    if progress:
        from rich.progress import track

        iterator_wrap = lambda it: track(it, total=len(rows), description="checking cases")  # noqa: E731
    else:
        iterator_wrap = lambda it: it  # noqa: E731
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for case_problems in iterator_wrap(pool.map(check_case, rows)):
            problems.extend(case_problems)
    return df, problems

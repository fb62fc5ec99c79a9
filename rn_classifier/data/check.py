"""``check-data``: open every case of a manifest and list every problem at once.

Checks, per case: image and mask readable, image 3D, no NaN/Inf voxels, image not constant,
mask geometry equal to the image's within tolerance, the listed lesion codes (or RTSTRUCT
ROIs / SEG segments, checked against the image's series) present and non-empty, and the same of
every other rater's mask (``mask_<rater>`` columns; an empty cell = not contoured); per table:
unique case ids, labels in {0, 1} or empty, declared clinical types.
Like nnU-Net's ``verify_dataset_integrity``, nothing stops at the first failure: the user gets
the full list (case id, expected vs found) and fixes the dataset in one pass.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from .contour_variants import rater_columns, rater_mask_path
from .manifest import load_manifest
from .readers import read_image, read_mask


def check_case(row: pd.Series, base: str | os.PathLike = ".", raters: Sequence[str] = ()) -> list[str]:
    """Problems of one case (empty list when clean).

    base: the folder the manifest's relative paths start from (for the ``raters`` cells);
    raters: the manifest's ``mask_<rater>`` columns (:func:`~.contour_variants.rater_columns`).
    """
    cid = row["case_id"]
    try:
        image = read_image(row["image_path"])
    except InputError as exc:
        return [f"case {cid}: image: {exc}"]
    return (_image_problems(cid, image) + _mask_problems(row, image)
            + _rater_mask_problems(row, image, raters, base))


def _image_problems(cid, image) -> list[str]:
    problems = []
    data = np.asarray(image.array)
    if np.issubdtype(data.dtype, np.floating):
        n_bad = int((~np.isfinite(data)).sum())
        if n_bad:
            problems.append(f"case {cid}: image {image.path} holds {n_bad} NaN/infinite voxels "
                            "(expected finite intensities)")
    if np.nanmax(data) == np.nanmin(data):
        problems.append(f"case {cid}: image {image.path} is constant ({np.nanmin(data)}), expected a T1CE scan")
    return problems


def _mask_problems(row: pd.Series, image) -> list[str]:
    cid = row["case_id"]
    mask_path = row.get("mask_path", "")
    labels = tuple(row.get("mask_labels", ()) or ())
    if not mask_path:
        if not pd.isna(row.get("label")):
            return [f"case {cid}: labelled case has no mask (expected a lesion mask)"]
        return []
    try:
        mask = read_mask(mask_path, labels, image)
    except InputError as exc:
        # name the mask when the reader's message does not already start with it
        text = str(exc) if str(exc).startswith("mask ") else f"mask: {exc}"
        return [f"case {cid}: {text}"]
    if not mask.lesion.any():
        return [f"case {cid}: lesion mask is empty for codes {list(labels) or 'any non-zero'}"]
    return []


def _rater_mask_problems(row: pd.Series, image, raters: Sequence[str], base) -> list[str]:
    """Other raters' masks, held to what the drawn mask is (readable, on the image's grid, the
    case's lesion codes present and non-empty): the contour stage reads them the same way. An
    empty cell passes: that rater did not contour this case."""
    cid = row["case_id"]
    labels = tuple(row.get("mask_labels", ()) or ())
    problems = []
    for column in raters:
        path = rater_mask_path(row.get(column), base)
        if path is None:
            continue
        where = f"case {cid}, column {column}"
        try:
            mask = read_mask(path, labels, image)
        except InputError as exc:
            text = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            problems.append(f"{where}: {text}")
            continue
        if not mask.lesion.any():
            problems.append(f"{where}: mask {path} is empty for codes {list(labels) or 'any non-zero'} "
                            "(expected this rater's lesion, or an empty cell where they did not contour)")
    return problems


def check_manifest(path: str | os.PathLike, clinical: Mapping[str, str] | None = None,
                   workers: int = 2, progress: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """All problems of a manifest: the table's first, then each case's in manifest order."""
    problems: list[str] = []
    df = load_manifest(path, clinical=clinical, collect=problems)
    rows = [row for _, row in df.iterrows()]
    check = partial(check_case, base=Path(path).resolve().parent, raters=rater_columns(list(df.columns)))
    if progress:
        from rich.progress import track

        iterator_wrap = lambda it: track(it, total=len(rows), description="checking cases")  # noqa: E731
    else:
        iterator_wrap = lambda it: it  # noqa: E731
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for case_problems in iterator_wrap(pool.map(check, rows)):
            problems.extend(case_problems)
    return df, problems

"""One manifest row's crop and index row: the work of a preprocessing worker.

Kept apart from :mod:`.preprocess` (manifests, pandas, the cache) so that a spawned worker
process imports only the road from files to crop (:mod:`.crop`): half the start-up of a worker,
which a manifest of a few cases pays in full (benchmarks/preprocess_speed.py).
"""

from __future__ import annotations

import json

import numpy as np

from ..errors import InputError
from .crop import CropSetting, lesion_crop, pool_crop, read_case, sub_volume_crop

CENTRE_COLUMNS = ("centre_x", "centre_y", "centre_z")
# How a manifest's crops are cut: lesion-centred (labelled), on the head (pool without centres),
# or on each row's centre (pool of sub-volumes).
LESION, HEAD, SUB_VOLUME = "lesion", "head", "sub_volume"


def case_crop(row: dict, setting: CropSetting, kind: str) -> tuple[np.ndarray, dict]:
    """One manifest row → (crop (C, X, Y, Z) float16, index row), cut as ``kind`` says at
    ``setting``. Raises InputError naming the case."""
    cid = row["case_id"]
    try:
        if kind == SUB_VOLUME:
            case = read_case(row["image_path"], row["mask_path"] or None, row["mask_labels"])
            crop = sub_volume_crop(case, [float(row[c]) for c in CENTRE_COLUMNS], setting)
            extra = {"lesion_voxels": crop.lesion_voxels, "lesion_volume_ml": crop.lesion_volume_ml,
                     **({"kind": row["kind"]} if "kind" in row else {})}
        elif kind == LESION:
            case = read_case(row["image_path"], row["mask_path"], row["mask_labels"])
            crop = lesion_crop(case, setting)
            extra = {"lesion_voxels": crop.lesion_voxels, "lesion_inside_crop": crop.lesion_inside_crop,
                     "lesion_volume_ml": crop.lesion_volume_ml}
        else:
            case = read_case(row["image_path"])
            crop, extra = pool_crop(case.image, setting), {}
        # the acquisition's voxel size (RAS), for the label-free shift check (rn_classifier.shift)
        extra.update(zip(("source_spacing_x", "source_spacing_y", "source_spacing_z"),
                         np.round(case.image.spacing, 4)))
    except InputError as exc:
        raise InputError(f"case {cid}: {exc}") from None
    affine = crop.affine
    index_row = {"case_id": cid, "patient_id": row["patient_id"], "center": row["center"],
                 "label": row["label"], "synthetic": row.get("synthetic", 0),
                 "origin_x": affine[0, 3], "origin_y": affine[1, 3], "origin_z": affine[2, 3],
                 "affine": json.dumps(np.round(affine, 6).ravel().tolist()), **extra}
    return crop.array, index_row


def share_cores(threads: int) -> None:
    """A worker's initialiser: resample with its share of the cores (SimpleITK would start a
    thread per core in every worker)."""
    import SimpleITK as sitk

    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(threads)


def crop_or_problem(job: tuple[dict, CropSetting, str]):
    """``(case_crop(*job), None)``, or ``(None, message)`` for a case with bad input: a worker
    reports every bad case instead of stopping at the first."""
    try:
        return case_crop(*job), None
    except InputError as exc:
        return None, str(exc)

"""``predict --cases``: many new cases with one loaded model, one row per case.

The cases come from a manifest (seam 1: ``case_id, image, mask[, mask_labels][, mask_<rater>]
[, clinical columns]``, paths relative to the manifest; ``,`` or ``;`` separated; other raters'
masks go into each case's contour spread as ``rater:mask_<rater>``, as the study names them) or from a folder holding
``images/<case>.<ext>`` and ``masks/<case>.<ext>`` with the same names (nnU-Net's ``-i DIR``
habit). Each case is exactly a single-case :func:`~rn_classifier.predict.case.predict_case`
into ``OUT/<case_id>/``; ``OUT/predictions.csv`` holds one row per case, a case that is refused
included (its ``error`` column says why), so nothing is dropped unsaid.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from .. import atomic
from ..data.contour_variants import rater_columns, rater_mask_path
from ..errors import InputError
from .case import SYNTHETIC_WARNING, predict_case
from .model import load_model

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
ROW_COLUMNS = ("case_id", "probability_rn", "fold_spread_sd", "threshold", "decision", "borderline",
               "warnings", "error")


def _stem(path: Path) -> str:
    name = path.name
    return next((name[: -len(s)] for s in IMAGE_SUFFIXES if name.endswith(s)), name)


def _folder_cases(folder: Path) -> pd.DataFrame:
    images, masks = folder / "images", folder / "masks"
    if not images.is_dir() or not masks.is_dir():
        raise InputError(f"--cases {folder}: a folder of cases holds images/<case>.nii.gz and "
                         "masks/<case>.nii.gz (same names), or pass a manifest CSV")
    by_name = {_stem(p): p for p in sorted(masks.iterdir())}
    rows, unpaired = [], []
    for image in sorted(images.iterdir()):
        mask = by_name.get(_stem(image))
        if mask is None:
            unpaired.append(image.name)
            continue
        rows.append({"case_id": _stem(image), "image_path": str(image), "mask_path": str(mask),
                     "mask_labels": ()})
    if unpaired:
        raise InputError(f"--cases {folder}: image(s) {unpaired[:10]} have no mask of the same name "
                         f"in {masks}")
    if not rows:
        raise InputError(f"--cases {folder}: no image in {images}")
    return pd.DataFrame(rows)


def read_cases(path: str | os.PathLike, clinical_columns=()) -> pd.DataFrame:
    """``case_id, image_path, mask_path, mask_labels``, the ``mask_<rater>`` columns present (other
    raters' masks, absolute; empty = none) and the clinical columns present."""
    from ..data.dicom_rt import dicom_mask_kind
    from ..data.manifest import parse_mask_labels, read_csv_table

    path = Path(path)
    if path.is_dir():
        return _folder_cases(path)
    table = read_csv_table(path, "--cases manifest", dtype=str, keep_default_na=False)
    missing = [c for c in ("case_id", "image", "mask") if c not in table.columns]
    if missing:
        raise InputError(f"--cases {path}: missing column(s) {missing}; expected case_id, image, mask "
                         f"[, mask_labels] [, clinical columns], found {list(table.columns)[:8]}")
    base = path.resolve().parent
    out = pd.DataFrame({"case_id": table["case_id"],
                        "image_path": [str(base / p) for p in table["image"]],
                        "mask_path": [str(base / p) for p in table["mask"]]})
    labels = table["mask_labels"] if "mask_labels" in table.columns else [""] * len(table)
    out["mask_labels"] = [parse_mask_labels(v, c, names=dicom_mask_kind(Path(m)) is not None)
                          for v, c, m in zip(labels, table["case_id"], out["mask_path"])]
    # other raters' masks ride along as absolute paths ("" = that rater did not contour the case)
    for col in rater_columns(list(table.columns)):
        out[col] = [str(p) if (p := rater_mask_path(v, base)) is not None else "" for v in table[col]]
    for col in clinical_columns:
        if col in table.columns:
            out[col] = table[col]
    return out


def case_rater_masks(case: dict) -> dict[str, str]:
    """``{column: mask file}`` of the other raters who contoured this case (a :func:`read_cases` row)."""
    return {col: case[col] for col in rater_columns(list(case)) if case[col]}


def predict_cases(model_dir: str | os.PathLike, cases: str | os.PathLike, out: str | os.PathLike,
                  stats: str | os.PathLike | None = None,
                  echo: Callable[[str], None] = lambda line: None) -> pd.DataFrame:
    """Predict every case of ``cases`` with the model loaded once; write ``OUT/<case_id>/`` per case
    and ``OUT/predictions.csv``; returns that table (an ``error`` per refused case)."""
    run = load_model(model_dir)
    table = read_cases(cases, list(run.clinical_spec))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for case in table.to_dict("records"):
        clinical = [f"{c}={case[c]}" for c in run.clinical_spec if str(case.get(c, "")).strip()]
        try:
            result = predict_case(run.folder, case["image_path"], case["mask_path"], out / case["case_id"],
                                  list(case["mask_labels"]), clinical, stats, run=run,
                                  rater_masks=case_rater_masks(case))
        except InputError as exc:
            rows.append({"case_id": case["case_id"], "error": str(exc)})
            echo(f"{case['case_id']}: error: {exc}")
            continue
        rows.append({"case_id": case["case_id"], "probability_rn": result["probability_rn"],
                     "fold_spread_sd": result["fold_spread_sd"], "threshold": result["threshold"]["value"],
                     "decision": result["decision"], "borderline": result["borderline"],
                     "warnings": " | ".join(result.get("warnings", [])), "error": ""})
        echo(f"{case['case_id']}: P(RN) = {result['probability_rn']:.3f} → {result['decision']}"
             + (" (borderline)" if result["borderline"] else ""))
    frame = pd.DataFrame(rows, columns=list(ROW_COLUMNS))
    atomic.write_csv(out / "predictions.csv", frame)
    if run.synthetic:
        frame.attrs["warning"] = SYNTHETIC_WARNING
    return frame

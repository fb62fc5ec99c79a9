"""Is a new case's image outside the range of the internal data? (no label needed)

The case's model input is described by the image statistics of :mod:`rn_classifier.shift.features`
and measured against the internal reference of the study's shift check (``shift/shift.json``,
``image.cases``: robust median and scale per statistic and the threshold). ``prediction.json
["shift"]`` says the distance, the threshold, whether the case is flagged and the statistics
furthest from the internal cases.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import InputError


def find_shift_file(model_path: str | os.PathLike) -> Path | None:
    """The study's ``shift/shift.json`` seen from a bundle (RUN/finetune/<m>/bundle) or run folder."""
    path = Path(model_path).resolve()
    for root in (path.parent.parent, path.parent.parent.parent):
        candidate = root / "shift" / "shift.json"
        if candidate.is_file():
            return candidate
    return None


def shift_section(case, shift_file: str | os.PathLike | None, model_path) -> dict:
    """``prediction.json["shift"]``: the case against the internal range, or why it is unavailable."""
    from ..shift.check import case_verdict
    from ..shift.features import crop_features

    path = Path(shift_file) if shift_file else find_shift_file(model_path)
    if path is None:
        return {"available": False, "reason": "no shift.json found (the study's shift/shift.json; "
                                              "or pass --shift)"}
    try:
        cases = json.loads(path.read_text(encoding="utf-8"))["image"]["cases"]
        reference, threshold = cases["reference"], cases["threshold"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise InputError(f"--shift {path}: not a shift check of `rn-classifier shift-check` ({exc!r})") from None
    features = crop_features(case.crop)
    features.update(slice_mm=float(max(case.image.spacing)), in_plane_mm=float(min(case.image.spacing)))
    return {"available": True, "source": path.name, **case_verdict(features, reference, threshold)}

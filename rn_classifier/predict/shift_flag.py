"""Is a new case's image outside the range of the internal data? (no label needed)

The case's model input is described by the image statistics of :mod:`rn_classifier.shift.features`
and measured against the internal reference of the study's shift check
(:func:`rn_classifier.shift.check.case_reference`: robust median and scale per statistic and the
threshold). Where that reference comes from, first found wins:

1. ``--shift FILE``: a ``shift.json`` of ``rn-classifier shift-check``;
2. the model bundle, which the study's shift stage (or ``shift-check --model``) records it into,
   so a bundle shipped alone still checks a case;
3. the study's ``shift/shift.json`` above the model folder (run folders from before bundles
   carried it);
4. none: the section says the check is unavailable and why.

``prediction.json["shift"]`` says the distance, the threshold, whether the case is flagged, the
statistics furthest from the internal cases, and which reference was used (``"reference"``:
``"bundle"`` or the shift.json path).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import InputError
from ..models.bundle import META_NAME, ModelBundle, shift_reference

FROM_BUNDLE = "bundle"


def find_shift_file(model_path: str | os.PathLike) -> Path | None:
    """The study's ``shift/shift.json`` seen from a bundle (RUN/finetune/<m>/bundle) or run folder."""
    path = Path(model_path).resolve()
    for root in (path.parent.parent, path.parent.parent.parent):
        candidate = root / "shift" / "shift.json"
        if candidate.is_file():
            return candidate
    return None


def _read_shift_file(path: Path, where: str) -> dict:
    from ..shift.check import case_reference

    try:
        shift = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{where}: not a shift check of `rn-classifier shift-check` ({exc!r})") from None
    return case_reference(shift, where)


def case_reference_for(shift_file: str | os.PathLike | None, run: ModelBundle,
                       model_path: str | os.PathLike) -> tuple[dict, str] | None:
    """(the case reference, where it came from: ``"bundle"`` or the shift.json path), or None."""
    from ..privacy import display_path
    from ..shift.check import check_case_reference

    if shift_file:
        return _read_shift_file(Path(shift_file), f"--shift {shift_file}"), display_path(shift_file)
    recorded = shift_reference(run.meta)
    if recorded is not None:
        return check_case_reference(recorded, f"{run.folder / META_NAME} (shift_reference)"), FROM_BUNDLE
    found = find_shift_file(model_path)
    if found is not None:
        return _read_shift_file(found, f"{found} (the study's shift check above the model)"), \
            display_path(found)
    return None


def shift_section(case, shift_file: str | os.PathLike | None, run: ModelBundle,
                  model_path: str | os.PathLike) -> dict:
    """``prediction.json["shift"]``: the case against the internal range, or why it is unavailable."""
    from ..shift.check import case_verdict
    from ..shift.features import crop_features

    chosen = case_reference_for(shift_file, run, model_path)
    if chosen is None:
        return {"available": False,
                "reason": "the model bundle records no internal range and no shift/shift.json was found "
                          "beside the model (the study's shift stage or `rn-classifier shift-check "
                          "--model` records it; or pass --shift)"}
    reference, source = chosen
    features = crop_features(case.crop)
    features.update(slice_mm=float(max(case.image.spacing)), in_plane_mm=float(min(case.image.spacing)))
    return {"available": True, "reference": source,
            **case_verdict(features, reference["reference"], reference["threshold"])}

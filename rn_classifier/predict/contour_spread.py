"""How much one new case's P(RN) depends on the contour: predictions under alternative contours.

The drawn lesion, its erosion / dilation by about 1 mm, smooth boundary jitter
(:mod:`rn_classifier.data.contour_variants`) and any other raters' masks (given with
``--rater-mask``, or as ``mask_<rater>`` columns of a ``--cases`` manifest) go through the same
crop road as the drawn one; every fold model predicts each and the mean is P(RN) under that
contour. ``prediction.json["contour"]`` holds P per contour, the
spread (SD over all contours, the drawn one included, as the fold spread is over folds), the range
and the largest move away from the drawn contour's P.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..data.contour_variants import (ContourVariantConfig, contour_variants, spread_summary,
                                     variant_inputs)
from ..errors import InputError
from ..stats.contour import ORIGINAL

RaterMasks = Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike]


def rater_lesions_of(rater_masks: RaterMasks, labels, image) -> dict[str, np.ndarray]:
    """Other raters' masks of this case, each read on the image's grid.

    rater_masks: files as ``--rater-mask`` gives them, named ``rater:<file name>``; or
    ``{manifest column: file}`` as ``predict --cases`` gives them, named ``rater:<column>`` as the
    study's contour stage names them (:func:`~rn_classifier.data.contour_variants.rater_lesions`).
    """
    from ..data.readers import read_mask

    out = {}
    for name, source, path in _named(rater_masks):
        try:
            mask = read_mask(path, list(labels or []), image)
        except InputError as exc:
            raise InputError(f"{source} {path}: {exc}") from None
        if not mask.lesion.any():
            raise InputError(f"{source} {path}: no voxel has the lesion label(s) "
                             f"{list(labels or []) or 'non-zero'}")
        out[f"rater:{name}"] = mask.lesion
    return out


def _named(rater_masks: RaterMasks) -> list[tuple[str, str, str | os.PathLike]]:
    """(name, where it came from, file) per rater mask."""
    if isinstance(rater_masks, Mapping):
        return [(column, f"column {column}", path) for column, path in rater_masks.items()]
    return [(Path(path).name, "--rater-mask", path) for path in rater_masks]


def contour_section(model, case, clinical, cfg: ContourVariantConfig = ContourVariantConfig(),
                    rater_masks: RaterMasks = (), mask_labels=(),
                    drawn_prob: float | None = None) -> dict:
    """``prediction.json["contour"]`` for one case.

    model: a loaded :class:`~rn_classifier.models.bundle.ModelBundle`; case: the
    :class:`~rn_classifier.predict.inputs.CaseInput` of the drawn contour; drawn_prob: its P(RN)
    already computed (else predicted again).
    """
    from ..data.crop import Case
    from ..data.readers import LesionMask

    read = Case(image=case.image, mask=LesionMask(lesion=case.lesion, labels=(), present=(), path=""))
    lesions = contour_variants(case.lesion, case.image.spacing, cfg, "")
    lesions.update(rater_lesions_of(rater_masks, mask_labels, case.image))
    inputs = variant_inputs(read, model.preprocessing.crop_setting, lesions)
    probs = {ORIGINAL: drawn_prob if drawn_prob is not None else
             float(np.mean(model.predict(case.crop, clinical, with_attention=False).probs))}
    for name, x in inputs.items():
        probs[name] = float(np.mean(model.predict(x, clinical, with_attention=False).probs))
    return {"probabilities": probs, **spread_summary(probs),
            "settings": {"margin_mm": cfg.margin_mm, "n_jitter": cfg.n_jitter, "jitter_mm": cfg.jitter_mm,
                         "jitter_smooth_mm": cfg.jitter_smooth_mm, "seed": cfg.seed,
                         "rater_masks": {name: Path(path).name for name, _, path in _named(rater_masks)}}}

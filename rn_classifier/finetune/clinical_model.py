"""Clinical-only model: L2-regularised logistic regression on the preprocessed clinical vector.

The baseline every clinician asks for (not reported by Gomaa et al. 2025). The same pipeline,
with the image model's out-of-fold logit as one more (unpenalised) numeric column, is the
late-fusion stacker (:mod:`rn_classifier.finetune.fusion`).

A fitted model is written as JSON (preprocessor + coefficients), read back by
:class:`LogisticModelJSON` without scikit-learn objects or pickle.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from .. import atomic
from ..errors import InputError
from ..models.clinical_json import JSON_VERSION, LOGISTIC_FORMAT, LogisticModelJSON  # noqa: F401  (re-exported)
from .clinical import clinical_frame, make_preprocessor, preprocessor_to_json


def fit_logistic(frame: pd.DataFrame, y, spec: Mapping[str, str], C: float = 1.0,
                 class_weight: str | None = "balanced", max_iter: int = 5000) -> Pipeline:
    """Fit preprocessing + logistic regression on training cases.

    frame: the cases' columns named in ``spec`` (any extra columns are ignored);
    y: (N,) 0/1 labels, 1 = radiation necrosis.
    """
    y = np.asarray(y, dtype=int)
    counts = np.bincount(y, minlength=2)
    if counts.min() == 0:
        raise InputError(f"the logistic model needs both classes in its training cases, got "
                         f"{counts[1]} radiation necrosis (1) and {counts[0]} progression (0)")
    pipe = Pipeline([
        ("preprocess", make_preprocessor(spec)),
        ("logistic", LogisticRegression(C=C, class_weight=class_weight, max_iter=max_iter)),
    ])
    return pipe.fit(clinical_frame(frame, spec), y)


def predict_logistic(pipe: Pipeline, frame: pd.DataFrame, spec: Mapping[str, str]) -> np.ndarray:
    """P(radiation necrosis) for each row: (N,)."""
    return pipe.predict_proba(clinical_frame(frame, spec))[:, 1]


def logistic_to_json(pipe: Pipeline, spec: Mapping[str, str]) -> dict:
    """The fitted pipeline as JSON; a late-fusion stacker also records its inner-CV choice."""
    lr: LogisticRegression = pipe.named_steps["logistic"]
    stacker = getattr(pipe, "stacker_choice", None)
    extra = {"stacker": stacker} if stacker else {}
    if hasattr(pipe, "image_logit_scale"):
        extra["image_logit_scale"] = pipe.image_logit_scale
    return {**extra, "format": LOGISTIC_FORMAT, "version": JSON_VERSION,
            "preprocessor": preprocessor_to_json(pipe.named_steps["preprocess"], spec),
            "coef": [float(v) for v in lr.coef_.ravel()],
            "intercept": float(lr.intercept_[0]),
            "C": stacker["clinical_C"] if stacker else float(lr.C)}


def save_logistic(pipe: Pipeline, spec: Mapping[str, str], path: str | os.PathLike) -> Path:
    return atomic.write_json(path, logistic_to_json(pipe, spec))

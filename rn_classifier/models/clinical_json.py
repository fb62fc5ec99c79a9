"""Fitted clinical models read back from their JSON, with numpy only (``predict`` serves them).

* :func:`clinical_frame`: the clinical columns of a table, numeric as float, categorical as str
  / NaN (the same frame training fits on and serving transforms).
* :class:`ClinicalTransformJSON`: the clinical preprocessing fitted in
  :mod:`rn_classifier.finetune.clinical` (median imputation → standardisation; "missing" →
  one-hot), applied from its JSON; tested against the scikit-learn transformer it came from.
* :class:`LogisticModelJSON`: the logistic model of :mod:`rn_classifier.finetune.clinical_model`
  (clinical-only model, late-fusion stacker) from its JSON: preprocessing + coefficients.

No pickle and no scikit-learn objects: a model bundle holds plain numbers and strings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit

from ..errors import InputError

MISSING_CATEGORY = "missing"
PREPROCESSOR_FORMAT = "rn-classifier/clinical-preprocessor"
LOGISTIC_FORMAT = "rn-classifier/logistic-model"
JSON_VERSION = 1


def clinical_frame(df: pd.DataFrame, spec: Mapping[str, str], source: str = "manifest") -> pd.DataFrame:
    """The clinical columns of ``df`` in ``spec`` order: numeric as float, categorical as str/NaN.

    Returns a frame with the same index as ``df``. Missing columns are an :class:`InputError`.
    """
    missing = [c for c in spec if c not in df.columns]
    if missing:
        raise InputError(f"{source}: clinical column(s) {missing} named in the config are missing; "
                         f"it has {list(df.columns)}")
    out = pd.DataFrame(index=df.index)
    for col, kind in spec.items():
        if kind == "numeric":
            values = pd.to_numeric(df[col], errors="coerce").astype(float)
            bad = df[col].notna() & values.isna()
            if bad.any():
                raise InputError(f"{source}: clinical column '{col}' is numeric but holds "
                                 f"{df.loc[bad, col].head(3).tolist()}")
            out[col] = values
        else:
            # object dtype with np.nan for missing: what SimpleImputer / OneHotEncoder expect
            values = df[col].astype(object)
            out[col] = [np.nan if pd.isna(v) else str(v) for v in values]
            out[col] = out[col].astype(object)
    return out


class ClinicalTransformJSON:
    """Apply a preprocessor written by :func:`preprocessor_to_json` (numpy only).

    ``transform(df)`` → float ``(N, F)`` in the column order of ``feature_names``; identical to
    the fitted scikit-learn transformer it was exported from.
    """

    def __init__(self, payload: Mapping):
        if payload.get("format") != PREPROCESSOR_FORMAT or payload.get("version") != JSON_VERSION:
            raise InputError(f"not a clinical preprocessor file of version {JSON_VERSION}: "
                             f"format={payload.get('format')!r}, version={payload.get('version')!r}")
        self.spec = dict(payload["spec"])
        self.numeric = payload.get("numeric")
        self.categorical = payload.get("categorical")
        self.feature_names = list(payload["feature_names"])

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        frame = clinical_frame(df, self.spec)
        parts = []
        if self.numeric:
            x = frame[self.numeric["columns"]].to_numpy(dtype=float)
            x = np.where(np.isnan(x), np.asarray(self.numeric["impute"]), x)
            parts.append((x - np.asarray(self.numeric["mean"])) / np.asarray(self.numeric["scale"]))
        if self.categorical:
            fill = self.categorical["fill"]
            for col, cats in zip(self.categorical["columns"], self.categorical["categories"]):
                values = np.array([fill if pd.isna(v) else str(v) for v in frame[col]], dtype=object)
                parts.append((values[:, None] == np.asarray(cats, dtype=object)[None, :]).astype(float))
        return np.concatenate(parts, axis=1) if parts else np.zeros((len(df), 0))


class LogisticModelJSON:
    """A logistic model read from JSON: ``predict_proba(df)`` → (N,) P(radiation necrosis)."""

    def __init__(self, payload: Mapping):
        if payload.get("format") != LOGISTIC_FORMAT or payload.get("version") != JSON_VERSION:
            raise InputError(f"not a logistic model file of version {JSON_VERSION}: "
                             f"format={payload.get('format')!r}, version={payload.get('version')!r}")
        self.preprocessor = ClinicalTransformJSON(payload["preprocessor"])
        self.coef = np.asarray(payload["coef"], dtype=float)
        self.intercept = float(payload["intercept"])
        if self.coef.size != len(self.preprocessor.feature_names):
            raise InputError(f"logistic model file: {self.coef.size} coefficients for "
                             f"{len(self.preprocessor.feature_names)} features")
        # a late-fusion stacker reads its fold model's image logit standardised (finetune.fusion)
        scale = payload.get("image_logit_scale") or {"mean": 0.0, "sd": 1.0}
        self.image_logit_mean, self.image_logit_sd = float(scale["mean"]), float(scale["sd"])

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LogisticModelJSON":
        path = Path(path)
        if not path.is_file():
            raise InputError(f"logistic model file {path} does not exist")
        return cls(json.loads(path.read_text()))

    def standardised_image_logit(self, logit: float) -> float:
        return (logit - self.image_logit_mean) / self.image_logit_sd

    def decision_function(self, df: pd.DataFrame) -> np.ndarray:
        return self.preprocessor.transform(df) @ self.coef + self.intercept

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        return expit(self.decision_function(df))

"""Clinical preprocessing: a scikit-learn ``ColumnTransformer`` fitted on training folds only.

numeric columns:      median imputation → standardisation (``StandardScaler``)
categorical columns:  missing → the category ``"missing"`` → one-hot (``OneHotEncoder``);
                      a category never seen in the training folds encodes as all zeros

The fitted transformer is written as JSON (imputation values, means, scales, categories), so a
later ``predict`` on one new case rebuilds the same features without unpickling anything:
:class:`ClinicalTransformJSON` applies that JSON with numpy and is tested against scikit-learn.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ..errors import InputError

MISSING_CATEGORY = "missing"
JSON_FORMAT = "rn-classifier/clinical-preprocessor"
JSON_VERSION = 1


def _columns(spec: Mapping[str, str], kind: str) -> list[str]:
    return [c for c, t in spec.items() if t == kind]


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


def make_preprocessor(spec: Mapping[str, str]) -> ColumnTransformer:
    """An unfitted ColumnTransformer for the columns declared in ``spec``."""
    numeric, categorical = _columns(spec, "numeric"), _columns(spec, "categorical")
    if not numeric and not categorical:
        raise InputError("no clinical columns declared; set `clinical: {column: numeric|categorical}`")
    transformers = []
    if numeric:
        transformers.append(("numeric", Pipeline([
            # keep_empty_features: a column all-missing in a training fold stays (as 0), so every
            # fold produces the same feature layout
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
        ]), numeric))
    if categorical:
        transformers.append(("categorical", Pipeline([
            ("impute", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY,
                                     missing_values=np.nan)),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]), categorical))
    return ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=True)


def fit_preprocessor(frame: pd.DataFrame, spec: Mapping[str, str]) -> ColumnTransformer:
    """Fit on the training cases only (``frame`` from :func:`clinical_frame`)."""
    return make_preprocessor(spec).fit(frame)


def preprocessor_to_json(pre: ColumnTransformer, spec: Mapping[str, str]) -> dict:
    """The fitted transformer as plain numbers and strings (no pickle)."""
    out: dict = {"format": JSON_FORMAT, "version": JSON_VERSION, "spec": dict(spec),
                 "feature_names": [str(n) for n in pre.get_feature_names_out()]}
    named = pre.named_transformers_
    if "numeric" in named:
        imp, sc = named["numeric"].named_steps["impute"], named["numeric"].named_steps["scale"]
        out["numeric"] = {"columns": _columns(spec, "numeric"),
                          "impute": [float(v) for v in imp.statistics_],
                          "mean": [float(v) for v in sc.mean_],
                          "scale": [float(v) for v in sc.scale_]}
    if "categorical" in named:
        enc = named["categorical"].named_steps["onehot"]
        out["categorical"] = {"columns": _columns(spec, "categorical"),
                              "fill": MISSING_CATEGORY,
                              "categories": [[str(c) for c in cats] for cats in enc.categories_]}
    return out


class ClinicalTransformJSON:
    """Apply a preprocessor written by :func:`preprocessor_to_json` (numpy only).

    ``transform(df)`` → float ``(N, F)`` in the column order of ``feature_names``; identical to
    the fitted scikit-learn transformer it was exported from.
    """

    def __init__(self, payload: Mapping):
        if payload.get("format") != JSON_FORMAT or payload.get("version") != JSON_VERSION:
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

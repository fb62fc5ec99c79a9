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
from ..models.clinical_json import (JSON_VERSION, MISSING_CATEGORY,  # noqa: F401  (re-exported)
                                   PREPROCESSOR_FORMAT, ClinicalTransformJSON, clinical_frame)


def _columns(spec: Mapping[str, str], kind: str) -> list[str]:
    return [c for c, t in spec.items() if t == kind]


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
    out: dict = {"format": PREPROCESSOR_FORMAT, "version": JSON_VERSION, "spec": dict(spec),
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

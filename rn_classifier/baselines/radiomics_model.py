"""The radiomics classifier: one scikit-learn pipeline, fitted inside every fold.

Steps (:func:`build_model`), all fitted on the training cases of a fold only:

1. ``impute``: median of each feature (pyradiomics returns NaN for a few features on some
   lesions).
2. ``drop_constant``: :class:`NearConstantFilter`, features on which most cases share one value.
3. ``scale``: standardise to zero mean, unit variance.
4. ``drop_correlated``: :class:`CorrelationFilter`, of two features with |Pearson r| above the
   threshold the later one (pyradiomics order: shape, original, LoG, wavelet) is dropped.
5. ``select``: at most ``max_features`` features, by an L1-penalised logistic regression
   (non-zero coefficients, the largest first) or by the ANOVA F statistic (univariate).
6. ``classify``: L1 or L2 logistic regression, random forest or RBF SVM.

The classifier family and its strength are chosen by an inner cross-validation (AUC) that is
grouped by patient, wrapped around the pipeline (``GridSearchCV``), so the outer validation
cases of a fold never reach a fitted step, the inner search included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_selection import SelectFromModel, SelectKBest, SelectorMixin, f_classif
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.validation import check_is_fitted, validate_data

from .radiomics_config import ModelConfig


class NearConstantFilter(SelectorMixin, BaseEstimator):
    """Drop features on which more than ``max_fraction`` of the cases share one value.

    A variance threshold would depend on each feature's unit; the share of the most common
    value does not (as caret's ``nearZeroVar``). Constant features are always dropped.
    X: (n_cases, n_features).
    """

    def __init__(self, max_fraction: float = 0.9):
        self.max_fraction = max_fraction

    def fit(self, X, y=None):
        X = validate_data(self, X, dtype=np.float64)
        n = X.shape[0]
        top_share = np.empty(X.shape[1])
        for j in range(X.shape[1]):
            _, counts = np.unique(X[:, j], return_counts=True)
            top_share[j] = counts.max() / n
        self.top_share_ = top_share
        self.support_ = (top_share <= self.max_fraction) & (np.ptp(X, axis=0) > 0)
        return self

    def _get_support_mask(self):
        check_is_fitted(self)
        return self.support_


class CorrelationFilter(SelectorMixin, BaseEstimator):
    """Keep a feature only if its |Pearson r| with every feature kept before it is <= threshold.

    Greedy in column order, so which member of a correlated group survives is deterministic.
    X: (n_cases, n_features), without constant columns.
    """

    def __init__(self, threshold: float = 0.9):
        self.threshold = threshold

    def fit(self, X, y=None):
        X = validate_data(self, X, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.abs(np.corrcoef(X, rowvar=False)).reshape(X.shape[1], X.shape[1])
        r = np.nan_to_num(r, nan=0.0)
        keep = np.zeros(X.shape[1], dtype=bool)
        dropped = np.zeros(X.shape[1], dtype=bool)
        for j in range(X.shape[1]):
            if dropped[j]:
                continue
            keep[j] = True
            later = np.arange(X.shape[1]) > j
            dropped |= later & (r[j] > self.threshold)
        self.support_ = keep
        return self

    def _get_support_mask(self):
        check_is_fitted(self)
        return self.support_


def _selector(cfg: ModelConfig):
    sel = cfg.selection
    if sel.method == "l1":
        l1 = LogisticRegression(l1_ratio=1.0, C=sel.l1_C, solver="liblinear",
                                class_weight=cfg.class_weight, max_iter=5000, random_state=cfg.seed)
        # threshold default for L1 models: |coef| > 1e-5, i.e. the features L1 kept
        return SelectFromModel(l1, max_features=sel.max_features)
    return SelectKBest(f_classif, k=sel.max_features)


def _candidates(cfg: ModelConfig) -> list[dict]:
    """GridSearchCV grid: one entry per classifier family named in the config."""
    common = {"class_weight": cfg.class_weight, "random_state": cfg.seed}
    families = {
        "logreg_l1": {"classify": [LogisticRegression(l1_ratio=1.0, solver="liblinear", max_iter=5000,
                                                      **common)],
                      "classify__C": list(cfg.C_grid)},
        "logreg_l2": {"classify": [LogisticRegression(l1_ratio=0.0, max_iter=5000, **common)],
                      "classify__C": list(cfg.C_grid)},
        "random_forest": {"classify": [RandomForestClassifier(n_estimators=cfg.rf_n_estimators,
                                                              n_jobs=1, **common)],
                          "classify__max_depth": list(cfg.rf_max_depth_grid)},
        # Platt-scaled probabilities, as SVC(probability=True) did before its deprecation
        "svm": {"classify": [CalibratedClassifierCV(SVC(kernel="rbf", **common), ensemble=False)],
                "classify__estimator__C": list(cfg.C_grid)},
    }
    return [families[name] for name in cfg.classifiers]


def build_pipeline(cfg: ModelConfig) -> Pipeline:
    """The unfitted pipeline (steps in the module docstring); ``classify`` is a placeholder."""
    return Pipeline([
        ("impute", SimpleImputer(strategy="median")),
        ("drop_constant", NearConstantFilter(cfg.near_constant_fraction)),
        ("scale", StandardScaler()),
        ("drop_correlated", CorrelationFilter(cfg.correlation_threshold)),
        ("select", _selector(cfg)),
        ("classify", LogisticRegression()),
    ])


def build_model(cfg: ModelConfig, pipeline: Pipeline | None = None) -> GridSearchCV:
    """Pipeline + inner patient-grouped CV choosing the classifier; ``fit(X, y, groups=...)``."""
    inner = StratifiedGroupKFold(n_splits=cfg.inner_folds, shuffle=True, random_state=cfg.seed)
    return GridSearchCV(pipeline if pipeline is not None else build_pipeline(cfg), _candidates(cfg),
                        scoring="roc_auc", cv=inner, n_jobs=cfg.n_jobs, refit=True, error_score=np.nan)


def classifier_name(estimator) -> str:
    if isinstance(estimator, LogisticRegression):
        return "logreg_l1" if np.isclose(estimator.l1_ratio or 0.0, 1.0) else "logreg_l2"
    if isinstance(estimator, RandomForestClassifier):
        return "random_forest"
    if isinstance(estimator, CalibratedClassifierCV) and isinstance(estimator.estimator, SVC):
        return "svm"
    return type(estimator).__name__


def describe_choice(search: GridSearchCV) -> dict:
    """The classifier and hyper-parameters the inner CV chose, and its inner AUC."""
    params = {k: v for k, v in search.best_params_.items() if k != "classify"}
    return {"classifier": classifier_name(search.best_params_["classify"]),
            "params": {k.split("__")[-1]: v for k, v in params.items()},
            "inner_cv_auc": float(search.best_score_)}


def selected_features(search: GridSearchCV) -> pd.DataFrame:
    """Features reaching the classifier with their weight.

    weight: coefficient on the standardised feature (logistic regression), impurity importance
    (random forest), empty for the RBF SVM (no per-feature weight).
    """
    best = search.best_estimator_
    names = best[:-1].get_feature_names_out()
    clf = best[-1]
    if hasattr(clf, "coef_"):
        weight, kind = np.ravel(clf.coef_), "coefficient (standardised feature)"
    elif hasattr(clf, "feature_importances_"):
        weight, kind = clf.feature_importances_, "impurity importance"
    else:
        weight, kind = np.full(len(names), np.nan), "none (RBF SVM)"
    return pd.DataFrame({"feature": names, "weight": weight, "weight_kind": kind})


@dataclass
class CVResult:
    """oof_prob: (n_train,) out-of-fold P(radiation necrosis); eval_prob / eval_std per cohort:
    the final model's probability and the spread (SD) of the fold models' probabilities."""

    oof_prob: np.ndarray
    eval_prob: dict[str, np.ndarray]
    eval_std: dict[str, np.ndarray]
    fold_choices: list[dict]
    final_choice: dict
    selected: pd.DataFrame


def cross_validate_and_predict(X_train: pd.DataFrame, y_train: np.ndarray, groups: np.ndarray,
                               folds: np.ndarray, X_eval: dict[str, pd.DataFrame], cfg: ModelConfig,
                               model: GridSearchCV | None = None) -> CVResult:
    """Out-of-fold predictions on the training cases, then a refit on all of them for ``X_eval``.

    X_train: (n_train, n_features); y_train: (n_train,) 0/1; groups: (n_train,) patient ids;
    folds: (n_train,) fold of each case (from split.csv). X_eval: cohort name -> (n, n_features)
    with the same columns. model: the unfitted estimator (default :func:`build_model`).
    """
    model = model if model is not None else build_model(cfg)
    y_train = np.asarray(y_train).astype(int)
    groups = np.asarray(groups)
    folds = np.asarray(folds)
    oof = np.full(len(X_train), np.nan)
    fold_probs: dict[str, list[np.ndarray]] = {name: [] for name in X_eval}
    fold_choices, fold_selected = [], []
    for k in np.unique(folds):
        val = folds == k
        fitted = clone(model).fit(X_train[~val], y_train[~val], groups=groups[~val])
        oof[val] = fitted.predict_proba(X_train[val])[:, 1]
        for name, X in X_eval.items():
            if len(X):
                fold_probs[name].append(fitted.predict_proba(X)[:, 1])
        fold_choices.append({"fold": int(k), **describe_choice(fitted)})
        fold_selected.append(set(selected_features(fitted)["feature"]))
    final = clone(model).fit(X_train, y_train, groups=groups)
    selected = selected_features(final)
    selected["n_folds_selected"] = [sum(f in s for s in fold_selected) for f in selected["feature"]]
    eval_prob = {name: (final.predict_proba(X)[:, 1] if len(X) else np.empty(0))
                 for name, X in X_eval.items()}
    eval_std = {name: (np.std(np.stack(p), axis=0) if p else np.empty(0))
                for name, p in fold_probs.items()}
    return CVResult(oof_prob=oof, eval_prob=eval_prob, eval_std=eval_std, fold_choices=fold_choices,
                    final_choice=describe_choice(final), selected=selected)

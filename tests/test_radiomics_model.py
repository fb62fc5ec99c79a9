"""The radiomics pipeline: its filters, leak-free cross-validation (a planted leak), and the
out-of-fold / refit predictions on feature tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.metrics import roc_auc_score

from rn_classifier.baselines.radiomics_config import ModelConfig, SelectionConfig
from rn_classifier.baselines.radiomics_model import (CorrelationFilter, NearConstantFilter,
                                                     build_model, build_pipeline,
                                                     cross_validate_and_predict)


def _table(n=60, p=40, informative=2, seed=0):
    """Features (n, p) whose first ``informative`` columns shift with the label; 2 cases/patient."""
    rng = np.random.default_rng(seed)
    y = np.tile([0, 1], n // 2)
    X = rng.normal(size=(n, p))
    X[:, :informative] += 1.5 * y[:, None]
    groups = np.repeat(np.arange(n // 2), 2)  # a patient's two lesions share the label pattern
    folds = groups % 4
    cols = [f"original_firstorder_F{j}" for j in range(p)]
    return pd.DataFrame(X, columns=cols, index=[f"c{i}" for i in range(n)]), y, groups, folds


FAST_MODEL = ModelConfig(classifiers=["logreg_l2"], C_grid=[0.1, 1.0], inner_folds=3)


def test_near_constant_filter_uses_share_of_one_value():
    X = np.column_stack([np.zeros(10), np.r_[np.zeros(9), 1.0], np.r_[np.zeros(8), 1.0, 2.0],
                         np.arange(10.0)])
    keep = NearConstantFilter(max_fraction=0.85).fit(X).get_support()
    assert keep.tolist() == [False, False, True, True]
    # scale does not matter
    assert NearConstantFilter(0.85).fit(X * 1e-9).get_support().tolist() == keep.tolist()


def test_correlation_filter_keeps_the_first_of_a_correlated_group():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=50), rng.normal(size=50)
    X = np.column_stack([a, b, 2 * a + 0.01 * rng.normal(size=50), -b, a + b])
    keep = CorrelationFilter(threshold=0.9).fit(X).get_support()
    assert keep.tolist() == [True, True, False, False, True]


class LabelMemorizer(TransformerMixin, BaseEstimator):
    """A planted leak in the selection step: outputs the training label of any row it was
    fitted on, and 0.5 for rows it has never seen."""

    def fit(self, X, y):
        self.seen_ = {np.round(row, 8).tobytes(): float(t) for row, t in zip(np.asarray(X), y)}
        return self

    def transform(self, X):
        return np.array([[self.seen_.get(np.round(row, 8).tobytes(), 0.5)] for row in np.asarray(X)])

    def get_feature_names_out(self, input_features=None):
        return np.array(["memorised_label"], dtype=object)


def test_no_validation_case_reaches_a_fitted_step():
    X, _, groups, folds = _table(p=10, informative=0)  # pure noise: nothing to learn honestly
    y = np.random.default_rng(3).permutation(np.tile([0, 1], len(X) // 2))
    pipeline = build_pipeline(FAST_MODEL).set_params(select=LabelMemorizer())
    model = build_model(FAST_MODEL, pipeline=pipeline)
    result = cross_validate_and_predict(X, y, groups, folds, {"test": X.iloc[:0]}, FAST_MODEL, model=model)

    # the leak works on rows the memoriser was fitted on ...
    final = model.fit(X, y, groups=groups)
    assert roc_auc_score(y, final.predict_proba(X)[:, 1]) == 1.0
    # ... but out-of-fold rows never met it: every validation case got the "unseen" value
    assert roc_auc_score(y, result.oof_prob) < 0.75
    for k in np.unique(folds):
        in_fold = result.oof_prob[folds == k]
        assert np.ptp(in_fold) < 1e-9, "a validation case reached a fitted step of its fold"


@pytest.mark.parametrize("method, classifiers", [
    ("l1", ["logreg_l1", "logreg_l2", "random_forest", "svm"]), ("univariate", ["logreg_l2"])])
def test_cross_validation_predicts_all_cohorts(method, classifiers):
    X, y, groups, folds = _table()
    X_test, y_test, _, _ = _table(n=20, seed=5)
    cfg = ModelConfig(classifiers=classifiers, C_grid=[0.1, 1.0], rf_n_estimators=30,
                      rf_max_depth_grid=[3], selection=SelectionConfig(method=method, max_features=5))
    result = cross_validate_and_predict(X, y, groups, folds, {"internal_test": X_test}, cfg)
    assert result.oof_prob.shape == (60,) and np.isfinite(result.oof_prob).all()
    assert roc_auc_score(y, result.oof_prob) > 0.75
    assert roc_auc_score(y_test, result.eval_prob["internal_test"]) > 0.75
    assert result.eval_std["internal_test"].shape == (20,)
    assert (result.eval_std["internal_test"] >= 0).all()
    assert [c["fold"] for c in result.fold_choices] == [0, 1, 2, 3]
    assert result.final_choice["classifier"] in cfg.classifiers
    selected = result.selected
    assert 1 <= len(selected) <= 5
    assert selected["n_folds_selected"].between(0, 4).all()
    # an informative feature survives selection in the final model and in the fold models
    informative = selected[selected["feature"].isin(["original_firstorder_F0", "original_firstorder_F1"])]
    assert len(informative) >= 1 and informative["n_folds_selected"].max() >= 3

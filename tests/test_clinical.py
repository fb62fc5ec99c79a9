"""Clinical preprocessing and the clinical-only logistic model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from rn_classifier.errors import InputError
from rn_classifier.finetune.clinical import (ClinicalTransformJSON, clinical_frame, fit_preprocessor,
                                             preprocessor_to_json)
from rn_classifier.finetune.clinical_model import (LogisticModelJSON, fit_logistic, logistic_to_json,
                                                   predict_logistic)

SPEC = {"age": "numeric", "sex": "categorical", "primary": "categorical", "gpa": "numeric"}


def _frame(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    df = pd.DataFrame({"age": rng.normal(60, 10, n) + 6 * y,
                       "sex": rng.choice(["F", "M"], n),
                       "primary": rng.choice(["1", "2", "4"], n),
                       "gpa": rng.uniform(1, 4, n)})
    df.loc[[2, 7], "age"] = np.nan
    df.loc[[3], "sex"] = None
    return df, y


def test_json_transform_equals_sklearn_with_missing_and_unknown_categories():
    train, _ = _frame(40, 0)
    pre = fit_preprocessor(clinical_frame(train, SPEC), SPEC)
    new = pd.DataFrame({"age": [np.nan, 71.0, 40.0], "sex": ["F", None, "X"],
                        "primary": ["12", "1", None], "gpa": [2.5, np.nan, 3.0]})
    payload = json.loads(json.dumps(preprocessor_to_json(pre, SPEC)))  # through real JSON text
    ours = ClinicalTransformJSON(payload).transform(new)
    ref = pre.transform(clinical_frame(new, SPEC))
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)
    # an unseen category ("X" sex, "12" primary) encodes as all zeros in its one-hot block
    names = payload["feature_names"]
    sex_cols = [i for i, n in enumerate(names) if n.startswith("categorical__sex_")]
    assert ours[2, sex_cols].sum() == 0
    # a missing numeric value is imputed with the training median, then standardised
    num = payload["numeric"]
    expected_age = (np.nanmedian(train["age"]) - num["mean"][0]) / num["scale"][0]
    assert ours[0, names.index("numeric__age")] == pytest.approx(expected_age)


def test_preprocessor_statistics_come_from_the_fitted_cases_only():
    train, _ = _frame(30, 1)
    held_out = pd.DataFrame({"age": [500.0] * 10, "sex": ["M"] * 10, "primary": ["9"] * 10,
                             "gpa": [100.0] * 10})
    pre = fit_preprocessor(clinical_frame(train, SPEC), SPEC)
    num = preprocessor_to_json(pre, SPEC)["numeric"]
    assert num["mean"][0] == pytest.approx(train["age"].fillna(train["age"].median()).mean())
    assert "9" not in preprocessor_to_json(pre, SPEC)["categorical"]["categories"][1]
    both = fit_preprocessor(clinical_frame(pd.concat([train, held_out]), SPEC), SPEC)
    assert preprocessor_to_json(both, SPEC)["numeric"]["mean"][0] > 100  # the check can fail


def test_logistic_json_reproduces_sklearn_probabilities_and_learns_signal():
    train, y = _frame(80, 2)
    pipe = fit_logistic(train, y, SPEC, C=1.0)
    test, y_test = _frame(60, 3)
    p_sklearn = predict_logistic(pipe, test, SPEC)
    p_json = LogisticModelJSON(json.loads(json.dumps(logistic_to_json(pipe, SPEC)))).predict_proba(test)
    np.testing.assert_allclose(p_json, p_sklearn, rtol=1e-10)
    from sklearn.metrics import roc_auc_score
    assert roc_auc_score(y_test, p_sklearn) > 0.6  # age carries the label in this toy cohort


def test_stronger_regularisation_shrinks_coefficients():
    train, y = _frame(80, 4)
    weak = np.abs(logistic_to_json(fit_logistic(train, y, SPEC, C=10.0), SPEC)["coef"]).sum()
    strong = np.abs(logistic_to_json(fit_logistic(train, y, SPEC, C=0.01), SPEC)["coef"]).sum()
    assert strong < weak


def test_one_class_and_missing_columns_are_refused():
    train, y = _frame(20, 5)
    with pytest.raises(InputError, match=r"0 radiation necrosis \(1\) and 20 progression"):
        fit_logistic(train, np.zeros_like(y), SPEC)
    with pytest.raises(InputError, match=r"\['steroids'\]"):
        clinical_frame(train, {**SPEC, "steroids": "categorical"})
    bad = train.assign(age=["old"] * len(train))
    with pytest.raises(InputError, match="'age' is numeric"):
        clinical_frame(bad, SPEC)

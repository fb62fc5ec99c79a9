"""Combining the image model with clinical data, two ways.

Late fusion (stacking, Wolpert 1992): a logistic model on ``[image logit, clinical features]``.
It is fitted on *out-of-fold* image logits only: a training case's image logit must come from
the fold model that did not train on it. For CV fold *k* the stacker is fitted on the training
cases of the other folds (their out-of-fold logits, clinical preprocessing fitted on those cases
only) and predicts fold *k* (out-of-fold) and, with fold model *k*'s image logits, the internal
test and external cohorts. :func:`check_out_of_fold` refuses any table in which a training case
carries a prediction from a model trained on it.

Intermediate fusion: :class:`~rn_classifier.models.classifiers.IntermediateFusionClassifier`
(the network, with the other classifiers, so that ``predict`` loads it without training code) concatenates the encoder's pooled
embedding with an MLP embedding of the clinical vector, trained end to end; optionally a
clinical query token attends over the image tokens (cross-attention, as in the authors' earlier
glioblastoma work) and its output is concatenated too.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..errors import InputError
from .clinical import clinical_frame
from .clinical_model import fit_logistic

IMAGE_LOGIT = "image_logit"


# -- late fusion ------------------------------------------------------------------------------

def check_out_of_fold(image_preds: pd.DataFrame, split: pd.DataFrame) -> None:
    """Refuse image predictions that are not out-of-fold for the training part of ``split``.

    image_preds: per-fold-model predictions ``case_id, cohort, fold, y_logit``: for a training
        case one row, cohort ``oof``, ``fold`` = the fold model that predicted it; for internal
        test / external cases one row per fold model.
    A training case must be predicted by exactly one model, the one of its own validation fold
    (that model never saw it). Anything else (a prediction from another fold's model, a row of
    another cohort, a missing or repeated case) is an in-fold prediction or a gap: error.
    """
    train = split[split["part"] == "train"].set_index("case_id")["fold"].astype(int)
    problems = []
    rows = image_preds[image_preds["case_id"].isin(train.index)]
    not_oof = rows[rows["cohort"] != "oof"]
    if len(not_oof):
        problems.append(f"{len(not_oof)} prediction(s) for training cases are not out-of-fold "
                        f"(cohort {sorted(not_oof['cohort'].unique())}), e.g. case "
                        f"{not_oof['case_id'].iloc[0]}")
    oof = rows[rows["cohort"] == "oof"]
    wrong_model = oof[oof["fold"].astype(int).to_numpy() != train.reindex(oof["case_id"]).to_numpy()]
    if len(wrong_model):
        r = wrong_model.iloc[0]
        problems.append(f"{len(wrong_model)} training case(s) were predicted by a fold model that "
                        f"trained on them, e.g. case {r['case_id']} (validation fold "
                        f"{train[r['case_id']]}) predicted by fold model {int(r['fold'])}")
    counts = oof["case_id"].value_counts()
    repeated = counts[counts > 1].index.tolist()
    missing = sorted(set(train.index) - set(oof["case_id"]))
    if repeated:
        problems.append(f"training case(s) {repeated[:10]} have more than one out-of-fold prediction")
    if missing:
        problems.append(f"training case(s) {missing[:10]} have no out-of-fold image prediction")
    stray = image_preds[(image_preds["cohort"] == "oof") & ~image_preds["case_id"].isin(train.index)]
    if len(stray):
        problems.append(f"out-of-fold rows for case(s) outside the training part: "
                        f"{stray['case_id'].unique()[:10].tolist()}")
    if problems:
        raise InputError("late fusion must be fitted on out-of-fold image predictions only; "
                         "refused: " + "; ".join(problems))


def late_fusion_fold(k: int, image_preds: pd.DataFrame, cases: pd.DataFrame, split: pd.DataFrame,
                     spec: Mapping[str, str], C: float = 1.0, class_weight: str | None = "balanced",
                     max_iter: int = 5000):
    """Fit the stacker of CV fold ``k`` and predict with it.

    image_preds: as in :func:`check_out_of_fold` (checked here again).
    cases: one row per case (``case_id`` index) with ``label``, ``part`` (train | internal_test |
        external) and the clinical columns.
    Returns ``(pipeline, stack_spec, predictions)``; predictions: ``case_id, cohort, fold,
    y_logit, y_prob`` for fold ``k``'s validation cases (``oof``) and every internal test / external case
    (as predicted with fold model ``k``'s image logit).
    """
    check_out_of_fold(image_preds, split)
    stack_spec = {IMAGE_LOGIT: "numeric", **dict(spec)}
    if IMAGE_LOGIT in spec:
        raise InputError(f"clinical column name {IMAGE_LOGIT!r} is reserved for late fusion")
    train_ids = split.loc[(split["part"] == "train") & (split["fold"] != k), "case_id"]
    oof = image_preds[image_preds["cohort"] == "oof"].set_index("case_id")
    fit_frame = cases.loc[train_ids].assign(**{IMAGE_LOGIT: oof.loc[train_ids, "y_logit"].to_numpy()})
    pipe = fit_logistic(fit_frame, fit_frame["label"].astype(int), stack_spec, C=C,
                        class_weight=class_weight, max_iter=max_iter)
    # fold k's out-of-fold rows and fold model k's rows of the held-out cohorts
    wanted = image_preds[image_preds["fold"].astype(int) == k]
    held_out = cases.index[cases["part"].isin(["internal_test", "external"])]
    missing = sorted(set(held_out) - set(wanted.loc[wanted["cohort"] != "oof", "case_id"]))
    if missing:
        raise InputError(f"the image predictions of fold model {k} lack internal test / external "
                         f"case(s) {missing[:10]}")
    frame = cases.loc[wanted["case_id"]].assign(**{IMAGE_LOGIT: wanted["y_logit"].to_numpy()})
    out = wanted[["case_id", "cohort", "fold"]].reset_index(drop=True)
    out["y_logit"] = pipe.decision_function(clinical_frame(frame, stack_spec))
    out["y_prob"] = 1.0 / (1.0 + np.exp(-out["y_logit"].to_numpy()))
    return pipe, stack_spec, out

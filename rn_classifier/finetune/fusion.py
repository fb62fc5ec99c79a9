"""Combining the image model with clinical data, two ways.

Late fusion (stacking, Wolpert 1992): a logistic model on ``[image logit, clinical features]``.
The image logit (standardised on the stacker's training cases) is fitted without the L2 penalty
that shrinks the clinical coefficients, and how much clinical data enters (its L2 strength, or
none: the image logit alone) is chosen per fold by patient-grouped inner cross-validation on the
stacker's own training cases. So weak clinical columns cannot pull the fused model below its
image model: when they do not help inside the training folds, the stacker is a monotone map of
the image logit. It is fitted on *out-of-fold* image logits only: a training case's image logit must come from
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

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline

from ..errors import InputError
from .clinical import clinical_frame, fit_preprocessor

IMAGE_LOGIT = "image_logit"
IMAGE_FEATURE = "numeric__" + IMAGE_LOGIT   # the image logit's column after preprocessing
# L2 strengths (scikit-learn C) of the clinical coefficients that the inner CV tries, besides
# "no clinical data"; the small end is nearly the image logit alone.
STACKER_CS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
# The L2 penalty is on coef²: a column multiplied by s before fitting has its coefficient
# penalised s² times less, so at s = 1000 the image logit is in effect unpenalised; the
# coefficient is multiplied back after the fit, and the pipeline reads the unscaled column.
UNPENALISED_SCALE = 1000.0
INNER_FOLDS = 5


# -- late fusion ------------------------------------------------------------------------------

def fold_model_scales(image_preds: pd.DataFrame) -> dict[int, tuple[float, float]]:
    """Per fold model, the mean and standard deviation of its logits on its own validation fold
    (label-free). Fold models differ in logit scale (a few dozen steps each, another seed, other
    cases), so the stacker reads each model's logit on one scale: fitted on the other folds'
    standardised logits, applied to fold model ``k``'s, and the pooled out-of-fold ranking is not
    set by which fold model happened to give larger logits."""
    oof = image_preds[image_preds["cohort"] == "oof"]
    scales = {}
    for fold, rows in oof.groupby(oof["fold"].astype(int)):
        sd = float(rows["y_logit"].std(ddof=0))
        scales[int(fold)] = (float(rows["y_logit"].mean()), sd if sd > 0 else 1.0)
    return scales


def standardise_image_logits(image_preds: pd.DataFrame, scales: Mapping[int, tuple[float, float]]) -> pd.DataFrame:
    """``y_logit`` of every row standardised with its fold model's :func:`fold_model_scales`."""
    folds = image_preds["fold"].astype(int)
    mean = folds.map({k: m for k, (m, _) in scales.items()})
    sd = folds.map({k: s for k, (_, s) in scales.items()})
    return image_preds.assign(y_logit=(image_preds["y_logit"] - mean) / sd)


def _fit_pipeline(fit_frame: pd.DataFrame, stack_spec: Mapping[str, str], class_weight: str | None,
                  max_iter: int, Cs: Sequence[float]) -> Pipeline:
    """Preprocessing + the stacker whose clinical strength the inner CV chose, fitted on
    ``fit_frame`` (the stacker's training cases)."""
    y = fit_frame["label"].astype(int).to_numpy()
    if len(np.unique(y)) < 2:
        raise InputError(f"the late-fusion stacker needs both classes in its training cases, got "
                         f"{int(y.sum())} radiation necrosis (1) and {int((y == 0).sum())} progression (0)")
    frame = clinical_frame(fit_frame, stack_spec)
    preprocess = fit_preprocessor(frame, stack_spec)
    features = np.asarray(preprocess.transform(frame), dtype=float)
    image_column = list(preprocess.get_feature_names_out()).index(IMAGE_FEATURE)
    C, inner = choose_stacker_C(features, y, fit_frame["patient_id"].astype(str).to_numpy(),
                                image_column, class_weight, max_iter, Cs)
    pipe = Pipeline([("preprocess", preprocess),
                     ("logistic", _fit_stacker(features, y, image_column, C, class_weight, max_iter))])
    pipe.stacker_choice = {"clinical_C": C, "inner_cv_auc": inner}
    return pipe


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


def _fit_stacker(features: np.ndarray, y: np.ndarray, image_column: int, C: float | None,
                 class_weight: str | None, max_iter: int) -> LogisticRegression:
    """The stacker's logistic regression on preprocessed ``features``: the image column
    unpenalised, the others with L2 strength ``C``; ``C=None``: the image column alone (the
    clinical coefficients exactly zero)."""
    x = np.zeros_like(features) if C is None else features.copy()
    x[:, image_column] = features[:, image_column] * UNPENALISED_SCALE
    model = LogisticRegression(C=1.0 if C is None else C, class_weight=class_weight, max_iter=max_iter)
    model.fit(x, y)
    model.coef_[:, image_column] *= UNPENALISED_SCALE
    return model


def choose_stacker_C(features: np.ndarray, y: np.ndarray, groups: np.ndarray, image_column: int,
                     class_weight: str | None, max_iter: int,
                     Cs: Sequence[float] = STACKER_CS) -> tuple[float | None, dict]:
    """The clinical L2 strength (``None``: the image logit alone) by patient-grouped inner CV on
    the stacker's training cases, with the one-standard-error rule (Breiman et al. 1984): the
    least clinical data whose mean inner-fold AUC is within one standard error of the best. On
    a few dozen cases a noise column often wins an inner CV by chance; the rule asks it to win by
    more than the folds disagree. Returns the choice and each candidate's mean inner AUC."""
    n_splits = min(INNER_FOLDS, len(np.unique(groups)))
    folds = [(fit, held) for fit, held in GroupKFold(n_splits).split(features, y, groups)
             if len(np.unique(y[fit])) == 2 and len(np.unique(y[held])) == 2]
    if len(folds) < 2:
        return None, {}    # too few cases to compare: the image logit alone
    candidates = (None, *sorted(Cs))   # least clinical data first
    aucs = {}
    for C in candidates:
        aucs[C] = np.array([roc_auc_score(y[held], _fit_stacker(features[fit], y[fit], image_column, C,
                                                                class_weight, max_iter)
                                          .decision_function(features[held]))
                            for fit, held in folds])
    best = max(candidates, key=lambda C: aucs[C].mean())
    bar = aucs[best].mean() - aucs[best].std(ddof=1) / np.sqrt(len(folds))
    chosen = next(C for C in candidates if aucs[C].mean() >= bar)
    return chosen, {("image only" if C is None else f"C={C:g}"): round(float(a.mean()), 4)
                    for C, a in aucs.items()}


def late_fusion_fold(k: int, image_preds: pd.DataFrame, cases: pd.DataFrame, split: pd.DataFrame,
                     spec: Mapping[str, str], class_weight: str | None = "balanced",
                     max_iter: int = 5000, Cs: Sequence[float] = STACKER_CS):
    """Fit the stacker of CV fold ``k`` and predict with it.

    image_preds: as in :func:`check_out_of_fold` (checked here again).
    cases: one row per case (``case_id`` index) with ``label``, ``part`` (train | internal_test |
        external) and the clinical columns.
    Cs: the clinical L2 strengths the inner CV tries besides the image logit alone
        (:func:`choose_stacker_C`, grouped by ``cases["patient_id"]``).
    Returns ``(pipeline, stack_spec, predictions)``; predictions: ``case_id, cohort, fold,
    y_logit, y_prob`` for fold ``k``'s validation cases (``oof``) and every internal test / external case
    (as predicted with fold model ``k``'s image logit). ``pipeline.stacker_choice`` records the
    chosen strength and the inner AUC of every candidate; ``pipeline.image_logit_scale`` the
    standardisation of fold model ``k``'s logit that the stacker reads.
    """
    check_out_of_fold(image_preds, split)
    scales = fold_model_scales(image_preds)
    image_preds = standardise_image_logits(image_preds, scales)
    stack_spec = {IMAGE_LOGIT: "numeric", **dict(spec)}
    if IMAGE_LOGIT in spec:
        raise InputError(f"clinical column name {IMAGE_LOGIT!r} is reserved for late fusion")
    train_ids = split.loc[(split["part"] == "train") & (split["fold"] != k), "case_id"]
    oof = image_preds[image_preds["cohort"] == "oof"].set_index("case_id")
    fit_frame = cases.loc[train_ids].assign(**{IMAGE_LOGIT: oof.loc[train_ids, "y_logit"].to_numpy()})
    pipe = _fit_pipeline(fit_frame, stack_spec, class_weight, max_iter, Cs)
    pipe.image_logit_scale = {"mean": scales[k][0], "sd": scales[k][1]}
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
    out["y_prob"] = expit(out["y_logit"].to_numpy())
    return pipe, stack_spec, out

"""The classifier head fitted in closed form: an L2 logistic regression on the frozen encoder's
embeddings of the fold's training cases (``train.head_init: logistic``).

Kumar et al. (2022, LP-FT) fit the linear probe of a pretrained encoder by L-BFGS logistic
regression, not by SGD, and then fine-tune from it. On this project's synthetic cohorts the
difference is large: a logistic read-out of frozen features reached 0.83 AUC on the internal
training cases (``probe-encoder``) where 12 epochs of AdamW on the same frozen head reached 0.67
out of fold (benchmarks/RESULTS.md, 2026-12-04). The fit here is the probe's model: features
standardised, class-balanced, C chosen by patient-grouped, class-stratified CV on the fold's
training cases only
(``train.head_scoring``: AUC, or the log-loss, which also judges the logit's scale), then the scaler folded into the head so the network computes the same logit:

    logit = coef · (z - mean) / sd + intercept  =  (coef / sd) · z + (intercept - coef · mean / sd)

With ``train.epochs: 0`` that is the fold's model (a linear probe); with epochs it is the head
fine-tuning starts from (with ``train.linear_probe_epochs`` the encoder stays frozen a while
longer). Embeddings are of the centre crops fine-tuning evaluates on, with the encoder in eval
mode (no drop path, no augmentation).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.preprocessing import StandardScaler

from ..errors import InputError

CS = np.logspace(-3, 2, 11)   # the probe's L2 strengths (inverse), chosen by inner CV
MAX_INNER_FOLDS = 5
SCORINGS = ("roc_auc", "neg_log_loss")   # = finetune.config.HEAD_SCORINGS (kept here: the sklearn names)


@torch.no_grad()
def frozen_embeddings(network: torch.nn.Module, loader) -> np.ndarray:
    """``(N, D)`` pooled embeddings of every batch of ``loader`` (``batch["input"]``), in order."""
    was_training = network.training
    network.eval()
    try:
        parts = [network.embed(batch["input"])[1].float() for batch in loader]
    finally:
        network.train(was_training)
    return torch.cat(parts).cpu().numpy()


def fit_logistic_head(network: torch.nn.Module, loader, labels: np.ndarray, patients: np.ndarray,
                      scoring: str = "roc_auc", max_iter: int = 5000) -> dict:
    """Set ``network.head`` (a ``Linear(D, 1)``) to the logistic regression of ``labels`` on the
    embeddings of ``loader``'s cases, in place; returns ``{"C": chosen C, "inner_folds": k}``.

    ``scoring`` ranks the candidate C on the inner folds. ``roc_auc`` reads the order of the logits
    only, so among Cs of equal AUC it may keep one whose logits are tens of units wide; the fold
    models of one CV then differ in scale and the widest dominates their ensemble.
    ``neg_log_loss`` (a proper scoring rule) also penalises over-confident logits."""
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
    head = getattr(network, "head", None)
    if not isinstance(head, torch.nn.Linear) or head.out_features != 1:
        raise InputError("train.head_init=logistic needs the image classifier's linear head "
                         "(fusion.kind none); intermediate fusion learns its head with the clinical branch")
    labels, patients = np.asarray(labels, int), np.asarray(patients).astype(str)
    n_groups = len(np.unique(patients))
    if n_groups < 2 or len(np.unique(labels)) < 2:
        raise InputError(f"train.head_init=logistic: the fold's {len(labels)} training cases of {n_groups} "
                         "patient(s) cannot fit a logistic head (two patients and both classes needed)")
    features = frozen_embeddings(network, loader)
    scaler = StandardScaler().fit(features)
    # patient-grouped and class-stratified, as probe-encoder's CV: every inner fold holds both classes
    n_folds = max(2, min(MAX_INNER_FOLDS, n_groups, int(np.bincount(labels).min())))
    splitter = StratifiedGroupKFold(n_folds, shuffle=True, random_state=0)
    folds = list(splitter.split(features, labels, groups=patients))
    model = LogisticRegressionCV(Cs=CS, cv=folds, scoring=scoring, class_weight="balanced",
                                 max_iter=max_iter, l1_ratios=(0.0,), use_legacy_attributes=False)
    model.fit(scaler.transform(features), labels)
    coef = model.coef_[0] / scaler.scale_
    bias = float(model.intercept_[0] - coef @ scaler.mean_)
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(coef, dtype=head.weight.dtype).reshape(1, -1))
        head.bias.fill_(bias)
    return {"C": float(np.atleast_1d(model.C_)[0]), "inner_folds": len(folds)}

"""Label-efficiency monitor: how well the current encoder's embeddings separate the classes.

Self-supervised losses say little about downstream use, so DINO runs are watched by fitting a
small classifier on frozen embeddings (DINO's weighted k-NN / linear evaluation). Every
``monitor.every_n_epochs`` epochs this callback

1. embeds the labelled TRAINING cases of the internal cohort (``part == "train"`` in the split;
   the internal test and external cases are never touched) with the exported encoder (DINO
   teacher / MAE encoder): centre crop of the lesion-centred crop, the T1CE channel into the
   encoder, its tokens pooled as ``monitor.pool`` says (``mask``, the default: mask-weighted
   mean of the patch tokens, as the fine-tuning configs pool; ``cls``: the class token, which
   MAE never trains; ``avg``: mean of the patches);
2. fits a k-NN (cosine, distance-weighted) or an L2 logistic regression on all folds but one of
   the split's patient-grouped CV folds and predicts the held-out fold;
3. logs the ROC AUC of the out-of-fold probabilities as ``monitor/<method>_auc``.

The labels serve this logged number only; they never reach the training loss.
"""

from __future__ import annotations

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler

from ..errors import InputError
from ..models.classifiers import MASK_CHANNEL
from .datamodule import LabelledCases
from .probe import centre_crops, pooled_tokens


def _classifier(method: str, k: int, n_train: int):
    if method == "knn":
        # l2-normalised embeddings + euclidean distance ranks neighbours as cosine similarity does
        return make_pipeline(Normalizer(), KNeighborsClassifier(n_neighbors=min(k, n_train),
                                                                weights="distance"))
    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))


def check_cv_classes(labels: np.ndarray, folds: np.ndarray) -> None:
    """Both classes overall and outside every fold, at least 2 folds (else ``InputError``)."""
    y, folds = np.asarray(labels).astype(int), np.asarray(folds)
    if len(y) == 0 or len(np.unique(y)) < 2:
        raise InputError(f"the label-efficiency monitor needs labelled training cases of both classes, "
                         f"found {len(y)} case(s) with labels {sorted(set(y.tolist()))}")
    if len(np.unique(folds)) < 2:
        raise InputError("the label-efficiency monitor needs at least 2 CV folds in the split")
    for fold in np.unique(folds):
        if len(np.unique(y[folds != fold])) < 2:
            raise InputError(f"the label-efficiency monitor cannot fit a classifier without fold {fold}: "
                             "the other folds hold one class only")


def cross_validated_auc(embeddings: np.ndarray, labels: np.ndarray, folds: np.ndarray,
                        method: str = "knn", k: int = 20) -> float:
    """ROC AUC of out-of-fold probabilities over the given (patient-grouped) folds.

    ``embeddings: (N, D)``; ``labels: (N,)`` 1 = radiation necrosis; ``folds: (N,)`` fold ids.
    Raises ``InputError`` when the AUC would be undefined (see :func:`check_cv_classes`).
    """
    y = np.asarray(labels).astype(int)
    check_cv_classes(y, folds)
    prob = np.empty(len(y), dtype=float)
    for fold in np.unique(folds):
        test = folds == fold
        train = ~test
        clf = _classifier(method, k, int(train.sum())).fit(embeddings[train], y[train])
        prob[test] = clf.predict_proba(embeddings[test])[:, list(clf.classes_).index(1)]
    return float(roc_auc_score(y, prob))


@torch.no_grad()
def embed_cases(encoder: torch.nn.Module, cases: LabelledCases, crop_size: int, batch_size: int,
                device: torch.device, pool: str = "mask") -> np.ndarray:
    """Pooled embeddings ``(N, D)`` of the cases' centre crops (float32, in eval mode)."""
    was_training = encoder.training
    encoder.eval()
    out = []
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    try:
        for start in range(0, len(cases.rows), batch_size):
            rows = cases.rows[start:start + batch_size]
            x = centre_crops([cases.cache[int(r)] for r in rows], (crop_size,) * 3).to(device)
            with autocast:
                out.append(pooled_tokens(encoder, x, (pool,))[pool].float().cpu())
    finally:
        encoder.train(was_training)
    return torch.cat(out).numpy()


class LabelEfficiencyMonitor(Callback):
    """Log the cross-validated AUC of frozen embeddings every ``every_n_epochs`` epochs.

    Every rank computes the same number (same cases, same weights), so no rank waits for another.
    """

    def __init__(self, cases: LabelledCases, crop_size: int, every_n_epochs: int,
                 method: str = "knn", k: int = 20, batch_size: int = 16, pool: str = "mask"):
        self.cases, self.crop_size, self.every, self.pool = cases, crop_size, every_n_epochs, pool
        if pool == "mask" and len(cases.cache.channels) <= MASK_CHANNEL:
            raise InputError(f"{cases.cache.folder} holds channels {cases.cache.channels}: monitor.pool: mask "
                             "needs the lesion mask as the second channel; use monitor.pool: avg")
        self.method, self.k, self.batch_size = method, k, batch_size
        try:
            check_cv_classes(cases.labels, cases.folds)
        except InputError as exc:
            raise InputError(f"{exc}; set monitor.every_n_epochs: 0 to switch the monitor off") from None
        self.history: list[tuple[int, float]] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.every <= 0 or (trainer.current_epoch + 1) % self.every:
            return
        encoder = pl_module.export_encoder()
        emb = embed_cases(encoder, self.cases, self.crop_size, self.batch_size, pl_module.device,
                          self.pool)
        auc = cross_validated_auc(emb, self.cases.labels, self.cases.folds, self.method, self.k)
        self.history.append((trainer.current_epoch, auc))
        pl_module.log(f"monitor/{self.method}_auc", auc, on_epoch=True, prog_bar=True, rank_zero_only=True)

"""The cross-validation fold loop and the per-fold trainers of each model kind.

For fold *k* of the split a trainer fits a model on the training cases of the other folds and
predicts: fold *k*'s cases (cohort ``oof``), every internal test case and every external case.
Each fold writes ``RUN_DIR/folds/fold_k/``:

``predictions.csv``  ``case_id, cohort, fold, y_logit, y_prob`` (``fold`` = k on every row)
``fold.json``        the files holding the fold's model and what was selected (e.g. best epoch)
``logs/``            training curves (``metrics.csv`` and TensorBoard events)
model files          ``model.safetensors`` + ``model.json`` (image models),
                     ``clinical_model.json`` / ``late_fusion.json`` (logistic models, JSON),
                     ``clinical_preprocessor.json`` (intermediate fusion)

``predictions.csv`` is written last: a fold whose predictions and model files exist is complete
and a rerun skips it (resume at fold granularity). :func:`ensemble` turns the fold tables into
the seam-2 table: ``oof`` rows as they are, internal test and external rows as the mean
probability over the fold models with their standard deviation as ``y_std``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit

from .. import atomic
from ..errors import InputError
from ..family import ModelFamily, family_of
from .clinical import clinical_frame, fit_preprocessor, preprocessor_to_json
from .clinical_model import fit_logistic, save_logistic
from .config import FinetuneConfig
from .fusion import late_fusion_fold

FOLD_PREDICTIONS, FOLD_META = "predictions.csv", "fold.json"
FOLD_COLUMNS = ("case_id", "cohort", "fold", "y_logit", "y_prob")


@dataclass
class FoldResult:
    predictions: pd.DataFrame          # FOLD_COLUMNS
    files: list[str]                   # model files written in the fold folder
    info: dict = field(default_factory=dict)


FoldTrainer = Callable[[int, Path], FoldResult]


def fold_dir(out: Path, k: int) -> Path:
    return Path(out) / "folds" / f"fold_{k}"


def read_fold(folder: Path) -> pd.DataFrame | None:
    """The fold's prediction table if the fold is complete, else None."""
    meta, preds = folder / FOLD_META, folder / FOLD_PREDICTIONS
    if not (meta.is_file() and preds.is_file()):
        return None
    files = json.loads(meta.read_text()).get("files", [])
    if not all((folder / f).is_file() for f in files):
        return None
    return pd.read_csv(preds, dtype={"case_id": str, "cohort": str})


def run_folds(out: Path, n_folds: int, trainer: FoldTrainer, folds: Sequence[int] | None = None,
              echo: Callable[[str], None] = print) -> dict[int, pd.DataFrame]:
    """Train (or reuse) each fold; returns ``{k: fold predictions}`` for the folds run."""
    todo = list(range(n_folds)) if folds is None else list(folds)
    bad = [k for k in todo if not 0 <= k < n_folds]
    if bad:
        raise InputError(f"fold(s) {bad} do not exist; the split has folds 0..{n_folds - 1}")
    tables = {}
    for k in todo:
        folder = fold_dir(out, k)
        done = read_fold(folder)
        if done is not None:
            echo(f"fold {k}: complete in {folder}, reused")
            tables[k] = done
            continue
        if folder.exists():  # an interrupted attempt: start the fold afresh
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        result = trainer(k, folder)
        table = result.predictions[list(FOLD_COLUMNS)].copy()
        atomic.write_json(folder / FOLD_META, {"fold": k, "files": result.files, **result.info})
        atomic.write_csv(folder / FOLD_PREDICTIONS, table)  # last: marks the fold complete
        tables[k] = table
    return tables


def fold_rows(k: int, cohorts: dict[str, Sequence[str]], y_logit: dict[str, np.ndarray]) -> pd.DataFrame:
    """Assemble a fold table from case ids and logits per cohort."""
    frames = []
    for cohort, ids in cohorts.items():
        if len(ids) == 0:
            continue
        logits = np.asarray(y_logit[cohort], dtype=float)
        frames.append(pd.DataFrame({"case_id": list(ids), "cohort": cohort, "fold": k,
                                    "y_logit": logits, "y_prob": expit(logits)}))
    return pd.concat(frames, ignore_index=True)


def ensemble(tables: dict[int, pd.DataFrame], cases: pd.DataFrame, model: str,
             n_folds: int) -> pd.DataFrame:
    """Seam-2 predictions from the fold tables.

    cases: indexed by ``case_id`` with ``patient_id, label, synthetic``.
    oof rows keep their fold; internal_test / external rows: mean probability over the
    ``n_folds`` fold models (``fold`` = -1) and their standard deviation ``y_std``.
    """
    missing = sorted(set(range(n_folds)) - set(tables))
    if missing:
        raise InputError(f"fold(s) {missing} have no predictions yet; run them before ensembling")
    rows = pd.concat([tables[k] for k in range(n_folds)], ignore_index=True)
    oof = rows[rows["cohort"] == "oof"][["case_id", "cohort", "fold", "y_prob"]].assign(y_std=np.nan)
    held = rows[rows["cohort"] != "oof"]
    agg = (held.groupby(["cohort", "case_id"], sort=False)["y_prob"]
           .agg(y_prob="mean", y_std=lambda p: float(np.std(p)), n="count").reset_index())
    short = agg[agg["n"] != n_folds]
    if len(short):
        raise InputError(f"case(s) {short['case_id'].tolist()[:10]} were predicted by "
                         f"{short['n'].tolist()[:10]} fold model(s) instead of {n_folds}")
    agg = agg.assign(fold=-1).drop(columns="n")
    out = pd.concat([oof, agg], ignore_index=True)
    info = cases.loc[out["case_id"]]
    out.insert(0, "model", model)
    out["patient_id"] = info["patient_id"].to_numpy()
    out["y_true"] = info["label"].astype(int).to_numpy()
    out["synthetic"] = info["synthetic"].astype(int).to_numpy()
    order = {"oof": 0, "internal_test": 1, "external": 2}
    out = out.sort_values(["cohort", "case_id"], key=lambda s: s.map(order) if s.name == "cohort" else s)
    return out[["model", "case_id", "patient_id", "cohort", "fold", "y_true", "y_prob", "y_std",
                "synthetic"]].reset_index(drop=True)


def cohort_ids(cases: pd.DataFrame, k: int) -> tuple[list[str], dict[str, list[str]]]:
    """(training case ids of fold k, {cohort: ids to predict}) from the ``cases`` table."""
    train = cases.index[(cases["part"] == "train") & (cases["fold"] != k)].tolist()
    predict = {"oof": cases.index[(cases["part"] == "train") & (cases["fold"] == k)].tolist(),
               "internal_test": cases.index[cases["part"] == "internal_test"].tolist(),
               "external": cases.index[cases["part"] == "external"].tolist()}
    return train, predict


# -- clinical-only ----------------------------------------------------------------------------

def clinical_trainer(cfg: FinetuneConfig, cases: pd.DataFrame) -> FoldTrainer:
    """Logistic regression on the clinical vector, preprocessing fitted on the training folds."""
    spec = dict(cfg.clinical)

    def train(k: int, folder: Path) -> FoldResult:
        train_ids, predict = cohort_ids(cases, k)
        pipe = fit_logistic(cases.loc[train_ids], cases.loc[train_ids, "label"].astype(int), spec,
                            C=cfg.logistic.C, class_weight=cfg.logistic.class_weight,
                            max_iter=cfg.logistic.max_iter)
        save_logistic(pipe, spec, folder / "clinical_model.json")
        logits = {c: pipe.decision_function(clinical_frame(cases.loc[ids], spec)) if ids else []
                  for c, ids in predict.items()}
        return FoldResult(fold_rows(k, predict, logits), ["clinical_model.json"])

    return train


# -- late fusion ------------------------------------------------------------------------------

def late_fusion_trainer(cfg: FinetuneConfig, cases: pd.DataFrame, split: pd.DataFrame,
                        image_preds: pd.DataFrame) -> FoldTrainer:
    """Stacking on the image model's out-of-fold logits (see :mod:`.fusion`)."""
    spec = dict(cfg.clinical)

    def train(k: int, folder: Path) -> FoldResult:
        pipe, stack_spec, preds = late_fusion_fold(
            k, image_preds, cases, split, spec,
            class_weight=cfg.logistic.class_weight, max_iter=cfg.logistic.max_iter)
        save_logistic(pipe, stack_spec, folder / "late_fusion.json")
        return FoldResult(preds, ["late_fusion.json"])

    return train


# -- image models (ViT, intermediate fusion) -------------------------------------------------

@contextlib.contextmanager
def quiet_lightning():
    """Keep Lightning's per-fit banners (accelerator, tips) and known-harmless warnings out of
    the log of a run that fits one model per fold; warnings about the run itself stay."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*")           # torch pytree API
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _fold_clinical(cfg: FinetuneConfig, cases: pd.DataFrame, train_ids: list[str], folder: Path
                   ) -> tuple[pd.DataFrame | None, list[str]]:
    """Intermediate fusion: the clinical vectors of every case, preprocessing fitted on this fold's
    training cases only (written as JSON); (None, []) for the image-only model."""
    if family_of(cfg) is not ModelFamily.INTERMEDIATE:
        return None, []
    spec = dict(cfg.clinical)
    pre = fit_preprocessor(clinical_frame(cases.loc[train_ids], spec), spec)
    atomic.write_json(folder / "clinical_preprocessor.json", preprocessor_to_json(pre, spec))
    return pd.DataFrame(pre.transform(clinical_frame(cases, spec)), index=cases.index), \
        ["clinical_preprocessor.json"]


def _fold_network(cfg: FinetuneConfig, encoder, clinical: pd.DataFrame | None):
    from ..models.classifiers import IntermediateFusionClassifier, ImageClassifier

    if clinical is None:
        return ImageClassifier(encoder, cfg.model.head_dropout, cfg.model.pool)
    return IntermediateFusionClassifier(encoder, clinical.shape[1], cfg.fusion.clinical_embed_dim,
                                        cfg.fusion.cross_attention, cfg.fusion.attention_heads,
                                        cfg.fusion.dropout, cfg.model.pool)


def _lightning_trainer(cfg: FinetuneConfig, folder: Path):
    """(Trainer, the checkpoint callback keeping the best — or the last — epoch's weights)."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from ..checkpoints import WeightsOnlyCheckpointIO
    from .linear_probe import EarlyStoppingAfterProbe, LinearProbe

    keep_best = cfg.train.checkpoint == "best"
    best = ModelCheckpoint(dirpath=folder / "lightning", filename="best",
                           monitor="val_auc" if keep_best else None, mode="max", save_top_k=1,
                           save_weights_only=True, enable_version_counter=False)
    callbacks = [best]
    probe = cfg.train.linear_probe_epochs
    if probe:   # linear probing, then fine-tuning; 0: the callbacks of full fine-tuning as they were
        callbacks.append(LinearProbe(probe))
    if cfg.train.early_stopping_patience:
        stopping = dict(monitor="val_auc", mode="max", patience=cfg.train.early_stopping_patience)
        callbacks.append(EarlyStoppingAfterProbe(probe, **stopping) if probe else EarlyStopping(**stopping))
    trainer = pl.Trainer(max_epochs=cfg.train.epochs, accelerator=cfg.train.accelerator,
                         devices=cfg.train.devices, precision=cfg.train.precision,
                         callbacks=callbacks, plugins=[WeightsOnlyCheckpointIO()],
                         logger=[CSVLogger(folder, name="logs", version=""),
                                 TensorBoardLogger(folder, name="logs", version="",
                                                   default_hp_metric=False)],
                         default_root_dir=folder, num_sanity_val_steps=0,
                         enable_progress_bar=cfg.train.progress_bar, enable_model_summary=False,
                         deterministic=cfg.train.deterministic, log_every_n_steps=1)
    return trainer, best


def _keep_selected_epoch(cfg: FinetuneConfig, trainer, best, module) -> dict:
    """Model selection: load the epoch with the best validation AUC of this fold (or the last)."""
    from ..checkpoints import load_checkpoint

    checkpoint = load_checkpoint(best.best_model_path)
    module.load_state_dict(checkpoint["state_dict"])
    val_auc = trainer.callback_metrics.get("val_auc")
    info = {"checkpoint": cfg.train.checkpoint, "epochs_run": trainer.current_epoch,
            "kept_epoch": int(checkpoint.get("epoch", -1)),
            "best_val_auc": float(best.best_model_score) if cfg.train.checkpoint == "best" else None,
            "last_val_auc": float(val_auc) if val_auc is not None else None}
    if cfg.train.linear_probe_epochs:   # a kept_epoch below it is a probe epoch (encoder unchanged)
        info["linear_probe_epochs"] = cfg.train.linear_probe_epochs
    return info


def _predict_cohorts(trainer, module, dm, caches: dict, predict: dict, items) -> dict[str, np.ndarray]:
    """Logits of every cohort to predict (oof, internal_test, external), by the kept weights."""
    import torch

    cohorts = [c for c, ids in predict.items() if ids]
    batches = trainer.predict(module, dataloaders=[
        dm.eval_loader(caches[c], items(caches[c], predict[c])) for c in cohorts])
    if len(cohorts) == 1:  # Lightning unwraps a single loader's list
        batches = [batches]
    logits = {c: [] for c in predict}
    logits.update({c: torch.cat(b).float().cpu().numpy() for c, b in zip(cohorts, batches)})
    return logits


def _save_fold_network(folder: Path, network, cfg: FinetuneConfig, internal_cache,
                       clinical: pd.DataFrame | None, k: int, info: dict) -> None:
    """``model.safetensors`` + ``model.json``: what rebuilds the fold network (and its bundle)."""
    from safetensors.torch import save_file

    weights = {n: t.detach().cpu().contiguous() for n, t in network.state_dict().items()}
    with atomic.atomic_path(folder / "model.safetensors") as tmp:
        save_file(weights, str(tmp), metadata={"format": "rn-classifier/finetuned-classifier"})
    atomic.write_json(folder / "model.json", {
        "network": "intermediate_fusion" if clinical is not None else "image",
        "encoder": dict(getattr(network.encoder, "init_kwargs", {})),
        "arch": getattr(network.encoder, "arch_name", cfg.model.arch),
        "crop_size": list(cfg.model.crop_size), "spacing": list(internal_cache.spacing),
        "normalisation": internal_cache.meta.get("normalisation"),
        "fusion": {"kind": cfg.fusion.kind, "clinical_embed_dim": cfg.fusion.clinical_embed_dim,
                   "cross_attention": cfg.fusion.cross_attention,
                   "attention_heads": cfg.fusion.attention_heads,
                   "n_clinical": int(clinical.shape[1]) if clinical is not None else 0},
        "head_dropout": cfg.model.head_dropout, "pool": cfg.model.pool, "fold": k, **info})


def image_trainer(cfg: FinetuneConfig, cases: pd.DataFrame, internal_cache, external_cache,
                  build_encoder: Callable[[], "object"], echo: Callable[[str], None] = print) -> FoldTrainer:
    """Fine-tune the ViT (with the intermediate fusion head when ``fusion.kind=intermediate``).

    build_encoder: returns a fresh encoder with 2 input channels (pretrained + inflated, or
    randomly initialised); called after the fold's seed is set.
    """
    import lightning.pytorch as pl

    from .datamodule import FinetuneDataModule, make_items
    from .logistic_head import fit_logistic_head
    from .module import FinetuneModule, steps_per_epoch

    caches = {"oof": internal_cache, "internal_test": internal_cache, "external": external_cache}

    def train(k: int, folder: Path) -> FoldResult:
        with quiet_lightning():
            return train_fold(k, folder)

    def train_fold(k: int, folder: Path) -> FoldResult:
        pl.seed_everything(cfg.train.seed + k, workers=True, verbose=False)
        train_ids, predict = cohort_ids(cases, k)
        clinical, clinical_files = _fold_clinical(cfg, cases, train_ids, folder)

        def items(cache, ids):
            return make_items(cache, ids, cases.loc[ids, "label"].astype(int).to_numpy(),
                              clinical.loc[ids].to_numpy() if clinical is not None else None)

        network = _fold_network(cfg, build_encoder(), clinical)
        y_train = cases.loc[train_ids, "label"].astype(int).to_numpy()
        n_pos, n_neg = int(y_train.sum()), int(len(y_train) - y_train.sum())
        dm = FinetuneDataModule(internal_cache, items(internal_cache, train_ids),
                                items(internal_cache, predict["oof"]), cfg.model.crop_size,
                                cfg.augment, cfg.train.batch_size, cfg.train.predict_batch_size,
                                cfg.train.num_workers, cfg.train.balance, seed=cfg.train.seed + k)
        module = FinetuneModule(network, cfg.optim, cfg.train.epochs,
                                steps_per_epoch(len(train_ids), cfg.train.batch_size),
                                pos_weight=n_neg / n_pos if cfg.train.balance == "loss" else None)
        trainer, best = _lightning_trainer(cfg, folder)
        probe = cfg.train.linear_probe_epochs
        echo(f"fold {k}: training on {len(train_ids)} cases ({n_pos} RN / {n_neg} progression), "
             f"validating on {len(predict['oof'])}"
             + (f"; encoder frozen for the first {probe} of {cfg.train.epochs} epochs (linear probe)"
                if probe else ""))
        head = None
        if cfg.train.head_init == "logistic":   # before any epoch: the LP of LP-FT, in closed form
            head = fit_logistic_head(network, dm.eval_loader(internal_cache, items(internal_cache, train_ids)),
                                     y_train, cases.loc[train_ids, "patient_id"].to_numpy(),
                                     scoring=cfg.train.head_scoring)
            echo(f"fold {k}: logistic head fitted on the frozen embeddings (C {head['C']:.3g})")
        if cfg.train.epochs > 0:
            trainer.fit(module, datamodule=dm)
            info = _keep_selected_epoch(cfg, trainer, best, module)
        else:   # the fitted head on the pretrained (or random) encoder is the fold's model
            info = {"checkpoint": "none", "epochs_run": 0, "kept_epoch": -1, "best_val_auc": None,
                    "last_val_auc": None}
        if head is not None:
            info["logistic_head"] = head
        logits = _predict_cohorts(trainer, module, dm, caches, predict, items)
        _save_fold_network(folder, network, cfg, internal_cache, clinical, k, info)
        shutil.rmtree(folder / "lightning", ignore_errors=True)
        if cfg.train.epochs > 0:   # with 0 epochs no epoch was validated or kept
            echo(f"fold {k}: best validation AUC {info['best_val_auc']:.3f} (epoch {info['kept_epoch']})"
                 if cfg.train.checkpoint == "best" else
                 f"fold {k}: last epoch kept, validation AUC {info['last_val_auc']:.3f}")
        return FoldResult(fold_rows(k, predict, logits), ["model.safetensors", "model.json", *clinical_files],
                          info)

    return train

"""Frozen-encoder probe: what an encoder's features already say about the lesions, before any
fine-tuning.

A fine-tuned AUC mixes the encoder with the fine-tuning recipe; a linear read-out of frozen
features isolates the encoder, so it answers "did pretraining learn anything useful?" in a
minute, before hours of fine-tuning. On the internal cohort's TRAINING cases only (the split's
``part == "train"``; internal-test and external cases are never read) this module

1. embeds each case's lesion-centred crop (centre-cropped to the encoder's crop size) with the
   frozen encoder, pooling the tokens three ways as fine-tuning can (``cls`` class token, ``avg``
   mean of the patches, ``mask`` mask-weighted mean: :func:`models.classifiers.pooling_weights`);
2. fits an L2 logistic regression on standardised features in patient-grouped, class-stratified
   5-fold CV, repeated over ``repeats`` shuffles, and reports the out-of-fold ROC AUC (mean and
   SD over the repeats);
3. does the same for two references: the same architecture at random initialisation (what
   pretraining has to beat: a random ViT's mask-pooled features are far from useless) and a few
   intensity statistics of the crop inside and around the mask (what plain measurements give);
4. on a SYNTHETIC cohort, whose ``cohort.json`` holds each lesion's latent phenotype, the
   cross-validated R² of a ridge read-out of every trait: which lesion properties the features
   carry. A trait the crop statistics recover but the encoder does not is visible in the data
   and was not learned.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import ndimage
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import r2_score, roc_auc_score
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..data.cache import CropCache
from ..data.crop import centre_crop
from ..data.split import load_split
from ..errors import InputError
from ..models.classifiers import MASK_CHANNEL, POOLS, pool_tokens
from ..models.export import load_encoder

N_FOLDS = 5
MIN_CASES_PER_CLASS = N_FOLDS   # every CV fold needs both classes
RANDOM_REFERENCE = "random init (same architecture)"
STATISTICS_REFERENCE = "crop intensity statistics"


@dataclass
class ProbeCases:
    """Labelled training cases: ``crops (N, C, X, Y, Z)`` float32 with the mask in channel 1."""

    cache: CropCache
    case_ids: np.ndarray
    patients: np.ndarray
    labels: np.ndarray
    crops: np.ndarray


def training_cases(cache_dir: str | os.PathLike, split_path: str | os.PathLike) -> ProbeCases:
    """The split's training cases that the internal cache holds with a label (test never read)."""
    cache = CropCache(cache_dir)
    if len(cache.channels) <= MASK_CHANNEL:
        raise InputError(f"{cache.folder} holds channels {cache.channels}; the probe needs the lesion "
                         "mask as the second channel (an internal-cohort cache from `preprocess`)")
    split = load_split(split_path)
    train = set(split.loc[split["part"] == "train", "case_id"].astype(str))
    index = cache.index[cache.index["case_id"].isin(train) & cache.index["label"].notna()]
    labels = index["label"].astype(int).to_numpy()
    counts = np.bincount(labels, minlength=2)
    if counts.min() < MIN_CASES_PER_CLASS:
        raise InputError(f"{cache.folder} holds {counts[1]} radiation necrosis and {counts[0]} progression "
                         f"training cases of {split_path}; the probe's {N_FOLDS}-fold CV needs at least "
                         f"{MIN_CASES_PER_CLASS} of each")
    crops = np.stack([np.asarray(cache[int(r)], np.float32) for r in index["row"]])
    return ProbeCases(cache=cache, case_ids=index["case_id"].to_numpy(), patients=index["patient_id"].to_numpy(),
                      labels=labels, crops=crops)


def centre_crops(crops, size) -> torch.Tensor:
    """Volumes ``(C, *spatial)`` (an array of them or a list) → ``(N, C, *size)`` float32 centre
    crops (zero-padded where smaller)."""
    return torch.stack([torch.as_tensor(np.asarray(centre_crop(c, size))) for c in crops]).float()


def pooled_tokens(encoder: torch.nn.Module, x: torch.Tensor, pools=POOLS) -> dict[str, torch.Tensor]:
    """One batch ``x: (B, C, *spatial)`` (T1CE first, mask in channel 1) → ``{pool: (B, D)}``.

    The encoder sees its own number of input channels (1 for a pretraining export); the mask
    only weighs the tokens, as fine-tuning's ``model.pool`` does (models.classifiers.pool_tokens).
    """
    tokens = encoder.forward_features(x[:, :int(encoder.patch_embed.in_chans)])
    n_prefix = int(getattr(encoder, "num_prefix_tokens", 1))
    return {pool: pool_tokens(tokens, x, pool, tuple(encoder.patch_size), n_prefix) for pool in pools}


@torch.no_grad()
def embed(encoder: torch.nn.Module, x: torch.Tensor, batch_size: int = 16) -> dict[str, np.ndarray]:
    """Frozen embeddings ``{pool: (N, D)}`` of ``x: (N, C, *spatial)`` for every pooling in :data:`POOLS`."""
    encoder.eval()
    parts = [pooled_tokens(encoder, x[start:start + batch_size]) for start in range(0, len(x), batch_size)]
    return {pool: torch.cat([part[pool] for part in parts]).numpy() for pool in POOLS}


def crop_statistics(x: torch.Tensor, case_ids=None) -> np.ndarray:
    """Intensity statistics ``(N, 25)`` of each crop: size and rim share of the mask; mean, SD and
    10/50/90th percentiles in the mask, its eroded core and two shells around it (2 and 2-5
    voxels: oedema); gradient magnitude in the mask and the inner shell; SD of the Laplacian in
    the mask (texture)."""
    rows = []
    for i, crop in enumerate(x.numpy()):
        image, mask = crop[0], crop[MASK_CHANNEL] > 0.5
        if not mask.any():
            case = f"case {case_ids[i]}" if case_ids is not None else f"crop {i}"
            raise InputError(f"{case}: the lesion mask is empty in the centre crop; the probe needs the "
                             "lesion in view (is the cache lesion-centred?)")
        grown2 = ndimage.binary_dilation(mask, iterations=2)
        shell_inner = grown2 & ~mask
        shell_outer = ndimage.binary_dilation(mask, iterations=5) & ~grown2
        core = ndimage.binary_erosion(mask)
        core = core if core.any() else mask
        row = [mask.sum() ** (1 / 3), (mask & ~core).sum() / mask.sum()]
        for region in (mask, core, shell_inner, shell_outer):
            values = image[region] if region.any() else np.zeros(1, np.float32)
            row += [values.mean(), values.std(), *np.percentile(values, [10, 50, 90])]
        gradient = ndimage.gaussian_gradient_magnitude(image, 1.0)
        row += [gradient[mask].mean(), gradient[shell_inner].mean() if shell_inner.any() else 0.0,
                ndimage.laplace(image)[mask].std()]
        rows.append(row)
    return np.asarray(rows, dtype=np.float64)


def label_probe_auc(features: np.ndarray, labels: np.ndarray, patients: np.ndarray,
                    repeats: int = 10, seed: int = 0, C: float = 0.05) -> tuple[float, float]:
    """Out-of-fold ROC AUC of an L2 logistic read-out: (mean, SD) over ``repeats`` CV shuffles.

    C = 0.05: strong shrinkage, as suits ~100 cases and a few hundred features; the same for
    every row of a report, so rows compare.
    """
    aucs = []
    for r in range(repeats):
        cv = StratifiedGroupKFold(N_FOLDS, shuffle=True, random_state=seed + r)
        model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000))
        prob = cross_val_predict(model, features, labels, groups=patients, cv=cv, method="predict_proba")
        aucs.append(roc_auc_score(labels, prob[:, 1]))
    return float(np.mean(aucs)), float(np.std(aucs))


def synthetic_traits(cohort_json: str | os.PathLike, case_ids) -> pd.DataFrame:
    """Latent phenotype of each case's lesion, from a SYNTHETIC cohort's ``cohort.json``.

    Columns: every trait of the generator (``data.synth.lesions.TRAITS``; log-scaled ones as
    their log) plus ``log_radius_mm`` at the case's time point. Rows in ``case_ids`` order.
    """
    from ..data.molab import case_id
    from ..data.synth.lesions import TRAITS

    path = Path(cohort_json)
    try:
        cohort = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not a readable cohort.json ({exc})") from None
    if not isinstance(cohort, dict) or cohort.get("synthetic") is not True or "patients" not in cohort:
        raise InputError(f"{path} is not the cohort.json of a SYNTHETIC cohort (`rn-classifier synth`); "
                         "latent traits exist only there")
    lesions = {}
    for patient in cohort["patients"]:
        for lesion in patient["lesions"]:
            for t, timepoint in enumerate(patient["timepoints"]):
                lesions[case_id(patient["patient_id"], timepoint, lesion["lesion"])] = (lesion["phenotype"], t)
    missing = [c for c in case_ids if c not in lesions]
    if missing:
        raise InputError(f"{path} has no lesion for case(s) {missing[:5]}; give the cohort.json of the "
                         "cohort the cache was built from")
    rows = []
    for case in case_ids:
        phenotype, t = lesions[case]
        row = {(f"log_{tr.name}" if tr.log else tr.name):
               (math.log(phenotype[tr.name]) if tr.log else phenotype[tr.name]) for tr in TRAITS}
        row["log_radius_mm"] = math.log(phenotype["radius_mm"] * phenotype["growth"] ** t)
        rows.append(row)
    return pd.DataFrame(rows)


def trait_r2(features: np.ndarray, traits: pd.DataFrame, patients: np.ndarray) -> dict[str, float]:
    """Cross-validated R² (patient-grouped 5-fold) of a ridge read-out of each trait.

    1 = the trait is a linear function of the features; ≤ 0 = no better than the mean.
    """
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-1, 4, 12)))
    out = {}
    for name in traits.columns:
        target = traits[name].to_numpy(float)
        pred = cross_val_predict(model, features, target, groups=patients, cv=GroupKFold(N_FOLDS))
        out[name] = float(r2_score(target, pred))
    return out


def probe_encoders(encoder_dirs, cache_dir, split_path, cohort_json=None, repeats: int = 10,
                   seed: int = 0) -> dict:
    """The probe report (see the module docstring) for each encoder export and both references.

    The random-init reference has the first encoder's architecture, drawn with ``seed`` (the
    global torch random state is left as it was).
    """
    if not encoder_dirs:
        raise InputError("give at least one encoder export folder to probe")
    cases = training_cases(cache_dir, split_path)
    encoders, metas = {}, []
    with torch.random.fork_rng():   # building models draws initial weights: keep the caller's RNG
        for folder in encoder_dirs:
            model, meta = load_encoder(folder)
            cases.cache.check_spacing(meta["spacing"], f"the encoder export {folder}")
            if metas and list(meta["crop_size"]) != list(metas[0]["crop_size"]):
                raise InputError(f"{folder} was pretrained on {meta['crop_size']} crops, {encoder_dirs[0]} "
                                 f"on {metas[0]['crop_size']}; probe encoders of one crop size together")
            encoders[str(folder)] = model
            metas.append(meta)
        torch.manual_seed(seed)
        encoders[RANDOM_REFERENCE] = type(encoders[str(encoder_dirs[0])])(**metas[0]["model_kwargs"])
    crop_size = list(metas[0]["crop_size"])
    x = centre_crops(cases.crops, crop_size)
    traits = synthetic_traits(cohort_json, cases.case_ids) if cohort_json else None

    rows = []
    def add(name, pooled: dict[str, np.ndarray]):
        row = {"name": name, "label_auc": {}, "label_auc_sd": {}}
        for pool, feats in pooled.items():
            row["label_auc"][pool], row["label_auc_sd"][pool] = label_probe_auc(
                feats, cases.labels, cases.patients, repeats, seed)
        if traits is not None:
            trait_pool = "mask" if "mask" in pooled else next(iter(pooled))
            row["trait_r2"] = trait_r2(pooled[trait_pool], traits, cases.patients)
            row["trait_features"] = trait_pool
        rows.append(row)

    for name, model in encoders.items():
        add(name, embed(model, x))
    add(STATISTICS_REFERENCE, {"statistics": crop_statistics(x, cases.case_ids)})
    return {"cases": {"n": int(len(cases.labels)), "radiation_necrosis": int(cases.labels.sum()),
                      "patients": int(len(np.unique(cases.patients)))},
            "crop_size": crop_size, "repeats": repeats, "folds": N_FOLDS,
            "synthetic_traits": traits is not None, "rows": rows}


def format_report(report: dict) -> str:
    """The report as a plain-text table (what the command prints)."""
    c = report["cases"]
    lines = [f"frozen-feature probe on {c['n']} internal TRAINING cases ({c['radiation_necrosis']} RN, "
             f"{c['patients']} patients); logistic read-out, patient-grouped {report['folds']}-fold CV "
             f"x {report['repeats']} shuffles; AUC mean (SD)"]
    for row in report["rows"]:
        aucs = ", ".join(f"{pool} {row['label_auc'][pool]:.3f} ({row['label_auc_sd'][pool]:.3f})"
                         for pool in row["label_auc"])
        lines.append(f"  {row['name']}: {aucs}")
    if report["synthetic_traits"]:
        names = list(report["rows"][0]["trait_r2"])
        width = max(len(r["name"]) for r in report["rows"])
        lines.append("cross-validated R² of a ridge read-out of each latent trait (SYNTHETIC cohort; "
                     "encoders: mask-pooled features):")
        lines.append("  " + " " * width + " " + " ".join(f"{n[:12]:>12s}" for n in names))
        for row in report["rows"]:
            lines.append(f"  {row['name']:<{width}s} " + " ".join(f"{row['trait_r2'][n]:12.2f}" for n in names))
    return "\n".join(lines)

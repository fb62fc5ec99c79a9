"""The radiomics baseline end to end (a registered baseline, :mod:`.registry`).

:func:`run_radiomics` reads the cohorts and the split, extracts (or reuses) the features, runs
the cross-validated model and writes the run folder:

=========================  ====================================================================
``config.yaml``            the resolved config
``provenance.json``        git SHA, package versions, date, synthetic flag
``split.csv``              the patient-level split used (the one given, or the one made here)
``features.csv``           feature table: ``case_id, patient_id, cohort, part, label, synthetic``
                           then one column per pyradiomics feature
``selected_features.csv``  features reaching the final classifier, their weight and in how many
                           fold models they were selected too
``predictions.csv``        seam 2: ``oof`` rows (out-of-fold, training part), ``internal_test``
                           and ``external`` rows (final model refitted on all training cases;
                           ``y_std`` = SD of the fold models' probabilities)
``skipped.csv``            cases left out, with the reason (``on_error: skip``)
``summary.json``           counts, extraction time, chosen classifiers, AUCs
``feature_cache/``         per-case feature cache (unless ``extraction.cache_dir`` points elsewhere)
=========================  ====================================================================
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .. import atomic
from ..errors import DataIntegrityError, InputError
from ..stats.validation import auc_or_none

COHORT_INTERNAL, COHORT_EXTERNAL = "internal", "external"
META_COLUMNS = ("case_id", "patient_id", "cohort", "part", "label", "synthetic")


def _cases_to_extract(internal, external, split):
    """Labelled cases with their cohort and part; unlabelled ones cannot be trained or scored."""
    parts = split.set_index("case_id")["part"]
    inside = internal[internal["case_id"].isin(parts.index)].assign(
        cohort=COHORT_INTERNAL, part=lambda d: d["case_id"].map(parts))
    frames = [inside]
    if external is not None:
        frames.append(external[external["label"].notna()].assign(cohort=COHORT_EXTERNAL,
                                                                  part=COHORT_EXTERNAL))
    return pd.concat(frames, ignore_index=True)


def _read_cohorts(cfg, manifest, external, split):
    """(internal manifest, external manifest or None, split, cases to extract)."""
    from ..data.manifest import check_disjoint_ids, load_manifest
    from ..data.split import load_split, make_split

    internal = load_manifest(manifest)
    ext = load_manifest(external) if external is not None else None
    if ext is not None:
        check_disjoint_ids(internal, ext)
    split_df = (load_split(split, internal) if split is not None
                else make_split(internal, test_fraction=cfg.cv.test_fraction, n_folds=cfg.cv.n_folds,
                                seed=cfg.cv.seed))
    return internal, ext, split_df, _cases_to_extract(internal, ext, split_df)


def _extract(cfg, cases: pd.DataFrame, out: Path, progress: bool):
    """Features of every case (cached); (extraction, cache folder, rejected cases with reasons)."""
    from .radiomics_batch import extract_cohort

    cache_dir = Path(cfg.extraction.cache_dir) if cfg.extraction.cache_dir else out / "feature_cache"
    extracted = extract_cohort(cases, cfg.extraction.pyradiomics, cache_dir,
                               workers=cfg.extraction.workers,
                               threads_per_worker=cfg.extraction.threads_per_worker, progress=progress)
    skipped = extracted.failed.merge(cases[["case_id", "cohort"]], on="case_id")[
        ["case_id", "cohort", "reason"]]
    if len(skipped) and cfg.extraction.on_error == "fail":
        raise DataIntegrityError(
            f"radiomics extraction ({len(skipped)} of {len(cases)} cases rejected; set "
            "extraction.on_error=skip to go on without them)", skipped["reason"].tolist())
    return extracted, cache_dir, skipped


def _fit_and_predict(cfg, cases, extracted, split_df, n_skipped: int):
    """Cross-validated model on the kept cases → (meta, feature table, model result, seam-2 rows)."""
    from ..data.split import check_split
    from .radiomics_model import cross_validate_and_predict

    kept = cases[cases["case_id"].isin(extracted.features.index)].reset_index(drop=True)
    meta = kept[list(META_COLUMNS)].copy()
    features = extracted.features.loc[kept["case_id"]].replace([np.inf, -np.inf], np.nan)
    table = meta.join(features.reset_index(drop=True))
    train = (meta["part"] == "train").to_numpy()
    train_split = split_df.set_index("case_id").loc[meta.loc[train, "case_id"]].reset_index()
    try:  # skipped cases may have emptied a class out of a fold
        check_split(train_split, labels=meta.loc[train].set_index("case_id")["label"].astype(int))
    except InputError as exc:
        raise InputError(f"after leaving out {n_skipped} rejected case(s): {exc}") from exc
    eval_masks = {"internal_test": (meta["part"] == "internal_test").to_numpy(),
                  "external": (meta["part"] == COHORT_EXTERNAL).to_numpy()}
    result = cross_validate_and_predict(
        features[train], meta.loc[train, "label"].astype(int).to_numpy(),
        meta.loc[train, "patient_id"].to_numpy(), train_split["fold"].to_numpy(),
        {name: features[mask] for name, mask in eval_masks.items()}, cfg.model)
    rows = [meta.loc[train].assign(cohort="oof", fold=train_split["fold"].to_numpy(),
                                   y_prob=result.oof_prob, y_std=np.nan)]
    for name, mask in eval_masks.items():
        if mask.any():
            rows.append(meta.loc[mask].assign(cohort=name, fold=-1, y_prob=result.eval_prob[name],
                                              y_std=result.eval_std[name]))
    predictions = pd.concat(rows, ignore_index=True).rename(columns={"label": "y_true"})
    predictions.insert(0, "model", cfg.name)
    return meta, features, table, result, predictions


def _summary(cfg, meta, internal, ext, skipped, features, extracted, cache_dir, result, predictions) -> dict:
    from .radiomics_batch import resolve_workers

    return {
        "model": cfg.name,
        "synthetic": bool(meta["synthetic"].astype(bool).any()),
        "cases": {c: int(n) for c, n in meta["part"].value_counts().items()},
        "skipped": int(len(skipped)),
        "unlabelled_ignored": int(internal["label"].isna().sum()
                                  + (ext["label"].isna().sum() if ext is not None else 0)),
        "features_extracted": int(features.shape[1]),
        "extraction": {"seconds": round(extracted.seconds, 2), "from_cache": extracted.n_cached,
                       "extracted": extracted.n_extracted,
                       "workers": resolve_workers(cfg.extraction.workers), "cache_dir": str(cache_dir)},
        "classifier_per_fold": result.fold_choices,
        "final_classifier": result.final_choice,
        "n_selected_features": int(len(result.selected)),
        "auc": {c: auc_or_none(g["y_true"].astype(int), g["y_prob"]) for c, g in predictions.groupby("cohort")},
        "y_std": "internal_test/external: SD of the fold models' probabilities; empty for oof rows",
    }


def run_radiomics(config: str | os.PathLike | None, manifest: str | os.PathLike,
                  out: str | os.PathLike, external: str | os.PathLike | None = None,
                  split: str | os.PathLike | None = None, overrides: list[str] | None = None,
                  progress: bool = True) -> dict:
    """Run the radiomics baseline end to end; returns the run summary (also in summary.json)."""
    from ..config import load_config, save_config
    from ..data.split import save_split
    from ..predictions import write_predictions
    from ..privacy import scrub_paths
    from ..provenance import run_provenance
    from .radiomics_config import RadiomicsConfig, validate_config

    cfg = validate_config(load_config(RadiomicsConfig, config, overrides or []))
    out = Path(out)
    internal, ext, split_df, cases = _read_cohorts(cfg, manifest, external, split)
    extracted, cache_dir, skipped = _extract(cfg, cases, out, progress)
    meta, features, table, result, predictions = _fit_and_predict(cfg, cases, extracted, split_df, len(skipped))
    summary = _summary(cfg, meta, internal, ext, skipped, features, extracted, cache_dir, result, predictions)
    save_config(cfg, out / "config.yaml")
    atomic.write_json(out / "provenance.json", {**run_provenance(), "synthetic": summary["synthetic"]})
    save_split(split_df, out / "split.csv")
    atomic.write_csv(out / "features.csv", table)
    atomic.write_csv(out / "selected_features.csv", result.selected)
    write_predictions(predictions, out / "predictions.csv")
    atomic.write_csv(out / "skipped.csv", skipped.assign(reason=skipped["reason"].map(scrub_paths)))
    atomic.write_json(out / "summary.json", summary)
    return summary

"""Label efficiency: the SSL and supervised models fine-tuned on fractions of the training patients.

The paper's argument is that pretraining matters most when labels are few. For each fraction
``f`` of ``label_efficiency.fractions`` every chosen model is fine-tuned on a patient-level subset
of the TRAINING part of the study's split; the internal test set and the external cohort stay
exactly the same, so the AUCs of one cohort are comparable across fractions and models.

Subsets: inside every CV fold, patients with at least one radiation-necrosis lesion and the others
are shuffled once (``label_efficiency.seed``) and the first ``ceil(f · n)`` of each group are kept
(at least one), so subsets are nested (0.1 ⊂ 0.25 ⊂ 0.5), keep the folds and both classes in every
fold. ``f = 1`` is the study's own fine-tuning run (not trained twice).

Output (``RUN/label_efficiency/``)::

    subsets/frac_<f>/internal.csv, split.csv   the subset manifest (absolute paths) and its split
    <model>/frac_<f>/                          a fine-tuning run folder per model and fraction
    curve.csv, curve.json                      the curve (see :func:`curve_rows`)
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from .. import atomic
from ..data.split import save_split
from ..errors import ConfigError
from ..family import ModelFamily, family_of

CURVE_COLUMNS = ("model", "fraction", "n_train_patients", "n_train_cases", "cohort", "n_cases",
                 "n_positive", "auc", "auc_ci_low", "auc_ci_high", "reference", "auc_diff_vs_reference",
                 "p_vs_reference")
CURVE_COHORTS = ("internal_test", "external")


def frac_tag(fraction: float) -> str:
    return f"frac_{fraction:.2f}"


def subset_split(split: pd.DataFrame, labels: pd.Series, fraction: float, seed: int) -> pd.DataFrame:
    """The split restricted to ``fraction`` of each fold's training patients (nested in fraction)."""
    if fraction >= 1.0:
        return split.copy()
    train = split[split["part"] == "train"]
    has_rn = labels.reindex(train["case_id"]).groupby(train["patient_id"].to_numpy()).max()
    rng = np.random.default_rng(seed)
    keep: list[str] = []
    for k in sorted(train["fold"].unique()):
        patients = sorted(train.loc[train["fold"] == k, "patient_id"].unique())
        for group in (1, 0):
            members = [p for p in patients if int(has_rn[p]) == group]
            if not members:
                continue
            order = [members[i] for i in rng.permutation(len(members))]
            keep += order[:max(1, math.ceil(fraction * len(members)))]
    chosen = split["patient_id"].isin(keep) | (split["part"] == "internal_test")
    return split[chosen].reset_index(drop=True)


def curve_rows(stats: dict, model_counts: dict, fraction: float) -> list[dict]:
    """One row per model and cohort of one fraction's stats (compare_predictions output)."""
    rows = []
    for cohort in CURVE_COHORTS:
        info = stats["cohorts"].get(cohort)
        if info is None:
            continue
        for model, entry in info["models"].items():
            comparison = next((c for c in info["comparisons"] if c["model"] == model), None)
            rows.append({
                "model": model, "fraction": fraction, **model_counts,
                "cohort": cohort, "n_cases": info["n_cases"], "n_positive": info["n_positive"],
                "auc": entry["auc"], "auc_ci_low": entry["auc_ci"][0], "auc_ci_high": entry["auc_ci"][1],
                "reference": stats["reference"],
                "auc_diff_vs_reference": comparison["auc_diff"] if comparison else None,
                "p_vs_reference": comparison["p_value"] if comparison else None,
            })
    return rows


def run_label_efficiency(study, models: dict, outputs: dict[str, Path], stale: bool = False) -> dict:
    """Fine-tune ``models`` ({name: FinetuneConfig}) on every fraction; write the curve."""
    from ..data.manifest import load_manifest
    from ..data.split import load_split
    from ..finetune.run import run_finetune
    from ..stats.compare import CompareSettings, compare_predictions
    from ..stats.predictions import read_predictions
    from .run import _absolute_paths

    le = study.cfg.label_efficiency
    root = study.out / "label_efficiency"
    if stale and root.exists():
        study.echo(f"  settings changed: replacing {root}")
        shutil.rmtree(root)
    internal = load_manifest(study.manifest("internal"))
    internal = internal[internal["label"].notna()]
    labels = internal.set_index(internal["case_id"].astype(str))["label"].astype(int)
    split = load_split(study.split_path)
    full_manifest = root / "subsets" / "internal_all.csv"
    full_manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest_rows = _absolute_paths(study.manifest("internal"), full_manifest)
    full_manifest.unlink()

    reference = list(models)[0]
    c = study.cfg.compare
    settings = CompareSettings(n_boot=le.n_boot, seed=c.seed, conf_level=c.conf_level, n_bins=c.n_bins)
    rows, runs = [], {m: {} for m in models}
    for fraction in sorted(le.fractions):
        sub = subset_split(split, labels, fraction, le.seed)
        train = sub[sub["part"] == "train"]
        counts = {"n_train_patients": int(train["patient_id"].nunique()), "n_train_cases": int(len(train))}
        folder = root / "subsets" / frac_tag(fraction)
        folder.mkdir(parents=True, exist_ok=True)
        manifest = folder / "internal.csv"
        atomic.write_csv(manifest, manifest_rows[manifest_rows["case_id"].isin(set(sub["case_id"]))])
        save_split(sub, folder / "split.csv")
        paths = []
        for name, base in models.items():
            if fraction >= 1.0:
                path = outputs[name]
                runs[name][fraction] = str(path.parent.relative_to(study.out))
            else:
                run_dir = root / name / frac_tag(fraction)
                cfg = study.fill_finetune_paths(base, manifest=manifest, split=folder / "split.csv")
                if family_of(cfg) is ModelFamily.LATE and cfg.fusion.image_run is None:
                    raise ConfigError(f"label_efficiency.models: {name} is a late-fusion model; "
                                      "the curve is drawn for image models (ssl_vit, supervised_vit)")
                study.echo(f"  {name} on {fraction:.0%} of the training patients "
                           f"({counts['n_train_patients']} patients, {counts['n_train_cases']} cases)")
                encoder = study.encoder_dir() if study._uses_encoder(cfg) else None
                summary = run_finetune(cfg, run_dir, encoder_dir=encoder, echo=lambda m: None)
                if not summary.get("complete"):
                    raise RuntimeError(f"{run_dir} did not complete every fold")
                path = run_dir / "predictions.csv"
                runs[name][fraction] = str(run_dir.relative_to(study.out))
            paths.append(path)
        stats = compare_predictions(read_predictions(paths), reference, settings)
        fraction_rows = curve_rows(stats, counts, fraction)
        rows += fraction_rows
        study.echo("  " + "; ".join(f"{r['model']} {r['cohort']} {r['auc']:.3f}" for r in fraction_rows))
    synthetic = bool(stats.get("synthetic"))
    curve = pd.DataFrame(rows, columns=list(CURVE_COLUMNS))
    atomic.write_csv(root / "curve.csv", curve)
    atomic.write_json(root / "curve.json", {
        "synthetic": synthetic, "reference": reference, "models": list(models),
        "fractions": sorted(le.fractions), "conf_level": c.conf_level,
        "ci": "DeLong", "p_value": "paired DeLong vs reference, two-sided, same cases",
        "subsets": "patient-level, per CV fold and class group, nested across fractions; "
                   "internal_test and external cases identical for every fraction",
        "runs": {m: {f"{f:.2f}": p for f, p in r.items()} for m, r in runs.items()},
        "rows": rows})
    return {"curve": str((root / "curve.csv").relative_to(study.out)), "points": len(rows)}

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
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass
class LabelEfficiencyInputs:
    """What the stage takes from the study, passed explicitly.

    fill_paths(cfg, manifest, split): the fine-tuning config with the study's caches and this
    subset's manifest and split; encoder(cfg): the encoder export to fine-tune from, or None.
    """

    out: Path                                    # the study run folder
    internal_manifest: Path
    split: Path
    settings: object                             # study config's label_efficiency section
    compare: object                              # study config's compare section
    fill_paths: Callable
    encoder: Callable
    echo: Callable[[str], None] = print


def _subset_files(run: LabelEfficiencyInputs, root: Path, manifest_rows: pd.DataFrame, sub: pd.DataFrame,
                  fraction: float) -> tuple[Path, Path]:
    """The subset's manifest (absolute paths) and split, in ``root/subsets/frac_<f>/``."""
    folder = root / "subsets" / frac_tag(fraction)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "internal.csv"
    atomic.write_csv(manifest, manifest_rows[manifest_rows["case_id"].isin(set(sub["case_id"]))])
    save_split(sub, folder / "split.csv")
    return manifest, folder / "split.csv"


def _fraction_run(run: LabelEfficiencyInputs, root: Path, name: str, base, fraction: float,
                  manifest: Path, split: Path, counts: dict) -> Path:
    """Fine-tune model ``name`` on one subset; returns its run folder."""
    from ..finetune.run import run_finetune

    run_dir = root / name / frac_tag(fraction)
    cfg = run.fill_paths(base, manifest, split)
    if family_of(cfg) is ModelFamily.LATE and cfg.fusion.image_run is None:
        raise ConfigError(f"label_efficiency.models: {name} is a late-fusion model; "
                          "the curve is drawn for image models (ssl_vit, supervised_vit)")
    run.echo(f"  {name} on {fraction:.0%} of the training patients "
             f"({counts['n_train_patients']} patients, {counts['n_train_cases']} cases)")
    summary = run_finetune(cfg, run_dir, encoder_dir=run.encoder(cfg), echo=lambda m: None)
    if not summary.get("complete"):
        raise RuntimeError(f"{run_dir} did not complete every fold")
    return run_dir


def _write_curve(run: LabelEfficiencyInputs, root: Path, rows: list[dict], models: dict, runs: dict,
                 synthetic: bool) -> None:
    atomic.write_csv(root / "curve.csv", pd.DataFrame(rows, columns=list(CURVE_COLUMNS)))
    atomic.write_json(root / "curve.json", {
        "synthetic": synthetic, "reference": list(models)[0], "models": list(models),
        "fractions": sorted(run.settings.fractions), "conf_level": run.compare.conf_level,
        "ci": "DeLong", "p_value": "paired DeLong vs reference, two-sided, same cases",
        "subsets": "patient-level, per CV fold and class group, nested across fractions; "
                   "internal_test and external cases identical for every fraction",
        "runs": {m: {f"{f:.2f}": p for f, p in r.items()} for m, r in runs.items()},
        "rows": rows})


def run_label_efficiency(run: LabelEfficiencyInputs, models: dict, outputs: dict[str, Path],
                         stale: bool = False) -> dict:
    """Fine-tune ``models`` ({name: FinetuneConfig}) on every fraction; write the curve.

    outputs: {model: predictions.csv} of the study's own runs (the fraction 1 points)."""
    from ..data.manifest import load_manifest, with_absolute_paths
    from ..data.split import load_split
    from ..stats.compare import CompareSettings, compare_predictions
    from ..stats.predictions import read_predictions

    le, c = run.settings, run.compare
    root = run.out / "label_efficiency"
    if stale and root.exists():
        run.echo(f"  settings changed: replacing {root}")
        shutil.rmtree(root)
    internal = load_manifest(run.internal_manifest)
    internal = internal[internal["label"].notna()]
    labels = internal.set_index(internal["case_id"].astype(str))["label"].astype(int)
    split = load_split(run.split)
    manifest_rows = with_absolute_paths(run.internal_manifest)
    settings = CompareSettings(n_boot=le.n_boot, seed=c.seed, conf_level=c.conf_level, n_bins=c.n_bins)
    rows, runs = [], {m: {} for m in models}
    for fraction in sorted(le.fractions):
        sub = subset_split(split, labels, fraction, le.seed)
        train = sub[sub["part"] == "train"]
        counts = {"n_train_patients": int(train["patient_id"].nunique()), "n_train_cases": int(len(train))}
        manifest, sub_split = _subset_files(run, root, manifest_rows, sub, fraction)
        paths = []
        for name, base in models.items():
            run_dir = (outputs[name].parent if fraction >= 1.0 else
                       _fraction_run(run, root, name, base, fraction, manifest, sub_split, counts))
            runs[name][fraction] = str(run_dir.relative_to(run.out))
            paths.append(run_dir / "predictions.csv")
        stats = compare_predictions(read_predictions(paths), list(models)[0], settings)
        fraction_rows = curve_rows(stats, counts, fraction)
        rows += fraction_rows
        run.echo("  " + "; ".join(f"{r['model']} {r['cohort']} {r['auc']:.3f}" for r in fraction_rows))
    _write_curve(run, root, rows, models, runs, bool(stats.get("synthetic")))
    return {"curve": str((root / "curve.csv").relative_to(run.out)), "points": len(rows)}

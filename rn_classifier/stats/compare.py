"""The compare stage: predictions files (seam 2) -> ``stats.json``.

Design choices (the report stage reads only ``stats.json``):

* Cohorts: ``oof`` (out-of-fold predictions of cross-validation on the training part),
  ``internal_test`` (held-out same-centre set), ``external`` (second centre). Each cohort is
  analysed on its own; within a cohort all models must have the same cases
  (:func:`~rn_classifier.stats.predictions.cohort_table`).
* Discrimination: AUC with DeLong variance and CI (pROC's numbers), one DeLong covariance
  matrix per cohort for all models; paired DeLong test of every model against the reference
  (two-sided; ``auc_diff = AUC_model − AUC_reference``) and Holm-adjusted p-values, the family
  being the comparisons of one cohort. Bootstrap CIs (stratified, clustered by patient) for each
  AUC and each difference, all models on the same replicates. DeLong treats cases as
  independent; when patients contribute several lesions the patient-clustered bootstrap CI is
  the honest one (in simulation with correlated lesions DeLong's 95 % CI covered about 85 %,
  the clustered bootstrap about 96 %; tests/test_stats_bootstrap.py). The oof cohort pools
  predictions of models trained on different folds; its DeLong p-values are descriptive.
* Unpaired DeLong test (Welch-type df, t p-value) of each model's internal_test AUC against its
  external AUC: does performance drop at the second centre?
* Threshold: chosen per model by Youden's J on the model's ``oof`` predictions, or on
  ``internal_test`` only if the model has no oof predictions, and then FROZEN: the same number is
  applied to every cohort (internal_test, external). ``threshold_cohort`` records where it was
  chosen; sensitivity etc. on that same cohort are optimistic, and the stats say so. Nothing is
  tuned on the external cohort.
* Calibration: Brier, ECE (10 equal-width bins; equal-mass in ``ece_equal_mass``), calibration
  slope and intercept, reliability points. Optional recalibration (Platt or isotonic) is fitted on
  the model's oof predictions only and applied to internal_test and external (``recalibrated``).
* Uncertainty (CURVAS view, :mod:`.uncertainty`): per model and cohort ECE, Brier (= CRPS of a
  binary outcome) and the AUROC of each uncertainty (fold spread ``y_std``, contour spread
  ``y_contour_std``, closeness to the threshold) for the wrong calls at the frozen threshold;
  with ``recalibrate``, again after the oof-fitted map, the threshold re-chosen on recalibrated
  oof. ``stats.json["uncertainty"]`` states the binning and the rules.
* Contour variability (optional contour predictions file, :mod:`.contour`): per case the spread
  over alternative contours (``y_contour_std``), and per model and cohort the AUC under each
  contour (``stats["contour"]``).
* Decision curves: net benefit over threshold probabilities 0.01 … 0.99 vs treat-all / treat-none.
* ``synthetic``: true if any predictions row is marked synthetic or the caller says so.

Non-finite numbers (an infinite calibration slope under separation, an undefined PPV) are written
as JSON ``null``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataIntegrityError, InputError
from .bootstrap import bootstrap_auc_replicates, percentile_ci
from .calibration import (Recalibrator, brier_score, calibration_slope_intercept,
                          expected_calibration_error, reliability_curve)
from .contour import add_contour_spread, auc_by_variant, read_contour_predictions
from .decision_curve import decision_curve
from .delong import delong_covariance, delong_unpaired, normal_ci, paired_test_from_covariance
from .multiple import holm
from .predictions import COHORTS, cohort_table, read_predictions, synthetic_flag
from .thresholds import metrics_at_threshold, youden_threshold
from .uncertainty import MARGIN, MARGIN_DESCRIPTION, SPREAD_DESCRIPTIONS, ece_binning, uncertainty_summary
from .validation import check_choice, check_conf_level

STATS_VERSION = 1
THRESHOLD_COHORTS = ("oof", "internal_test")   # where a threshold may be chosen, in preference
THRESHOLD_RULE = ("Youden-optimal threshold chosen per model on its oof predictions (or on "
                  "internal_test if it has none), frozen and applied unchanged to every cohort; "
                  "a case is called radiation necrosis when y_prob >= threshold")


@dataclass(frozen=True)
class CompareSettings:
    """Settings of the compare stage (recorded in stats.json)."""

    n_boot: int = 2000
    seed: int = 0
    conf_level: float = 0.95
    n_bins: int = 10
    recalibrate: str | None = None      # None, "platt" or "isotonic"


def json_ready(value):
    """numpy -> Python, non-finite floats -> None, recursively."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        items = value.tolist() if isinstance(value, np.ndarray) else value
        return [json_ready(v) for v in items]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    return value


def _model_order(table: pd.DataFrame, reference: str) -> list[str]:
    models = list(dict.fromkeys(table["model"]))
    if reference not in models:
        raise InputError(f"reference model {reference!r} is not in the predictions; models found: "
                         f"{', '.join(models)}")
    return [reference] + [m for m in models if m != reference]


def choose_thresholds(table: pd.DataFrame, models: Sequence[str]) -> dict[str, dict]:
    """Per model: the frozen Youden threshold and the cohort it was chosen on (or None)."""
    chosen = {}
    for model in models:
        rows = table[table["model"] == model]
        for cohort in THRESHOLD_COHORTS:
            part = rows[rows["cohort"] == cohort]
            if len(part):
                try:
                    youden = youden_threshold(part["y_true"].to_numpy(), part["y_prob"].to_numpy())
                except InputError as exc:
                    raise InputError(f"model {model}, cohort {cohort}: cannot choose a threshold: "
                                     f"{exc}") from exc
                chosen[model] = {"threshold": youden.threshold, "threshold_cohort": cohort,
                                 "youden_index": youden.youden_index}
                break
        else:
            chosen[model] = {"threshold": None, "threshold_cohort": None, "youden_index": None}
    return chosen


def fit_recalibrators(table: pd.DataFrame, models: Sequence[str], method: str) -> dict:
    """One recalibration map per model, fitted on its oof predictions only."""
    fitted = {}
    for model in models:
        part = table[(table["model"] == model) & (table["cohort"] == "oof")]
        if part.empty:
            raise InputError(f"--recalibrate {method}: model {model} has no oof predictions; "
                             "recalibration may only be fitted on internal out-of-fold "
                             "predictions")
        try:
            fitted[model] = Recalibrator(method).fit(part["y_true"].to_numpy(),
                                                     part["y_prob"].to_numpy())
        except InputError as exc:
            raise InputError(f"model {model}: {exc}") from exc
    return fitted


def recalibrated_thresholds(table: pd.DataFrame, models: Sequence[str],
                            recalibrators: dict) -> dict[str, float]:
    """Per model: Youden's threshold on its recalibrated oof predictions (then frozen)."""
    out = {}
    for model in models:
        part = table[(table["model"] == model) & (table["cohort"] == "oof")]
        mapped = recalibrators[model].transform(part["y_prob"].to_numpy())
        out[model] = youden_threshold(part["y_true"].to_numpy(), mapped).threshold
    return out


def _uncertainty_entry(data, k: int, threshold: float | None, recalibrator, threshold_after,
                       n_bins: int) -> dict:
    """The uncertainty table of model k of one cohort, before and after recalibration."""
    y, p = data.y_true, data.y_prob[k]
    spreads = {c: values[k] for c, values in data.spreads.items()}
    out = {"before": uncertainty_summary(y, p, spreads, threshold, n_bins)}
    if recalibrator is not None and data.cohort != "oof":
        out["after_recalibration"] = uncertainty_summary(y, recalibrator.transform(p), spreads,
                                                         threshold_after, n_bins)
    return out


def calibration_summary(y: np.ndarray, p: np.ndarray, n_bins: int) -> dict:
    """Brier, ECE (equal width and equal mass), slope/intercept, reliability points."""
    logistic = calibration_slope_intercept(y, p)
    return {
        "brier": brier_score(y, p),
        "ece": expected_calibration_error(y, p, n_bins, "uniform"),
        "ece_equal_mass": expected_calibration_error(y, p, n_bins, "quantile"),
        "calibration_slope": logistic.slope,
        "calibration_intercept": logistic.intercept,
        "calibration_separated": logistic.separated,
        "reliability": {s: reliability_curve(y, p, n_bins, s).as_dict()
                        for s in ("uniform", "quantile")},
    }


def _threshold_summary(y: np.ndarray, p: np.ndarray, threshold: dict, cohort: str,
                       conf_level: float) -> dict:
    out = dict(threshold)
    if threshold["threshold"] is None:
        out["note"] = "no oof or internal_test predictions: no threshold could be chosen honestly"
        return out
    at = metrics_at_threshold(y, p, threshold["threshold"], conf_level)
    out["threshold_chosen_on_this_cohort"] = threshold["threshold_cohort"] == cohort
    for name in ("sensitivity", "specificity", "ppv", "npv"):
        prop = getattr(at, name)
        out[name] = prop.value
        out[f"{name}_ci"] = list(prop.ci)
        out[f"{name}_fraction"] = [prop.successes, prop.total]
    out["confusion"] = {"tp": at.tp, "fp": at.fp, "tn": at.tn, "fn": at.fn}
    return out


def _roc_points(y: np.ndarray, p: np.ndarray) -> dict:
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=True)
    return {"fpr": fpr, "tpr": tpr, "thresholds": thresholds}


def analyse_cohort(table: pd.DataFrame, cohort: str, models: Sequence[str], reference: str,
                   thresholds: dict, recalibrators: dict | None,
                   settings: CompareSettings, thresholds_after: dict | None = None) -> dict:
    """All statistics of one cohort (one entry of ``stats.json["cohorts"]``)."""
    data = cohort_table(table, cohort, models)
    y, probs = data.y_true, data.y_prob
    cov = delong_covariance(y, probs)
    replicates = bootstrap_auc_replicates(y, probs, data.patient_ids, settings.n_boot,
                                          settings.seed)
    sd = np.sqrt(np.clip(np.diag(cov.covariance), 0.0, None))
    curves = {m: decision_curve(y, probs[k]) for k, m in enumerate(models)}
    first_curve = next(iter(curves.values()))
    out: dict = {
        "n_cases": int(y.size), "n_positive": int(y.sum()),
        "n_patients": int(np.unique(data.patient_ids).size),
        "models": {},
        "comparisons": [],
        "decision_curve": {"thresholds": first_curve.thresholds,
                           "treat_all": first_curve.treat_all,
                           "treat_none": first_curve.treat_none,
                           "net_benefit": {m: c.net_benefit for m, c in curves.items()}},
        "notes": [],
    }
    for k, model in enumerate(models):
        lo, hi = normal_ci(float(cov.auc[k]), float(sd[k]), settings.conf_level)
        entry = {"auc": cov.auc[k], "auc_var": cov.covariance[k, k],
                 "auc_ci": [max(lo, 0.0), min(hi, 1.0)],
                 "auc_ci_bootstrap": list(percentile_ci(replicates[:, k], settings.conf_level))}
        entry.update(calibration_summary(y, probs[k], settings.n_bins))
        entry.update(_threshold_summary(y, probs[k], thresholds[model], cohort,
                                        settings.conf_level))
        if np.isfinite(data.y_std[k]).any():
            entry["mean_y_std"] = float(np.nanmean(data.y_std[k]))
        if np.isfinite(data.spreads["y_contour_std"][k]).any():
            entry["mean_y_contour_std"] = float(np.nanmean(data.spreads["y_contour_std"][k]))
        entry["roc_curve"] = _roc_points(y, probs[k])
        entry["uncertainty"] = _uncertainty_entry(
            data, k, thresholds[model]["threshold"],
            None if recalibrators is None else recalibrators[model],
            None if thresholds_after is None else thresholds_after[model], settings.n_bins)
        if recalibrators is not None and cohort != "oof":
            recalibrated = recalibrators[model].transform(probs[k])
            entry["recalibrated"] = {"method": settings.recalibrate, "fitted_on": "oof",
                                     **calibration_summary(y, recalibrated, settings.n_bins)}
        out["models"][model] = entry
    if reference not in models:
        out["notes"].append(f"reference model {reference} has no {cohort} predictions: "
                            "no comparisons in this cohort")
        return out
    ref = models.index(reference)
    comparisons = []
    for k, model in enumerate(models):
        if k == ref:
            continue
        test = paired_test_from_covariance(cov, k, ref, "two-sided", settings.conf_level)
        comparisons.append({
            "model": model, "reference": reference, "auc_diff": test.difference,
            "z": test.z, "p_value": test.p_value, "p_holm": None, "diff_ci": list(test.ci),
            "diff_ci_bootstrap": list(percentile_ci(replicates[:, k] - replicates[:, ref],
                                                    settings.conf_level)),
            "covariance": test.covariance, "alternative": test.alternative,
        })
    for comparison, adjusted in zip(comparisons, holm([c["p_value"] for c in comparisons])):
        comparison["p_holm"] = float(adjusted)
    out["comparisons"] = comparisons
    return out


def internal_vs_external(table: pd.DataFrame, models: Sequence[str]) -> list[dict]:
    """Unpaired DeLong test of each model's internal_test AUC against its external AUC."""
    results = []
    for model in models:
        rows = table[table["model"] == model]
        internal = rows[rows["cohort"] == "internal_test"]
        external = rows[rows["cohort"] == "external"]
        if internal.empty or external.empty:
            continue
        test = delong_unpaired(internal["y_true"].to_numpy(), internal["y_prob"].to_numpy(),
                               external["y_true"].to_numpy(), external["y_prob"].to_numpy())
        results.append({"model": model, "cohort_a": "internal_test", "cohort_b": "external",
                        "auc_a": test.auc_a, "auc_b": test.auc_b, "auc_diff": test.difference,
                        "d": test.statistic, "df": test.df, "p_value": test.p_value})
    return results


def uncertainty_rules(settings: CompareSettings, thresholds_after: dict | None) -> dict:
    """How the per-model ``uncertainty`` entries were computed (stats.json["uncertainty"])."""
    return {
        "ece_binning": ece_binning(settings.n_bins),
        "crps": "Brier score = CRPS of a binary outcome",
        "wrong_call": "called RN (y_prob >= frozen threshold) differs from y_true",
        "auroc_errors": "AUROC of each uncertainty as a score for the wrong calls (0.5 = chance)",
        "uncertainties": {**SPREAD_DESCRIPTIONS, MARGIN: MARGIN_DESCRIPTION},
        "recalibration": (None if settings.recalibrate is None else
                          f"{settings.recalibrate}, fitted on each model's oof predictions only; "
                          "threshold re-chosen by Youden's J on the recalibrated oof predictions"),
        "thresholds_after_recalibration": thresholds_after,
    }


def compare_predictions(table: pd.DataFrame, reference: str,
                        settings: CompareSettings = CompareSettings(),
                        synthetic: bool | None = None, contour: pd.DataFrame | None = None) -> dict:
    """Every statistic of stats.json from a checked predictions table (:func:`read_predictions`).

    contour: contour predictions (:func:`~rn_classifier.stats.contour.read_contour_predictions`):
    their per-case spread becomes ``y_contour_std`` and their AUC per contour ``stats["contour"]``.
    """
    check_conf_level(settings.conf_level)
    table = add_contour_spread(table, contour)
    if settings.recalibrate is not None:
        check_choice(settings.recalibrate, "recalibrate", ("platt", "isotonic"))
    models = _model_order(table, reference)
    thresholds = choose_thresholds(table, models)
    recalibrators = (fit_recalibrators(table, models, settings.recalibrate)
                     if settings.recalibrate else None)
    thresholds_after = (recalibrated_thresholds(table, models, recalibrators)
                        if recalibrators else None)
    cohorts = {}
    for cohort in COHORTS:
        present = [m for m in models if ((table["model"] == m) & (table["cohort"] == cohort)).any()]
        if not present:
            continue
        try:
            cohorts[cohort] = analyse_cohort(table, cohort, present, reference, thresholds,
                                             recalibrators, settings, thresholds_after)
        except DataIntegrityError:
            raise
        except InputError as exc:
            raise InputError(f"cohort {cohort}: {exc}") from exc
    from_files = synthetic_flag(table)
    stats = {
        "version": STATS_VERSION,
        "reference": reference,
        "synthetic": bool(synthetic) or bool(from_files),
        "settings": asdict(settings),
        "threshold_rule": THRESHOLD_RULE,
        "thresholds": thresholds,
        "uncertainty": uncertainty_rules(settings, thresholds_after),
        "cohorts": cohorts,
        "internal_vs_external": internal_vs_external(table, models),
    }
    if contour is not None:
        known = contour[contour["model"].isin(models)]
        stats["contour"] = {"auc_by_variant": auc_by_variant(known, settings.conf_level),
                            "variants": sorted(set(known["variant"]))}
    return json_ready(stats)


def run_compare(paths: Sequence[str | Path], out: str | Path, reference: str,
                settings: CompareSettings = CompareSettings(),
                synthetic: bool | None = None, clinical_data: dict | None = None,
                contour: str | Path | None = None) -> dict:
    """Read predictions files (and a contour predictions file), compute, and write ``out``
    (stats.json) atomically.

    clinical_data: the study's clinical audit (rn_classifier.data.clinical_audit: missing
    values, unseen levels, what the models imputed), copied into stats.json for the report.
    """
    from ..atomic import write_json
    from ..provenance import run_provenance

    table = read_predictions(paths)
    variants = read_contour_predictions(contour) if contour is not None else None
    stats = compare_predictions(table, reference, settings, synthetic, variants)
    # relative to stats.json's folder, so the report finds them from any working directory
    stats["inputs"] = [os.path.relpath(Path(p).resolve(), Path(out).resolve().parent) for p in paths]
    if contour is not None:
        stats["contour"]["input"] = os.path.relpath(Path(contour).resolve(), Path(out).resolve().parent)
    if clinical_data is not None:
        stats["clinical_data"] = clinical_data
    stats["provenance"] = run_provenance()
    write_json(out, stats)
    return stats

"""``build_report``: stats.json + predictions + run folders → report.html and report.json.

The HTML is rendered from the report.json content alone (Jinja2 template
``templates/report.html``): every number shown is either copied from ``stats.json`` (AUCs, CIs,
p-values, thresholds, operating points, calibration, decision curves) or computed here once and
stored in ``report.json`` (cohort counts, ROC confidence bands, referral curves, attention focus),
never in the template. Figures are PNGs drawn from those same numbers and inlined as base64, so
the file opens anywhere without a network (a USB stick is enough).
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__, atomic
from ..baselines.registry import read_record
from ..errors import InputError
from ..family import ModelFamily, family_of
from . import figures
from .gallery import NO_IMAGE_MODEL, attention_gallery
from .pseudonym import Pseudonymizer, scrub_paths
from .sources import ReportSources, find_sources, resolve_data_path

FORMAT, VERSION = "rn-classifier/report", 1
COHORT_TITLES = {"oof": "Cross-validation (out-of-fold)", "internal_test": "Internal test",
                 "external": "External"}
UNCERTAINTY_COHORTS = ("internal_test", "external")


def _models(stats: dict) -> list[str]:
    ordered = [stats["reference"]]
    for info in stats["cohorts"].values():
        ordered += [m for m in info["models"] if m not in ordered]
    return ordered


FUSION_DESCRIPTIONS = {ModelFamily.IMAGE: "", ModelFamily.LATE: " + clinical (late fusion)",
                       ModelFamily.INTERMEDIATE: " + clinical (intermediate fusion)"}


def _run_description(run_dir: Path) -> dict:
    from ..config import load_config
    from ..finetune.config import FinetuneConfig

    cfg = load_config(FinetuneConfig, run_dir / "config.yaml")
    family = family_of(cfg)
    if family is ModelFamily.CLINICAL:
        kind = "clinical-only logistic regression"
    else:
        init = "self-supervised pretrained" if cfg.model.pretrained else "random init (supervised)"
        kind = f"{cfg.model.arch} ViT, {init}{FUSION_DESCRIPTIONS[family]}"
    return {"description": kind, "n_folds": cfg.cv.n_folds, "test_fraction": cfg.cv.test_fraction,
            "clinical_columns": dict(cfg.clinical), "crop_size": list(cfg.model.crop_size),
            "epochs": cfg.train.epochs, "cfg": cfg}


def _centres_and_missing(sources: ReportSources, descriptions: dict) -> dict:
    """Centres and missing clinical values per cohort, from the manifests the runs name."""
    from ..data.manifest import load_manifest

    out = {}
    for name, info in descriptions.items():
        cfg = info["cfg"]
        if cfg is None:
            continue
        for part, value in (("internal", cfg.data.internal_manifest), ("external", cfg.data.external_manifest)):
            if part in out:
                continue
            path = resolve_data_path(value, sources.finetune_runs[name], sources.root, None)
            if path is None or not path.is_file():
                continue
            try:
                df = load_manifest(path)
            except InputError:          # a manifest whose images moved: counts come from stats only
                continue
            columns = sorted({c for d in descriptions.values() for c in d.get("clinical_columns", {})}
                             & set(df.columns))
            out[part] = {"centres": {str(k): int(v) for k, v in df["center"].value_counts().items()},
                         "n_cases": int(len(df)), "n_patients": int(df["patient_id"].nunique()),
                         "missing_clinical": {c: int(df[c].isna().sum()) for c in columns}}
    return out


def _clinical_imputation(sources: ReportSources, pseudo: Pseudonymizer) -> dict | None:
    """Which clinical values the models imputed (empty ones, and levels unseen internally under
    ``unseen_levels=impute``): the study's audit in stats.json, else a fine-tuning run's."""
    import json

    audit = sources.stats.get("clinical_data")
    for run in ([] if audit else sources.finetune_runs.values()):
        summary = run / "summary.json"
        if summary.is_file() and (audit := json.loads(summary.read_text()).get("clinical_data")):
            break
    if not audit:
        return None
    cohorts = {}
    for name, info in audit["cohorts"].items():
        cohorts[name] = {
            "n_cases": info["n_cases"],
            "imputed": {c: [pseudo.case(k) for k in cases] for c, cases in info["imputed"].items()},
            "unseen_levels": {c: {level: [pseudo.case(k) for k in cases] for level, cases in levels.items()}
                              for c, levels in info["unseen_levels"].items()}}
    return {"policy": audit["policy"], "columns": audit["columns"], "cohorts": cohorts}


def _roc_bands(table: pd.DataFrame, stats: dict) -> dict:
    from ..stats.roc_band import roc_confidence_band

    settings = stats.get("settings", {})
    bands: dict = {}
    for cohort, info in stats["cohorts"].items():
        bands[cohort] = {}
        for model in info["models"]:
            part = table[(table["model"] == model) & (table["cohort"] == cohort)]
            if part["y_true"].nunique() < 2:
                continue
            bands[cohort][model] = roc_confidence_band(
                part["y_true"].to_numpy(), part["y_prob"].to_numpy(), part["patient_id"].astype(str).to_numpy(),
                n_boot=int(settings.get("n_boot", 1000)), conf_level=float(settings.get("conf_level", 0.95)),
                seed=int(settings.get("seed", 0)))
    return bands


def _uncertainty(table: pd.DataFrame, stats: dict, pseudo: Pseudonymizer) -> dict:
    from ..stats.referral import referral_curve

    out: dict = {"referral": {}, "referral_contour": {}, "cases": []}
    thresholds = stats.get("thresholds") or {}
    for cohort in UNCERTAINTY_COHORTS:
        if cohort not in stats["cohorts"]:
            continue
        for key, column in (("referral", "y_std"), ("referral_contour", "y_contour_std")):
            out[key][cohort] = {}
            for model in stats["cohorts"][cohort]["models"]:
                part = table[(table["model"] == model) & (table["cohort"] == cohort)]
                if part[column].notna().all() and part["y_true"].nunique() == 2:
                    out[key][cohort][model] = referral_curve(
                        part["y_true"].to_numpy(), part["y_prob"].to_numpy(), part[column].to_numpy())
    reference = stats["reference"]
    t = (thresholds.get(reference) or {}).get("threshold")
    rows = table[(table["model"] == reference) & table["cohort"].isin(UNCERTAINTY_COHORTS)]
    for _, r in rows.sort_values(["cohort", "y_std"], ascending=[True, False]).iterrows():
        called = None if t is None else int(r["y_prob"] >= t)
        out["cases"].append({"case": pseudo.case(r["case_id"]), "patient": pseudo.patient(r["patient_id"]),
                             "cohort": r["cohort"], "y_true": int(r["y_true"]), "y_prob": float(r["y_prob"]),
                             "y_std": None if pd.isna(r["y_std"]) else float(r["y_std"]),
                             "y_contour_std": None if pd.isna(r["y_contour_std"]) else float(r["y_contour_std"]),
                             "called_rn": called,
                             "correct": None if called is None else called == int(r["y_true"])})
    out["model"] = reference
    return out


def _contour_table(sources: ReportSources) -> pd.DataFrame | None:
    """The contour predictions stats.json was computed with (study stage ``contour``), if any."""
    from ..stats.contour import read_contour_predictions

    recorded = (sources.stats.get("contour") or {}).get("input")
    candidates = [sources.root / "contour" / "contour_predictions.csv"]
    if recorded:
        candidates.insert(0, Path(recorded) if Path(recorded).is_absolute() else sources.stats_path.parent / recorded)
    path = next((c for c in candidates if c.is_file()), None)
    return read_contour_predictions(path) if path is not None and "contour" in sources.stats else None


def _shift(sources: ReportSources, pseudo: Pseudonymizer) -> dict:
    """The label-free shift check of the run (``shift/shift.json``), flagged cases pseudonymised."""
    import json

    path = sources.root / "shift" / "shift.json"
    if not path.is_file():
        return {"available": False, "reason": "no shift/shift.json in the run folder (study stage "
                                              "`shift`, or `rn-classifier shift-check`)"}
    try:
        shift = json.loads(path.read_text(encoding="utf-8"))
        image, cases = shift["image"], shift["image"]["cases"]
        flagged = [{"case": pseudo.case(c["case_id"]), "cohort": c["cohort"], "distance": c["distance"],
                    "furthest": c["furthest"]} for c in cases["cases"] if c["flagged"]]
        return {"available": True, "level": shift["level"], "features": shift["features"],
                # not "image": report.json drops keys of that name (inlined figures)
                "image_statistics": {"cohorts": image["cohorts"], "folds": image["folds"]},
                "scores": shift["scores"],
                "cases": {"threshold": cases["threshold"], "n_flagged": cases["n_flagged"],
                          "internal_flagged_fraction": cases["internal_flagged_fraction"],
                          "flagged": flagged}}
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        return {"available": False, "reason": f"shift/shift.json is not a shift check ({exc!r})"}


def _tripod(report: dict) -> list[dict]:
    """TRIPOD+AI (Collins et al., BMJ 2024) items this run can state by itself."""
    stats_settings = report["settings"]
    cohorts = report["cohorts"]
    sizes = "; ".join(f"{COHORT_TITLES.get(c, c)}: {v['n_cases']} lesions from {v['n_patients']} patients "
                      f"({v['n_positive']} radiation necrosis, {v['n_negative']} progression)"
                      for c, v in cohorts.items())
    sources = report["provenance"]["data"]
    centre_text = "; ".join(f"{part}: " + ", ".join(f"{k} (n={v})" for k, v in info["centres"].items())
                            for part, info in sources.items()) or "not recorded in the run folder"
    missing = "; ".join(f"{part}: " + (", ".join(f"{c} {n}" for c, n in info["missing_clinical"].items())
                                       or "no clinical columns used")
                        for part, info in sources.items()) or "manifests not found from the run folder"
    imputation = report["provenance"]["clinical_imputation"] or {}
    unseen = "; ".join(f"{part}: " + ", ".join(f"{c} level(s) {sorted(levels)}" for c, levels in
                                               info["unseen_levels"].items())
                       for part, info in imputation.get("cohorts", {}).items() if info["unseen_levels"])
    unseen_text = (f" Levels of categorical columns never seen in the internal cohort, treated as missing "
                   f"and imputed: {unseen}." if unseen else "")
    models = "; ".join(f"{m}: {d}" for m, d in report["model_descriptions"].items())
    folds = sorted({d["n_folds"] for d in report["run_settings"].values()})
    return [
        {"item": "Source of data",
         "text": ("SYNTHETIC cohort generated by rn_classifier.data.synth — not patient data. "
                  if report["synthetic"] else "") + f"Centres: {centre_text}."},
        {"item": "Outcome", "text": "Radiation necrosis (1) vs. tumour progression (0) per lesion and time point."},
        {"item": "Sample size", "text": sizes + "."},
        {"item": "Missing data", "text": f"Missing clinical values per column: {missing}. Numeric values are "
                 "imputed with the training-fold median, categorical ones as their own category; the "
                 f"imputation is fitted on training folds only.{unseen_text}"},
        {"item": "Model type and predictors", "text": models + "."},
        {"item": "Validation", "text": f"Patient-level split: internal cross-validation ({', '.join(map(str, folds))} "
                 "folds, out-of-fold predictions), a held-out internal test set and an external cohort from a "
                 "second centre; held-out predictions are the mean of the fold models. The decision threshold "
                 "is frozen on internal out-of-fold predictions; nothing is tuned on the external cohort."},
        {"item": "Performance measures", "text": f"AUC with DeLong {round(100 * stats_settings['conf_level'])} % CI "
                 f"and patient-clustered bootstrap CI ({stats_settings['n_boot']} replicates); paired DeLong "
                 "tests against the reference model with Holm adjustment; sensitivity, specificity, PPV, NPV "
                 "with Wilson intervals at the frozen threshold; decision curves."},
        {"item": "Calibration", "text": f"Brier score, ECE ({stats_settings['n_bins']} equal-width bins), "
                 "calibration slope and intercept (logistic recalibration), reliability diagrams."},
    ]


def _attention(sources: ReportSources, table: pd.DataFrame, stats: dict, pseudo: Pseudonymizer,
               attention_dir: Path | None) -> dict:
    """The attention section; a run folder whose models or caches cannot be read gives a
    section that says why instead of no report at all."""
    try:
        section = attention_gallery(sources, table, stats, pseudo, attention_dir)
    except InputError as exc:
        section = {"available": False, "reason": str(exc)}
    if not section["available"] and pseudo.enabled:
        section["reason"] = scrub_paths(section["reason"], sources.root)
    return section


def missing_sections(report: dict) -> list[str]:
    """Sections the report could not include from what the run folder holds, each with why (an
    attention section of a study without image models is not missing: there is nothing to show)."""
    missing = []
    attention = report["attention"]
    if not attention["available"] and attention.get("reason") != NO_IMAGE_MODEL:
        missing.append(f"attention maps: {attention['reason']}")
    if not report["provenance"]["data"] and report["run_settings"]:
        missing.append("centres and missing clinical values: the manifests the runs name were not found "
                       "(looked beside each run folder, in the working directory and the study folder)")
    return missing


def _model_table(sources: ReportSources, models: list[str]) -> pd.DataFrame:
    """The predictions (with contour spread) of the models stats.json lists; each must be found."""
    from ..stats.contour import add_contour_spread
    from ..stats.predictions import read_predictions

    table = add_contour_spread(read_predictions(sources.prediction_files), _contour_table(sources))
    table = table[table["model"].isin(models)]
    missing = sorted(set(models) - set(table["model"]))
    if missing:
        raise InputError(f"stats.json lists model(s) {missing} whose predictions.csv was not found under "
                         f"{sources.root}")
    return table


def _model_descriptions(sources: ReportSources, models: list[str], table: pd.DataFrame) -> dict:
    """Per model: its description and settings (``cfg``: its fine-tuning config, None for a baseline,
    which is described by the record in its run folder)."""
    descriptions = {}
    for name, run in sources.finetune_runs.items():
        if name in models:
            try:
                descriptions[name] = _run_description(run)
            except InputError:
                continue
    for path in sources.prediction_files:      # models without a fine-tuning run: the baselines
        folder = path.parent
        record = read_record(folder) or {}
        for model in set(table.loc[table["source"] == str(path), "model"]) - set(descriptions):
            kind = record.get("description", "model")
            descriptions[model] = {"description": f"{kind}; run folder {folder.name}/", "cfg": None}
    return descriptions


def _provenance(sources: ReportSources, descriptions: dict, pseudo: Pseudonymizer) -> dict:
    """What made the report: code versions, config, input files, data centres and imputation."""
    stats = sources.stats
    provenance = sources.provenance or stats.get("provenance", {})
    clean = (lambda text: scrub_paths(text, sources.root)) if pseudo.enabled else (lambda text: text)
    return {
        "git_sha": provenance.get("git_sha"), "date": provenance.get("date"),
        "versions": provenance.get("versions", {}),
        "stats_git_sha": stats.get("provenance", {}).get("git_sha"),
        "stats_date": stats.get("provenance", {}).get("date"),
        "config_name": sources.config_name, "config": clean(sources.config_text),
        "inputs": [str(p.relative_to(sources.root)) if p.is_relative_to(sources.root) else p.name
                   for p in sources.prediction_files],
        "stats_file": (str(sources.stats_path.relative_to(sources.root))
                       if sources.stats_path.is_relative_to(sources.root) else sources.stats_path.name),
        "data": _centres_and_missing(sources, descriptions),
        "clinical_imputation": _clinical_imputation(sources, pseudo),
        "pseudonyms": pseudo.salt_source,
    }


def _cohort_counts(stats: dict) -> dict:
    return {c: {"n_cases": i["n_cases"], "n_positive": i["n_positive"],
                "n_negative": i["n_cases"] - i["n_positive"], "n_patients": i["n_patients"],
                "title": COHORT_TITLES.get(c, c)} for c, i in stats["cohorts"].items()}


def assemble(sources: ReportSources, pseudo: Pseudonymizer, attention_dir: Path | None) -> dict:
    """Everything the report shows, as JSON-ready data (the content of report.json)."""
    stats = sources.stats
    models = _models(stats)
    table = _model_table(sources, models)
    synthetic = bool(stats.get("synthetic")) or bool(sources.provenance.get("synthetic"))
    descriptions = _model_descriptions(sources, models, table)
    report = {
        "format": FORMAT, "version": VERSION, "synthetic": synthetic, "pseudonymized": pseudo.enabled,
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "generator": f"rn-classifier {__version__}",
        "reference": stats["reference"], "models": models, "settings": stats.get("settings", {}),
        "threshold_rule": stats.get("threshold_rule"),
        "provenance": _provenance(sources, descriptions, pseudo),
        "cohorts": _cohort_counts(stats),
        "model_descriptions": {m: d["description"] for m, d in descriptions.items()},
        "run_settings": {m: {k: v for k, v in d.items() if k != "cfg"} for m, d in descriptions.items()
                         if d["cfg"] is not None},
        "roc_bands": _roc_bands(table, stats),
        "uncertainty": _uncertainty(table, stats, pseudo),
        "shift": _shift(sources, pseudo),
        "attention": _attention(sources, table, stats, pseudo, attention_dir),
    }
    report["tripod"] = _tripod(report)
    report["missing_sections"] = missing_sections(report)
    return report


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    return f"{value:.{digits}f}"


def _fmt_p(value) -> str:
    if value is None:
        return "—"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _fmt_ci(ci, digits: int = 3) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "—"
    separator = " to " if min(ci) < 0 else "–"     # "−0.3–−0.1" would be unreadable
    return f"{ci[0]:.{digits}f}{separator}{ci[1]:.{digits}f}"


def render(report: dict, stats: dict) -> str:
    """The HTML text: template + report + stats, figures drawn from their numbers."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("rn_classifier.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined)
    env.filters.update(fmt=_fmt, fmt_p=_fmt_p, fmt_ci=_fmt_ci,
                       pct=lambda v: "—" if v is None else f"{100 * v:.1f} %")
    colours = figures.colour_map(report["models"])
    synthetic = report["synthetic"]
    plots = {}
    for cohort, info in stats["cohorts"].items():
        title = COHORT_TITLES.get(cohort, cohort)
        plots[cohort] = {
            "roc": figures.data_uri(figures.roc_figure(info, report["roc_bands"].get(cohort, {}), colours,
                                                       f"ROC — {title}", synthetic)),
            "reliability": figures.data_uri(figures.reliability_figure(info, colours, f"Reliability — {title}",
                                                                       synthetic)),
            "decision": figures.data_uri(figures.decision_figure(info, colours, f"Decision curve — {title}",
                                                                 synthetic)),
        }
    referral = {c: figures.data_uri(figures.referral_figure(curves, colours, f"Referral — {COHORT_TITLES[c]}",
                                                            synthetic))
                for c, curves in report["uncertainty"]["referral"].items() if curves}
    referral_contour = {c: figures.data_uri(figures.referral_figure(
        curves, colours, f"Referral by contour spread — {COHORT_TITLES[c]}", synthetic))
        for c, curves in report["uncertainty"]["referral_contour"].items() if curves}
    by_cohort: dict = {}
    for model, cohorts in ((stats.get("contour") or {}).get("auc_by_variant") or {}).items():
        for cohort, variants in cohorts.items():
            by_cohort.setdefault(cohort, {})[model] = variants
    contour_plots = {c: figures.data_uri(figures.contour_auc_figure(
        m, colours, f"AUC under each contour — {COHORT_TITLES.get(c, c)}", synthetic))
        for c, m in by_cohort.items()}
    template = env.get_template("report.html")
    return template.render(report=report, stats=stats, plots=plots, referral=referral,
                           referral_contour=referral_contour, contour_plots=contour_plots,
                           cohort_titles=COHORT_TITLES, colours=colours)


def _without_images(value):
    if isinstance(value, dict):
        return {k: _without_images(v) for k, v in value.items() if k != "image"}
    if isinstance(value, list):
        return [_without_images(v) for v in value]
    return value


def build_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None,
                 pseudonymize: bool = False, stats: str | os.PathLike | None = None,
                 salt_file: str | os.PathLike | None = None) -> Path:
    """Write ``report.html`` (default ``RUN_DIR/report/report.html``), ``report.json`` beside it and
    the gallery's attention NIfTI files in ``attention/`` beside it; returns the HTML path.

    run_dir: a study run folder, or a single fine-tuning run folder with ``stats`` given.
    pseudonymize: salted-hash case and patient ids (salt: ``salt_file``, else
        ``$RN_PSEUDONYM_SALT``, else random for this report), no absolute paths of this machine.
    """
    sources = find_sources(run_dir, stats)
    out = Path(out) if out else sources.root / "report" / "report.html"
    if out.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"--out {out}: the report is an HTML file; give a name ending in .html")
    pseudo = Pseudonymizer(pseudonymize, salt_file=salt_file)
    report = assemble(sources, pseudo, attention_dir=out.parent / "attention")
    html = render(report, sources.stats)
    atomic.write_json(out.with_name("report.json"), _without_images(report))
    with atomic.atomic_path(out, suffix=".html") as tmp:
        tmp.write_text(html, encoding="utf-8")      # whatever the process locale says
    return out

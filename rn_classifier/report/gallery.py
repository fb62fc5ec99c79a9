"""Attention over the held-out cases: focus numbers for every case and a gallery of examples.

The maps come from the fine-tuning run of one image model (the reference model when it is an
image model), recomputed with :mod:`rn_classifier.explain` on the cached crops the model was
evaluated on (centre crop of the lesion-centred cache crop, as in fine-tuning's evaluation), for
the ``internal_test`` and ``external`` cases. Focus numbers are computed on the crop (training
spacing); the gallery shows RN and progression cases, each correctly and wrongly classified at the
frozen threshold (the most confident examples of each group). Crop maps are saved as NIfTI with
the crop's world affine (they overlay the original image in 3D Slicer).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from .figures import data_uri
from .sources import ReportSources, resolve_data_path

GALLERY_COHORTS = ("internal_test", "external")
# The reason given when a study has no image model: the report treats it as "nothing to show",
# not as a missing section.
NO_IMAGE_MODEL = "no fine-tuned image model in the run folder"
GROUPS = (("RN, correct", 1, True), ("RN, wrong", 1, False),
          ("progression, correct", 0, True), ("progression, wrong", 0, False))


def _choose_model(sources: ReportSources, reference: str):
    from ..predict.model import load_model

    names = [reference] + [m for m in sources.finetune_runs if m != reference]
    reasons = []
    for name in names:
        if name not in sources.finetune_runs:
            continue
        try:
            run = load_model(sources.finetune_runs[name])
        except InputError as exc:
            reasons.append(f"{name}: {exc}")
            continue
        if run.uses_images:
            return run, sources.finetune_runs[name], reasons
    return None, None, reasons or [NO_IMAGE_MODEL]


def _summary(values: list[float]) -> dict:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return {"n": 0, "median": None, "q1": None, "q3": None}
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {"n": int(v.size), "median": float(med), "q1": float(q1), "q3": float(q3)}


def _held_out_data(sources: ReportSources, run, image_run) -> tuple[dict, dict]:
    """({cohort: CropCache}, {cohort: manifest by case_id}) of the held-out cohorts, found from the
    image run's config (as written, relative to the study, or in ``RUN/cache/``)."""
    from ..data.cache import CropCache
    from ..data.manifest import load_manifest

    data = image_run.cfg.data
    caches, manifests = {}, {}
    for cohort, cache_value, manifest_value, part in (
            ("internal_test", data.internal_cache, data.internal_manifest, "internal"),
            ("external", data.external_cache, data.external_manifest, "external")):
        path = resolve_data_path(cache_value, image_run.run_dir, sources.root, sources.root / "cache" / part)
        if path is not None:
            caches[cohort] = CropCache(path)
        if run.clinical_spec:
            mpath = resolve_data_path(manifest_value, image_run.run_dir, sources.root, None)
            if mpath is not None:
                manifests[cohort] = load_manifest(mpath, clinical=run.clinical_spec).set_index("case_id", drop=False)
    return caches, manifests


def _case_maps(run, row, cache, manifests: dict, threshold, pseudo) -> dict:
    """One held-out case: the fold models' mean attention on its evaluation crop, focus numbers."""
    from ..data.crop import centre_crop, centre_offset, crop_affine
    from ..explain.focus import attention_focus
    from ..explain.geometry import upsample_to_crop
    from ..explain.maps import AttentionMaps

    prep = run.preprocessing
    index = int(cache.rows_for([row["case_id"]])[0])
    full = cache[index]
    start = centre_offset(full.shape[1:], prep.crop_size)     # the crop fine-tuning evaluated
    crop = np.asarray(centre_crop(full, prep.crop_size))
    clinical = None
    if run.clinical_spec:
        clinical = manifests[row["cohort"]].loc[[row["case_id"]], list(run.clinical_spec)].reset_index(drop=True)
    maps = AttentionMaps.mean(run.predict(crop, clinical, with_attention=True).maps)
    cls_crop = upsample_to_crop(maps.cls_mean, crop.shape[1:])
    rollout_crop = upsample_to_crop(maps.rollout, crop.shape[1:])
    lesion = crop[1] > 0.5
    affine_text = cache.index.loc[index, "affine"] if "affine" in cache.index.columns else None
    affine = (crop_affine(np.asarray(json.loads(affine_text), float).reshape(4, 4), start)
              if isinstance(affine_text, str) else None)
    prob = float(row["y_prob"])
    called = None if threshold is None else int(prob >= threshold)
    return {"case": pseudo.case(row["case_id"]), "patient": pseudo.patient(row["patient_id"]),
            "cohort": row["cohort"], "y_true": int(row["y_true"]), "y_prob": prob,
            "y_std": None if pd.isna(row.get("y_std")) else float(row["y_std"]),
            "called_rn": called, "correct": None if called is None else called == int(row["y_true"]),
            "focus": attention_focus(cls_crop, lesion, prep.spacing),
            "focus_rollout": attention_focus(rollout_crop, lesion, prep.spacing),
            "_crop": crop, "_map": cls_crop, "_affine": affine}


def _gallery(cases: list[dict], run, threshold, synthetic: bool, out_dir: Path | None,
             per_group: int, map_name: str) -> list[dict]:
    """The most confident ``per_group`` cases of each group (RN / progression, right / wrong):
    overlay PNG and, with ``out_dir``, the map as NIfTI on the crop's world grid."""
    from ..explain.figures import overlay_png
    from ..explain.geometry import Grid, save_map_nifti

    spacing = run.preprocessing.spacing
    gallery = []
    for title, label, correct in GROUPS:
        group = [c for c in cases if c["y_true"] == label and c["correct"] is correct]
        # most confident first: far from the threshold
        group.sort(key=lambda c: -abs(c["y_prob"] - (threshold or 0.5)))
        for c in group[:per_group]:
            lesion = c["_crop"][1] > 0.5
            center = np.argwhere(lesion).mean(axis=0) if lesion.any() else np.asarray(lesion.shape) / 2
            png = overlay_png(c["_crop"][0], c["_map"], lesion, spacing, center,
                              f"{c['case']} ({c['cohort']}): true {'RN' if label else 'progression'}, "
                              f"P(RN) {c['y_prob']:.2f}" + (" — SYNTHETIC DATA" if synthetic else ""))
            entry = {k: v for k, v in c.items() if not k.startswith("_")}
            entry.update(group=title, image=data_uri(png))
            if out_dir is not None and c["_affine"] is not None:
                name = f"{c['case']}_attention.nii.gz"
                save_map_nifti(c["_map"], Grid(tuple(c["_map"].shape), c["_affine"]), out_dir / name,
                               f"{run.name} {map_name} (crop)")
                entry["nifti"] = f"attention/{name}"
            gallery.append(entry)
    return gallery


def _focus_summary(cases: list[dict]) -> dict:
    summary = {}
    for cohort in GALLERY_COHORTS:
        part = [c for c in cases if c["cohort"] == cohort]
        if part:
            summary[cohort] = {
                "n_cases": len(part),
                "in_mask": _summary([c["focus"]["in_mask"] for c in part]),
                "in_margin": _summary([c["focus"]["in_margin"] for c in part]),
                "mask_fraction": _summary([c["focus"]["mask_fraction"] for c in part]),
                "enrichment": _summary([c["focus"]["enrichment"] for c in part]),
                "rollout_in_mask": _summary([c["focus_rollout"]["in_mask"] for c in part]),
            }
    return summary


def attention_gallery(sources: ReportSources, predictions: pd.DataFrame, stats: dict,
                      pseudo, out_dir: Path | None, per_group: int = 2) -> dict:
    """Focus numbers of every held-out case of one image model, and the gallery (report.json part)."""
    from ..explain.maps import map_description
    from ..finetune.bundle import RunFolder

    run, run_dir, reasons = _choose_model(sources, stats["reference"])
    if run is None:
        return {"available": False, "reason": "; ".join(reasons)}
    image_run = RunFolder(run_dir).image_run()     # whose config names the caches
    threshold = (stats.get("thresholds") or {}).get(run.name, {}).get("threshold")
    caches, manifests = _held_out_data(sources, run, image_run)
    rows = predictions[(predictions["model"] == run.name) & predictions["cohort"].isin(list(caches))]
    if rows.empty:
        data = image_run.cfg.data
        return {"available": False, "model": run.name,
                "reason": "the preprocess caches of the held-out cohorts were not found "
                          f"(looked for {data.internal_cache} and {data.external_cache}, and in "
                          f"{sources.root.name}/cache/)"}
    if run.clinical_spec and set(rows["cohort"]) - set(manifests):
        return {"available": False, "model": run.name,
                "reason": f"{run.name} needs the clinical values of the cases; manifest not found"}
    cases = [_case_maps(run, row, caches[row["cohort"]], manifests, threshold, pseudo)
             for _, row in rows.iterrows()]
    map_name = map_description(image_run.cfg.model.pool)
    return {"available": True, "model": run.name, "image_model": image_run.name,
            "map": f"{map_name}, mean over heads and fold models",
            "margin_mm": cases[0]["focus"]["margin_mm"] if cases else None,
            "threshold": threshold, "summary": _focus_summary(cases),
            "gallery": _gallery(cases, run, threshold, bool(stats.get("synthetic")), out_dir, per_group,
                                map_name),
            "cases": [{k: v for k, v in c.items() if not k.startswith("_")} for c in cases]}

"""Small images, masks and MOLAB-like trees built inside tests (no data files in the repo)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd


def sphere(shape, center, radius) -> np.ndarray:
    grid = np.indices(shape).astype(float)
    d2 = sum((g - c) ** 2 for g, c in zip(grid, center))
    return d2 <= radius**2


def head_volume(shape=(40, 44, 36), seed=0) -> np.ndarray:
    """A crude head: a bright ellipsoid on a dark background, with noise (int16)."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(float)
    c = (np.asarray(shape) - 1) / 2
    r = np.asarray(shape) * 0.42
    inside = sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grid, c, r)) <= 1
    vol = np.where(inside, 600.0, 5.0) + rng.normal(0, 10, shape)
    return np.clip(vol, 0, None).astype(np.int16)


def save_nifti(array, path, affine=None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(np.asarray(array), affine), str(path))
    return path


def write_case(folder, patient, timepoint, lesions, shape=(40, 44, 36), seed=0, affine=None):
    """One MOLAB study: image with bright lesions + mask coded lesion*10 + segment."""
    nifti = Path(folder) / patient / patient / "NIFTI"
    img = head_volume(shape, seed).astype(np.int16)
    msk = np.zeros(shape, np.int16)
    for number, center, radius in lesions:
        rim = sphere(shape, center, radius)
        core = sphere(shape, center, radius * 0.5)
        img[rim] = 1200
        img[core] = 300
        msk[rim] = number * 10 + 1
        msk[core] = number * 10 + 2
    save_nifti(img, nifti / f"{patient}_{timepoint}_img.nii.gz", affine)
    save_nifti(msk, nifti / f"{patient}_{timepoint}_msk.nii.gz", affine)
    return nifti


def write_tiny_molab(root, n_patients=6, seed=0) -> dict:
    """A small MOLAB tree + labels CSV + two-header-row clinical spreadsheet."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    labels, clinical = [], []
    for p in range(n_patients):
        patient = f"P{p:03d}"
        n_lesions = 1 + p % 2
        lesions = [(k + 1, (12 + 14 * k, 22, 18), 4 + k) for k in range(n_lesions)]
        for t, timepoint in enumerate(("t1", "t2")[: 1 + (p % 3 == 0)]):
            write_case(root / "tree", patient, timepoint, lesions, seed=seed + 10 * p + t)
        for number, _, _ in lesions:
            label = int((p + number) % 2)
            labels.append({"patient": patient, "timepoint": "", "lesion": number, "label": label})
            clinical.append([patient, int(rng.integers(40, 80)), 1 + p % 2, 2.5, number, 1 + p % 4,
                             20.0, 1, 6.0, p % 2])
    pd.DataFrame(labels).to_csv(root / "labels.csv", index=False)
    header = pd.DataFrame([["Demographics", "", "", "", "Lesion", "", "Treatment", "", "", ""],
                           ["ID", "Age", "Sex", "GPA", "Lesion", "Primary", "Dose", "Fx", "Months", "Steroids"]])
    sheet = pd.concat([header, pd.DataFrame(clinical)], ignore_index=True)
    sheet.to_excel(root / "clinical.xlsx", header=False, index=False)
    return {"tree": root / "tree", "labels": root / "labels.csv", "clinical": root / "clinical.xlsx"}


# -- a tiny trained study (report, predict and attention tests) ----------------------------------

CROP_NORM = {"method": "zscore_foreground", "clip_percentiles": [0.5, 99.5]}


def write_crop_cohort(root, n_internal=12, n_external=4, crop=32, spacing=2.0, seed=0) -> Path:
    """A SYNTHETIC labelled cohort written directly as manifests + preprocess caches.

    Each patient has 2 lesions; a crop is noise with a cubic lesion in its centre, bright for
    radiation necrosis (1) and dark for progression (0), so a tiny ViT learns it in one epoch.
    Clinical columns ``age`` (numeric, shifted by label) and ``sex`` (categorical). The cache
    index carries each crop's affine, as ``rn-classifier preprocess`` writes it.
    """
    import json

    from rn_classifier.data.cache import write_cache

    root = Path(root)
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for cohort, n_patients, prefix in (("internal", n_internal, "INT"), ("external", n_external, "EXT")):
        rows, crops, affines = [], [], []
        for p in range(n_patients):
            label = p % 2
            for lesion in range(2):
                cid = f"{prefix}-{p:03d}_L{lesion}"
                rows.append({"case_id": cid, "patient_id": f"{prefix}-{p:03d}", "center": cohort,
                             "image": f"images/{cid}.nii.gz", "mask": f"masks/{cid}.nii.gz",
                             "mask_labels": "1", "label": label, "synthetic": 1,
                             "age": round(float(rng.normal(60 + 6 * label, 8)), 1),
                             "sex": str(rng.choice(["F", "M"]))})
                image = rng.normal(0, 1, (crop,) * 3).astype(np.float32)
                mask = np.zeros((crop,) * 3, np.float32)
                c, r = crop // 2, int(rng.integers(3, 6))
                mask[c - r:c + r, c - r:c + r, c - r:c + r] = 1
                image += mask * (2.0 if label else -2.0)
                crops.append(np.stack([image, mask]))
                affine = np.diag([spacing, spacing, spacing, 1.0])
                affine[:3, 3] = [10.0 * p, -5.0 * lesion, 3.0]
                affines.append(json.dumps(affine.ravel().tolist()))
        df = pd.DataFrame(rows)
        df.to_csv(root / f"{cohort}.csv", index=False)
        index = df[["case_id", "patient_id", "center", "label", "synthetic"]].copy()
        index["affine"] = affines
        write_cache(root / "cache" / cohort, np.stack(crops), index,
                    {"spacing": [spacing] * 3, "channels": ["t1ce", "mask"], "normalisation": CROP_NORM,
                     "synthetic": True})
    return root


def tiny_encoder_export(folder, crop=32, spacing=2.0) -> Path:
    """A randomly initialised ``vit3d_tiny_p8`` encoder export (stands in for pretraining)."""
    import torch

    from rn_classifier.models import create_model
    from rn_classifier.models.export import save_encoder

    torch.manual_seed(0)
    model = create_model("vit3d_tiny_p8", img_size=crop, in_chans=1)
    return save_encoder(model, folder, arch="vit3d_tiny_p8", crop_size=[crop] * 3,
                        spacing=[spacing] * 3, normalisation=CROP_NORM, config={"note": "test export"})


def write_contour_predictions(prediction_files, path) -> Path:
    """Contour predictions (stats.contour) of the image models' held-out cases, made up: the
    original contour = the model's y_prob, erode / dilate = y_prob ∓ a case-dependent shift."""
    rows = []
    for file in prediction_files:
        frame = pd.read_csv(file, dtype={"case_id": str, "patient_id": str})
        if frame["model"].iloc[0] == "clinical":
            continue
        for i, r in enumerate(frame[frame["cohort"] != "oof"].itertuples()):
            shift = 0.01 * (i % 5)
            for variant, p in (("original", r.y_prob), ("erode", r.y_prob - shift), ("dilate", r.y_prob + shift)):
                rows.append({"model": r.model, "case_id": r.case_id, "patient_id": r.patient_id,
                             "cohort": r.cohort, "y_true": r.y_true, "variant": variant,
                             "y_prob": float(np.clip(p, 0.0, 1.0)), "synthetic": True})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def tiny_study_run(root, crop=32, n_boot=200) -> Path:
    """A study run folder (the layout of rn_classifier.study.run) with 3 fine-tuned models and compare/stats.json.

    ``ssl_vit`` (random "pretrained" export), ``supervised_vit``, ``clinical`` and
    ``ssl_vit_clinical_late`` (stacked on the ``ssl_vit`` run) on :func:`write_crop_cohort`,
    3 folds, 1 epoch each; reference model ``ssl_vit``.
    """
    import json

    from rn_classifier.config import load_config
    from rn_classifier.finetune.config import FinetuneConfig
    from rn_classifier.finetune.bundle import record_thresholds
    from rn_classifier.finetune.run import run_finetune
    from rn_classifier.shift.run import record_case_reference, run_shift_check
    from rn_classifier.stats.compare import CompareSettings, run_compare

    root = Path(root)
    cohort = write_crop_cohort(root / "cohort", crop=crop)
    encoder = tiny_encoder_export(root / "pretrain" / "encoder", crop=crop)
    configs = Path(__file__).resolve().parents[1] / "configs" / "finetune"
    common = [f"data.internal_manifest={cohort / 'internal.csv'}",
              f"data.external_manifest={cohort / 'external.csv'}",
              f"data.internal_cache={cohort / 'cache' / 'internal'}",
              f"data.external_cache={cohort / 'cache' / 'external'}",
              "cv.n_folds=3", f"model.crop_size=[{crop},{crop},{crop}]", "train.epochs=1",
              "train.batch_size=8", "train.accelerator=cpu", "augment.enabled=false"]
    split = root / "finetune" / "clinical" / "split.csv"
    for config, extra in (("clinical", []),
                          ("ssl", [f"data.split={split}"]),
                          ("supervised", [f"data.split={split}"]),
                          ("ssl_clinical_late", [f"fusion.image_run={root / 'finetune' / 'ssl_vit'}"])):
        cfg = load_config(FinetuneConfig, configs / f"{config}_demo.yaml", common + extra)
        if cfg.clinical:
            cfg.clinical = {"age": "numeric", "sex": "categorical"}
        run_finetune(cfg, root / "finetune" / cfg.name,
                     encoder_dir=encoder if config == "ssl" else None, echo=lambda line: None)
    predictions = sorted((root / "finetune").glob("*/predictions.csv"))
    contour = write_contour_predictions(predictions, root / "contour" / "contour_predictions.csv")
    run_compare(predictions, root / "compare" / "stats.json", "ssl_vit",
                CompareSettings(n_boot=n_boot, recalibrate="isotonic"), contour=contour)
    record_thresholds(root / "compare" / "stats.json", [p.parent for p in predictions])  # as the study
    shift = run_shift_check([cohort / "cache" / "internal", cohort / "cache" / "external"], predictions,
                            root / "shift", n_draws=50)
    record_case_reference(shift, [p.parent / "bundle" for p in predictions])   # as the study
    (root / "provenance.json").write_text(json.dumps(
        {"git_sha": "0" * 40, "date": "2026-01-01T00:00:00+00:00", "synthetic": True,
         "versions": {"rn-classifier": "0.1.0"}}))
    (root / "study.yaml").write_text("name: tiny test study\nreference: ssl_vit\n")
    return root


SERIES_UID = "1.2.826.0.1.3680043.2.1125.7.1"


def write_dicom_series(array_zyx, spacing, origin, folder, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1),
                       uid=SERIES_UID) -> Path:
    """A minimal MR DICOM series (one file per slice) of a (Z, Y, X) int16 array, via
    SimpleITK; ``spacing``/``origin``/``direction`` in SimpleITK's (x, y, z) LPS convention.

    UIDs derive from ``uid``: series ``uid``, study ``uid.1``, frame of reference ``uid.2``,
    slice ``k``'s SOP instance ``uid.3.<k+1>``."""
    import SimpleITK as sitk

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(np.asarray(array_zyx, dtype=np.int16))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in origin))
    image.SetDirection(tuple(float(d) for d in direction))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    # GDCM's writer resets the process locale to "C" (text I/O would turn ASCII): restore it
    import locale

    saved = locale.setlocale(locale.LC_ALL)
    try:
        _write_slices(image, writer, uid, spacing, folder)
    finally:
        locale.setlocale(locale.LC_ALL, saved)
    return folder


def _write_slices(image, writer, series, spacing, folder) -> None:
    d = image.GetDirection()
    orientation = "\\".join(str(v) for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    for i in range(image.GetDepth()):
        slice_ = image[:, :, i]
        position = "\\".join(str(v) for v in image.TransformIndexToPhysicalPoint((0, 0, i)))
        for tag, value in (("0008|0060", "MR"), ("0008|0016", "1.2.840.10008.5.1.4.1.1.4"),
                           ("0008|0018", f"{series}.3.{i + 1}"), ("0020|000e", series),
                           ("0020|000d", series + ".1"), ("0020|0052", series + ".2"),
                           ("0020|0037", orientation), ("0020|0032", position),
                           ("0020|0013", str(i)), ("0028|0030", f"{spacing[1]}\\{spacing[0]}"),
                           ("0018|0050", str(spacing[2]))):
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{i:03d}.dcm"))
        writer.Execute(slice_)

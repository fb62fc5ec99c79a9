"""End to end: the five fine-tuning configs on a small fake cohort, split reuse, resume, bad input.

The cohort is written directly as manifests + crop caches (``write_cache``), 18 internal
patients with 2 lesions each and 6 external patients; the models are ``vit3d_tiny_p8`` on 16³
crops taken from 24³ cached crops, 1 epoch, 3 folds — the shipped demo configs with paths and
sizes overridden, so the configs themselves are exercised.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rn_classifier.config import load_config
from rn_classifier.data.cache import write_cache
from rn_classifier.data.split import load_split
from rn_classifier.errors import InputError
from rn_classifier.finetune.config import FinetuneConfig
from rn_classifier.finetune.run import run_finetune
from rn_classifier.predictions import read_predictions

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "finetune"
NORM = {"method": "zscore_foreground", "clip_percentiles": [0.5, 99.5]}
CROP, MODEL_CROP = 24, 16


def write_fake_cohort(root: Path, n_internal=18, n_external=6, seed=0, labels=None) -> Path:
    """Manifests + caches of a toy cohort whose lesion intensity and age carry the label."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for cohort, n_patients, prefix in (("internal", n_internal, "INT"), ("external", n_external, "EXT")):
        rows, crops = [], []
        for p in range(n_patients):
            label = (p % 2) if labels is None else labels
            for lesion in range(2):
                cid = f"{prefix}-{p:03d}_L{lesion}"
                rows.append({"case_id": cid, "patient_id": f"{prefix}-{p:03d}", "center": cohort,
                             "image": f"images/{cid}.nii.gz", "mask": f"masks/{cid}.nii.gz",
                             "mask_labels": "1", "label": label, "synthetic": 1,
                             "age": rng.normal(60 + 6 * label, 8), "sex": rng.choice(["F", "M"]),
                             "primary": str(rng.choice([1, 2, 4])), "gpa": rng.uniform(1, 4),
                             "dose_gy": rng.choice([18, 20, 24]), "fractions": 1,
                             "months_since_srs": rng.uniform(3, 24), "steroids": rng.choice(["0", "1"])})
                image = rng.normal(0, 1, (CROP,) * 3).astype(np.float32)
                mask = np.zeros((CROP,) * 3, np.float32)
                c, r = CROP // 2, int(rng.integers(3, 6))
                mask[c - r:c + r, c - r:c + r, c - r:c + r] = 1
                image += mask * (1.5 if label else -1.5)
                crops.append(np.stack([image, mask]))
        df = pd.DataFrame(rows)
        df.loc[1, "age"] = np.nan  # a missing clinical value: imputed
        df.to_csv(root / f"{cohort}.csv", index=False)
        index = df[["case_id", "patient_id", "center", "label", "synthetic"]].copy()
        write_cache(root / f"cache_{cohort}", np.stack(crops), index,
                    {"spacing": [2.0, 2.0, 2.0], "channels": ["t1ce", "mask"], "normalisation": NORM,
                     "synthetic": True})
    return root


def export_encoder(folder: Path) -> Path:
    import torch

    from rn_classifier.models import create_model
    from rn_classifier.models.export import save_encoder

    torch.manual_seed(0)
    model = create_model("vit3d_tiny_p8", img_size=MODEL_CROP, in_chans=1)
    return save_encoder(model, folder, arch="vit3d_tiny_p8", crop_size=[MODEL_CROP] * 3,
                        spacing=[2.0, 2.0, 2.0], normalisation=NORM, config={"note": "test export"})


def small(root: Path, *extra: str) -> list[str]:
    return [f"data.internal_manifest={root / 'internal.csv'}",
            f"data.external_manifest={root / 'external.csv'}",
            f"data.internal_cache={root / 'cache_internal'}",
            f"data.external_cache={root / 'cache_external'}",
            "cv.n_folds=3", f"model.crop_size=[{MODEL_CROP},{MODEL_CROP},{MODEL_CROP}]",
            "train.epochs=1", "train.batch_size=8", "train.accelerator=cpu", *extra]


def demo_config(name: str, root: Path, *extra: str) -> FinetuneConfig:
    return load_config(FinetuneConfig, CONFIGS / f"{name}_demo.yaml", small(root, *extra))


MODELS = {  # config file -> model name in predictions.csv
    "clinical": "clinical",
    "ssl": "ssl_vit",
    "ssl_clinical_late": "ssl_vit_clinical_late",
    "ssl_clinical_intermediate": "ssl_vit_clinical_intermediate",
    "supervised": "supervised_vit",
}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """All five demo configs on the fake cohort; the clinical run makes the split, the others reuse it."""
    root = write_fake_cohort(tmp_path_factory.mktemp("cohort"))
    encoder = export_encoder(root / "pretrain_run")
    runs = root / "runs"
    logs = {}
    split = runs / "clinical" / "split.csv"
    for config, name in MODELS.items():
        extra = [] if config == "clinical" else [f"data.split={split}"]
        if config == "ssl_clinical_intermediate":
            extra.append("fusion.cross_attention=true")
        lines: list[str] = []
        run_finetune(demo_config(config, root, *extra), runs / name,
                     encoder_dir=encoder if config.startswith("ssl") else None, echo=lines.append)
        logs[name] = lines
    return {"root": root, "runs": runs, "encoder": encoder, "logs": logs}


def test_every_model_predicts_oof_internal_test_and_external(study):
    root, runs = study["root"], study["runs"]
    internal = pd.read_csv(root / "internal.csv", dtype={"case_id": str})
    external = pd.read_csv(root / "external.csv", dtype={"case_id": str})
    split = load_split(runs / "clinical" / "split.csv")
    train_ids = set(split.loc[split["part"] == "train", "case_id"])
    test_ids = set(split.loc[split["part"] == "internal_test", "case_id"])
    assert train_ids | test_ids == set(internal["case_id"])
    for name in MODELS.values():
        preds = read_predictions(runs / name / "predictions.csv")
        assert set(preds["model"]) == {name}
        by = {c: set(g["case_id"]) for c, g in preds.groupby("cohort")}
        assert by == {"oof": train_ids, "internal_test": test_ids, "external": set(external["case_id"])}
        assert not preds.duplicated(["cohort", "case_id"]).any()
        held = preds[preds["cohort"] != "oof"]
        assert (held["fold"] == -1).all() and held["y_std"].notna().all() and (held["y_std"] >= 0).all()
        assert (preds["synthetic"] == 1).all()
        truth = pd.concat([internal, external]).set_index("case_id")["label"]
        np.testing.assert_array_equal(preds["y_true"], truth.loc[preds["case_id"]].to_numpy())
        assert (runs / name / "config.yaml").is_file() and (runs / name / "provenance.json").is_file()
        for k in range(3):
            fold = runs / name / "folds" / f"fold_{k}"
            assert (fold / "predictions.csv").is_file()
    # fold checkpoints of the image models: safetensors weights, no pickled Lightning checkpoint
    for name in ("ssl_vit", "supervised_vit", "ssl_vit_clinical_intermediate"):
        fold = runs / name / "folds" / "fold_0"
        assert (fold / "model.safetensors").is_file() and not (fold / "lightning").exists()
    assert (runs / "ssl_vit_clinical_intermediate" / "folds" / "fold_0" / "clinical_preprocessor.json").is_file()
    assert (runs / "clinical" / "folds" / "fold_0" / "clinical_model.json").is_file()
    assert (runs / "ssl_vit_clinical_late" / "folds" / "fold_0" / "late_fusion.json").is_file()


def test_internal_test_is_the_mean_of_the_fold_models(study):
    run = study["runs"] / "ssl_vit"
    folds = pd.concat([pd.read_csv(run / "folds" / f"fold_{k}" / "predictions.csv",
                                   dtype={"case_id": str}) for k in range(3)])
    held = folds[folds["cohort"] == "external"].groupby("case_id")["y_prob"]
    preds = read_predictions(run / "predictions.csv").set_index("case_id")
    ext = preds[preds["cohort"] == "external"]
    np.testing.assert_allclose(ext["y_prob"], held.mean().loc[ext.index])
    np.testing.assert_allclose(ext["y_std"], held.std(ddof=0).loc[ext.index])


def test_split_is_by_patient_and_shared_by_every_model(study):
    runs = study["runs"]
    ref = pd.read_csv(runs / "clinical" / "split.csv", dtype=str)
    sides = ref["part"].where(ref["part"] == "internal_test", "fold" + ref["fold"])
    assert (sides.groupby(ref["patient_id"]).nunique() == 1).all()  # no patient on two sides
    for name in MODELS.values():
        pd.testing.assert_frame_equal(pd.read_csv(runs / name / "split.csv", dtype=str), ref)
        preds = read_predictions(runs / name / "predictions.csv")
        oof = preds[preds["cohort"] == "oof"].set_index("case_id")["fold"]
        expected = ref[ref["part"] == "train"].set_index("case_id")["fold"].astype(int)
        pd.testing.assert_series_equal(oof.sort_index(), expected.loc[oof.index].sort_index(),
                                       check_names=False)
    assert any("reusing" in line and "split.csv" in line for line in study["logs"]["ssl_vit"])


def test_late_fusion_without_image_run_trains_its_image_model_on_the_same_split(study):
    run = study["runs"] / "ssl_vit_clinical_late"
    image = run / "image_model"
    assert (image / "predictions.csv").is_file()
    pd.testing.assert_frame_equal(pd.read_csv(image / "split.csv", dtype=str),
                                  pd.read_csv(run / "split.csv", dtype=str))


def test_late_fusion_reuses_a_finished_image_run(study, tmp_path):
    root, runs = study["root"], study["runs"]
    cfg = demo_config("ssl_clinical_late", root, f"fusion.image_run={runs / 'ssl_vit'}")
    lines: list[str] = []
    run_finetune(cfg, tmp_path / "late", echo=lines.append)
    assert not (tmp_path / "late" / "image_model").exists()   # nothing retrained
    assert not any("training on" in line for line in lines)
    preds = read_predictions(tmp_path / "late" / "predictions.csv")
    assert set(preds["cohort"]) == {"oof", "internal_test", "external"}
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "late" / "split.csv", dtype=str),
                                  pd.read_csv(runs / "ssl_vit" / "split.csv", dtype=str))


def test_resume_retrains_only_incomplete_folds(study, tmp_path):
    root = study["root"]
    run = tmp_path / "resume"
    shutil.copytree(study["runs"] / "ssl_vit", run)
    before = pd.read_csv(run / "predictions.csv")
    (run / "folds" / "fold_1" / "predictions.csv").unlink()
    lines: list[str] = []
    cfg = demo_config("ssl", root, f"data.split={study['runs'] / 'clinical' / 'split.csv'}")
    run_finetune(cfg, run, encoder_dir=study["encoder"], echo=lines.append)
    assert [line for line in lines if line.startswith("fold 0:")] == [f"fold 0: complete in {run / 'folds' / 'fold_0'}, reused"]
    assert any(line.startswith("fold 1: training on") for line in lines)
    after = pd.read_csv(run / "predictions.csv")
    same = before["fold"] != 1
    pd.testing.assert_frame_equal(before[same & (before["cohort"] == "oof")],
                                  after[same & (after["cohort"] == "oof")])
    other = load_config(FinetuneConfig, CONFIGS / "ssl_demo.yaml", small(root, "optim.lr=0.5"))
    with pytest.raises(InputError, match="different settings"):
        run_finetune(other, run, encoder_dir=study["encoder"], echo=lambda s: None)


# -- bad input ---------------------------------------------------------------------------------

def test_one_class_only_is_refused_with_counts(tmp_path):
    root = write_fake_cohort(tmp_path / "c", labels=1)
    with pytest.raises(InputError, match=r"36 radiation necrosis \(1\), 0 progression \(0\)"):
        run_finetune(demo_config("clinical", root), tmp_path / "run", echo=lambda s: None)
    assert not (tmp_path / "run" / "predictions.csv").exists()


def test_fewer_patients_than_folds_is_refused(tmp_path):
    root = write_fake_cohort(tmp_path / "c", n_internal=4)
    with pytest.raises(InputError, match="4 patients are too few for 5 folds"):
        run_finetune(demo_config("clinical", root, "cv.n_folds=5"), tmp_path / "run", echo=lambda s: None)


def test_missing_clinical_column_is_refused(tmp_path):
    root = write_fake_cohort(tmp_path / "c")
    pd.read_csv(root / "internal.csv").drop(columns="gpa").to_csv(root / "internal.csv", index=False)
    with pytest.raises(InputError, match=r"clinical column\(s\) \['gpa'\] named in the config are missing"):
        run_finetune(demo_config("clinical", root), tmp_path / "run", echo=lambda s: None)


def test_external_ids_colliding_with_internal_ones_are_refused(tmp_path):
    root = write_fake_cohort(tmp_path / "c")
    ext = pd.read_csv(root / "external.csv")
    ext.loc[0, "case_id"] = "INT-000_L0"
    ext.to_csv(root / "external.csv", index=False)
    with pytest.raises(InputError, match=r"case_ids present in both internal and external cohorts: \['INT-000_L0'\]"):
        run_finetune(demo_config("clinical", root), tmp_path / "run", echo=lambda s: None)


def test_split_with_other_fold_count_is_refused(study, tmp_path):
    split = study["runs"] / "clinical" / "split.csv"
    cfg = demo_config("clinical", study["root"], f"data.split={split}", "cv.n_folds=4")
    with pytest.raises(InputError, match="has 3 folds but cv.n_folds is 4"):
        run_finetune(cfg, tmp_path / "run", echo=lambda s: None)


def test_cli_runs_a_config_and_reports_bad_input(study, tmp_path, capsys):
    from rn_classifier.cli import main

    root = study["root"]
    args = ["finetune", "--config", str(CONFIGS / "clinical_demo.yaml"), "--out", str(tmp_path / "cli")]
    for item in small(root):
        args += ["--set", item]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "external" in out and "AUC" in out and "SYNTHETIC" in out
    assert (tmp_path / "cli" / "predictions.csv").is_file()
    bad = args + ["--set", "clinical.smoking=numeric", "--out", str(tmp_path / "cli2")]
    assert main(bad) == 2
    assert "smoking" in capsys.readouterr().err


def test_fold_subsets_complete_the_run_only_when_every_fold_is_done(study, tmp_path):
    """Cluster array jobs train one fold each; predictions.csv appears with the last fold."""
    cfg = demo_config("clinical", study["root"], f"data.split={study['runs'] / 'clinical' / 'split.csv'}")
    run = tmp_path / "array"
    assert run_finetune(cfg, run, folds=[0], echo=lambda s: None) == {"complete": False, "folds_complete": [0]}
    assert not (run / "predictions.csv").exists()
    assert run_finetune(cfg, run, folds=[2, 1], echo=lambda s: None)["complete"]
    pd.testing.assert_frame_equal(pd.read_csv(run / "predictions.csv"),
                                  pd.read_csv(study["runs"] / "clinical" / "predictions.csv"))
    with pytest.raises(InputError, match=r"fold\(s\) \[3\] do not exist"):
        run_finetune(cfg, run, folds=[3], echo=lambda s: None)


def test_checkpoint_choice_keeps_the_last_or_the_best_epoch(study, tmp_path):
    """train.checkpoint=last keeps the final epoch's weights (the oof AUC is not picked on the
    oof cases); best keeps the epoch with the fold's best validation AUC. model.json records
    the pooling the predict command rebuilds."""
    import json

    root, split = study["root"], study["runs"] / "clinical" / "split.csv"
    for choice in ("last", "best"):
        cfg = demo_config("supervised", root, f"data.split={split}", "train.epochs=2",
                          f"train.checkpoint={choice}", "train.early_stopping_patience=null",
                          "model.pool=mask")
        run_finetune(cfg, tmp_path / choice, echo=lambda s: None)
        for k in range(3):
            fold = json.loads((tmp_path / choice / "folds" / f"fold_{k}" / "fold.json").read_text())
            meta = json.loads((tmp_path / choice / "folds" / f"fold_{k}" / "model.json").read_text())
            assert fold["checkpoint"] == choice and meta["pool"] == "mask"
            if choice == "last":
                assert fold["kept_epoch"] == 1 and fold["best_val_auc"] is None
            else:
                assert 0 <= fold["kept_epoch"] <= 1 and fold["best_val_auc"] >= fold["last_val_auc"] - 1e-6


def test_last_checkpoint_with_early_stopping_is_refused(tmp_path):
    from rn_classifier.errors import ConfigError
    from rn_classifier.finetune.config import validate_config

    cfg = demo_config("ssl", tmp_path, "train.checkpoint=last", "train.early_stopping_patience=5")
    with pytest.raises(ConfigError, match="train.early_stopping_patience=null"):
        validate_config(cfg)


def test_every_model_family_has_a_trainer_step_and_a_missing_one_is_named(monkeypatch):
    """run_finetune dispatches on the family through TRAINER_STEPS: every family is an entry, and
    a family left out is an error that lists the families that have one."""
    from rn_classifier.family import ModelFamily
    from rn_classifier.finetune import run

    assert set(run.TRAINER_STEPS) == set(ModelFamily)
    monkeypatch.delitem(run.TRAINER_STEPS, ModelFamily.LATE)
    with pytest.raises(InputError, match=r"no step for the model family 'late'; known: image, intermediate, clinical"):
        run.trainer_step(ModelFamily.LATE)

"""The study runner: the whole chain on the SYNTHETIC `mini` cohort with one-epoch budgets
(configs/study/tiny.yaml), resume bookkeeping, label-efficiency subsets, bad config input.

One run of the study (about a minute on 2 cores) is shared by the tests of this module; the
tests that run it again change only cheap stages.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rn_classifier.errors import ConfigError, InputError
from rn_classifier.study.commands import parse_fractions
from rn_classifier.study.label_efficiency import subset_split
from rn_classifier.study.run import Study, load_study_config
from rn_classifier.study.stages import StageBook, stage_key

TINY = "configs/study/tiny.yaml"
MODELS = ("ssl_vit", "ssl_vit_clinical_late", "ssl_vit_clinical_intermediate", "supervised_vit",
          "clinical")


def _run(out: Path, overrides=(), fractions=None) -> tuple[dict, list[str]]:
    cfg = load_study_config(TINY, list(overrides))
    if fractions is not None:
        cfg.label_efficiency.fractions = fractions
    lines: list[str] = []
    return Study(cfg, out, echo=lines.append).run(), lines


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "run"
    result, lines = _run(out, fractions=[0.5, 1.0])
    return {"out": out, "result": result, "lines": lines}


def test_every_stage_writes_its_folder_of_the_run_layout(study):
    out = study["out"]
    for cohort in ("internal", "external", "unlabeled"):
        assert (out / "cohort" / "manifests" / f"{cohort}.csv").is_file()
        assert (out / "cache" / cohort).is_dir()
    assert (out / "pretrain" / "encoder.json").is_file()
    for model in MODELS:
        preds = pd.read_csv(out / "finetune" / model / "predictions.csv")
        assert set(preds["model"]) == {model}
        assert set(preds["cohort"]) == {"oof", "internal_test", "external"}
    assert (out / "radiomics" / "predictions.csv").is_file()
    stats = json.loads((out / "compare" / "stats.json").read_text())
    assert stats["reference"] == "ssl_vit_clinical_late" and stats["synthetic"] is True
    assert set(stats["cohorts"]["external"]["models"]) == {*MODELS, "radiomics"}
    assert json.loads((out / "provenance.json").read_text())["synthetic"] is True
    assert (out / "study.yaml").is_file()
    stages = json.loads((out / "stages.json").read_text())["stages"]
    assert all(entry["status"] == "done" for entry in stages.values())
    assert {"cohort", "check-data", "preprocess", "split", "pretrain", "radiomics",
            "label_efficiency", "compare", "shift", "report"} <= set(stages)
    shift = json.loads((out / "shift" / "shift.json").read_text())
    assert shift["synthetic"] is True and set(shift["scores"]) == {*MODELS, "radiomics"}
    assert set(shift["image"]["cohorts"]) == {"internal_test", "external"}
    assert {"slice_mm", "noise", "z_smoothness"} <= set(shift["features"])
    from rn_classifier.models.bundle import shift_reference
    from rn_classifier.shift.check import case_reference

    for model in MODELS:            # the shift stage records its internal range into the bundles
        recorded = shift_reference(out / "finetune" / model / "bundle")
        assert recorded == (None if model == "clinical" else case_reference(shift)), model
    contour = pd.read_csv(out / "contour" / "contour_predictions.csv")
    assert set(contour["cohort"]) == {"internal_test", "external"}
    assert {"original", "erode", "dilate", "jitter0", "jitter1"} <= set(contour["variant"])
    assert set(contour["model"]) == set(MODELS) - {"clinical"}
    assert set(stats["contour"]["auc_by_variant"]) == set(MODELS) - {"clinical"}


def test_every_model_uses_the_one_split_of_the_run(study):
    out = study["out"]
    split = pd.read_csv(out / "split.csv", dtype=str)
    test_cases = set(split.loc[split["part"] == "internal_test", "case_id"])
    for model in [*MODELS, "radiomics"]:
        folder = out / ("finetune" if model != "radiomics" else "") / (model if model != "radiomics" else "radiomics")
        preds = pd.read_csv(folder / "predictions.csv", dtype={"case_id": str})
        assert set(preds.loc[preds["cohort"] == "internal_test", "case_id"]) == test_cases


@pytest.mark.parametrize("model", ["ssl_vit", "ssl_vit_clinical_late", "ssl_vit_clinical_intermediate"])
def test_predict_from_the_bundle_alone_gives_the_studys_probability(study, model, tmp_path):
    """`rn-classifier predict --model BUNDLE` on an internal-test case's image and mask files (and
    its clinical values) gives the probability the study's predictions.csv holds, with every run
    folder moved away: the bundle is all predict reads."""
    import math

    from rn_classifier.cli import main
    from rn_classifier.data.manifest import load_manifest
    from rn_classifier.models.bundle import ModelBundle

    out = study["out"]
    bundle = shutil.copytree(out / "finetune" / model / "bundle", tmp_path / "bundle")
    preds = pd.read_csv(out / "finetune" / model / "predictions.csv", dtype={"case_id": str})
    spec = ModelBundle(bundle).clinical_spec
    manifest = load_manifest(out / "cohort" / "manifests" / "internal.csv", clinical=spec).set_index("case_id")
    moved = out / "finetune.moved"
    (out / "finetune").rename(moved)
    try:
        for _, row in preds[preds["cohort"] == "internal_test"].head(2).iterrows():
            case = manifest.loc[row["case_id"]]
            clinical = [f"{c}={case[c]}" for c in spec if not (isinstance(case[c], float) and math.isnan(case[c]))]
            args = ["predict", "--model", str(bundle), "--image", str(case["image_path"]),
                    "--mask", str(case["mask_path"]), "--out", str(tmp_path / row["case_id"]),
                    "--mask-labels", ",".join(str(v) for v in case["mask_labels"])]
            assert main(args + [a for c in clinical for a in ("--clinical", c)]) == 0
            written = json.loads((tmp_path / row["case_id"] / "prediction.json").read_text())
            assert written["shift"]["available"] and written["shift"]["reference"] == "bundle"
            assert written["probability_rn"] == pytest.approx(row["y_prob"], abs=1e-5)
            assert written["fold_spread_sd"] == pytest.approx(row["y_std"], abs=1e-5)
    finally:
        moved.rename(out / "finetune")
    stats = json.loads((out / "compare" / "stats.json").read_text())
    assert written["threshold"]["value"] == stats["thresholds"][model]["threshold"]


def test_each_intermediate_fold_is_rebuilt_with_its_own_clinical_width(study, tmp_path):
    """The one-hot levels of a fold come from its own training cases, so fold networks of one
    intermediate-fusion model can take clinical vectors of different widths. The export records
    each fold's width (as its model.json has it) and the bundle builds each fold with it: a fold
    one column wider than fold 0 loads, where building every fold like fold 0 cannot."""
    from safetensors.torch import save_file

    from rn_classifier.finetune.cv import fold_dir
    from rn_classifier.models.bundle import META_NAME, NETWORKS, ModelBundle, weights_name
    from rn_classifier.models.vit3d import VisionTransformer3D

    run = study["out"] / "finetune" / "ssl_vit_clinical_intermediate"
    meta = json.loads((run / "bundle" / META_NAME).read_text())
    widths = [f["n_clinical"] for f in meta["folds"]]
    assert widths == [json.loads((fold_dir(run, k) / "model.json").read_text())["fusion"]["n_clinical"]
                      for k in range(len(widths))]
    bundle = shutil.copytree(run / "bundle", tmp_path / "bundle")
    arch = meta["architecture"]
    wider = widths[0] + 1
    network = NETWORKS[arch["network"]](VisionTransformer3D(**arch["encoder"]),
                                        {**arch, "fusion": {**arch["fusion"], "n_clinical": wider}})
    save_file({n: t.contiguous() for n, t in network.state_dict().items()}, str(bundle / weights_name(1)))
    meta["folds"][1]["n_clinical"] = wider
    (bundle / META_NAME).write_text(json.dumps(meta))
    loaded = [net.clinical_mlp[0].in_features for net in ModelBundle(bundle).networks()]
    assert loaded == [widths[0], wider, *widths[2:]]


def test_a_second_run_does_no_work(study):
    result, lines = _run(study["out"], fractions=[0.5, 1.0])
    assert result["ran"] == []
    assert "finetune:ssl_vit" in result["skipped"] and "pretrain" in result["skipped"]


def test_label_efficiency_curve_keeps_the_test_sets_and_shrinks_training(study):
    out = study["out"]
    curve = pd.read_csv(out / "label_efficiency" / "curve.csv")
    assert set(curve["model"]) == {"ssl_vit", "supervised_vit"}
    assert set(curve["fraction"]) == {0.5, 1.0}
    assert set(curve["cohort"]) == {"internal_test", "external"}
    # the same test cases at every fraction, fewer training patients at 0.5
    assert curve.groupby("cohort")["n_cases"].nunique().eq(1).all()
    per_fraction = curve.groupby("fraction")["n_train_patients"].first()
    assert per_fraction[0.5] < per_fraction[1.0]
    assert np.isfinite(curve["auc"]).all()
    meta = json.loads((out / "label_efficiency" / "curve.json").read_text())
    assert meta["synthetic"] is True and meta["reference"] == "ssl_vit"
    assert (out / meta["runs"]["supervised_vit"]["0.50"] / "predictions.csv").is_file()


def test_subsets_are_nested_by_patient_with_both_classes_in_every_fold():
    rng = np.random.default_rng(0)
    patients = [f"P{i:02d}" for i in range(40)]
    rows = []
    for i, p in enumerate(patients):
        for lesion in range(1 + i % 3):
            rows.append({"case_id": f"{p}_L{lesion}", "patient_id": p,
                         "part": "internal_test" if i < 8 else "train", "fold": -1 if i < 8 else i % 4,
                         "label": int(rng.random() < 0.4)})
    split = pd.DataFrame(rows)
    labels = split.set_index("case_id")["label"]
    kept = {f: subset_split(split, labels, f, seed=0) for f in (0.1, 0.25, 0.5, 1.0)}
    for small, large in ((0.1, 0.25), (0.25, 0.5), (0.5, 1.0)):
        assert set(kept[small]["patient_id"]) <= set(kept[large]["patient_id"])
    for f, sub in kept.items():
        assert set(sub.loc[sub["part"] == "internal_test", "case_id"]) == \
            set(split.loc[split["part"] == "internal_test", "case_id"])
        # whole patients only
        per_patient = split.groupby("patient_id").size()
        assert (sub.groupby("patient_id").size() == per_patient[sub["patient_id"].unique()]).all()
        train = sub[sub["part"] == "train"]
        for _, fold in train.groupby("fold"):
            assert set(labels[fold["case_id"]]) == {0, 1}
    assert kept[0.1]["patient_id"].nunique() < kept[0.5]["patient_id"].nunique()


def test_stage_keys_change_with_settings_and_upstream():
    base = stage_key({"a": 1}, ["u1"])
    assert base == stage_key({"a": 1}, ["u1"])
    assert base != stage_key({"a": 2}, ["u1"])
    assert base != stage_key({"a": 1}, ["u2"])


def test_a_failed_stage_is_recorded_and_run_again(tmp_path):
    book = StageBook(tmp_path, echo=lambda m: None)
    with pytest.raises(RuntimeError):
        book.run("x", "k1", lambda stale: (_ for _ in ()).throw(RuntimeError("boom")))
    assert json.loads((tmp_path / "stages.json").read_text())["stages"]["x"]["status"] == "failed"
    seen = []
    book.run("x", "k1", lambda stale: seen.append(stale))
    assert seen == [False]          # same key: resumed, not replaced
    book.run("x", "k2", lambda stale: seen.append(stale))
    assert seen == [False, True]    # other key: outputs replaced


@pytest.mark.parametrize("name", ["demo", "tiny", "paper_synthetic_cpu", "paper_synthetic_gpu"])
def test_shipped_synthetic_study_configs_and_their_stage_configs_load(name, tmp_path):
    """A typo in a study YAML or in one of its dotted overrides would only surface minutes into
    a run; every stage config a shipped synthetic study names must load with its overrides."""
    from rn_classifier.baselines.radiomics_config import RadiomicsConfig
    from rn_classifier.baselines.radiomics_config import validate_config as validate_radiomics
    from rn_classifier.config import load_config
    from rn_classifier.data.preprocess import PreprocessConfig
    from rn_classifier.finetune.config import validate_config as validate_finetune
    from rn_classifier.pretrain.methods import load_pretrain_config
    from rn_classifier.study.config import resolve_path

    cfg = load_study_config(f"configs/study/{name}.yaml")
    assert cfg.data.source == "synth"
    load_config(PreprocessConfig, resolve_path(cfg.preprocess.config), cfg.preprocess.set)
    if cfg.pretrain.enabled:
        load_pretrain_config(resolve_path(cfg.pretrain.config), cfg.pretrain.set)
    if cfg.radiomics.enabled:
        validate_radiomics(load_config(RadiomicsConfig, resolve_path(cfg.radiomics.config),
                                       cfg.radiomics.set))
    said = []
    study = Study(cfg, tmp_path / "run", echo=said.append)
    models = study.finetune_models()
    assert cfg.compare.reference in models
    for model in models.values():
        validate_finetune(model)
        assert model.cv.n_folds == cfg.split.n_folds
    study._warn_unlike_baselines(models)   # the supervised baseline differs only by its init
    assert said == []


def test_a_baseline_unlike_the_pretrained_encoder_is_pointed_out(tmp_path):
    said = []
    study = Study(load_study_config(TINY), tmp_path / "run", echo=said.append)
    models = study.finetune_models()
    models["supervised_vit"].model.pos_embed_type = "sincos"    # the tiny study's DINO: learned
    study._warn_unlike_baselines(models)
    assert len(said) == 1 and "supervised_vit" in said[0] and "pos_embed_type=learn" in said[0]


def test_bad_study_config_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="data.source must be one of"):
        load_study_config(TINY, ["data.source=dicom"])
    with pytest.raises(ConfigError, match=r"data.synth.format must be one of \['nifti', 'dicom-rt'\], got 'dicom'"):
        load_study_config(TINY, ["data.synth.format=dicom"])
    with pytest.raises(ConfigError, match="data.internal.manifest"):
        load_study_config(TINY, ["data.source=manifests"])
    with pytest.raises(ConfigError, match="label_efficiency.fractions"):
        load_study_config(TINY, ["label_efficiency.fractions=[0.0,1.0]"])
    with pytest.raises(ConfigError, match="compare.reference 'nope'"):
        Study(load_study_config(TINY, ["compare.reference=nope"]), tmp_path / "run").run()
    with pytest.raises(InputError, match="label-fractions"):
        parse_fractions("0.1,abc")
    with pytest.raises(InputError, match="label-fractions"):
        parse_fractions("0.5,1.5")
    assert parse_fractions("0.1,0.25,0.5,1.0") == [0.1, 0.25, 0.5, 1.0]


# The two tests below change the shared run in place (a run folder is not meant to be moved:
# fine-tuning runs record their absolute input paths), so they come last.
def test_an_interrupted_stage_resumes_and_reruns_what_reads_it(study):
    out = study["out"]
    # supervised_vit "stopped" after its first fold: fold 1 and the run's outputs are missing
    run_dir = out / "finetune" / "supervised_vit"
    shutil.rmtree(run_dir / "folds" / "fold_1")
    (run_dir / "predictions.csv").unlink()
    book = json.loads((out / "stages.json").read_text())
    book["stages"]["finetune:supervised_vit"]["status"] = "running"
    (out / "stages.json").write_text(json.dumps(book))

    result, lines = _run(out, fractions=[0.5, 1.0])
    assert result["ran"][0] == "finetune:supervised_vit"
    assert "compare" in result["ran"] and "finetune:ssl_vit" in result["skipped"]
    assert "pretrain" in result["skipped"] and "radiomics" in result["skipped"]
    assert (run_dir / "predictions.csv").is_file()
    assert not any("fold 0: training" in line for line in lines)    # fold 0 was kept


def test_a_changed_model_config_reruns_only_that_model_and_what_follows(study):
    out = study["out"]
    result, _ = _run(out, ["finetune.models.clinical.set=[logistic.C=0.5]"], fractions=[0.5, 1.0])
    assert result["ran"] == ["finetune:clinical", "compare", "shift", "report"]
    config = (out / "finetune" / "clinical" / "config.yaml").read_text()
    assert "C: 0.5" in config


def _coin_baseline_run(run) -> dict:
    """A toy baseline: a score from each case id's checksum (no learning), written as seam 2."""
    import zlib

    from rn_classifier.data.manifest import load_manifest
    from rn_classifier.data.split import load_split
    from rn_classifier.predictions import write_predictions

    internal = load_manifest(run.internal, require_labels=True)
    split = load_split(run.split, internal)
    rows = internal.merge(split[["case_id", "part", "fold"]], on="case_id")
    frames = [rows.assign(cohort=np.where(rows["part"] == "train", "oof", "internal_test"),
                          fold=np.where(rows["part"] == "train", rows["fold"], -1))]
    if run.external is not None:
        frames.append(load_manifest(run.external, require_labels=True).assign(cohort="external", fold=-1))
    preds = pd.concat(frames, ignore_index=True)
    preds = preds.assign(model="coin", y_true=preds["label"].astype(int), y_std=np.nan,
                         y_prob=[zlib.crc32(c.encode()) / 2**32 for c in preds["case_id"]])
    run.out.mkdir(parents=True, exist_ok=True)
    write_predictions(preds, run.out / "predictions.csv")
    return {"auc": {}}


def test_a_baseline_registered_from_this_file_is_run_compared_and_reported(study):
    """Registered here alone (no package edit) and named in the study config, a toy baseline runs
    as a stage of its own; compare and the report take it like any model. Last in this module:
    it adds a model to the shared study."""
    from rn_classifier.baselines.registry import BASELINES, Baseline, register_baseline

    register_baseline(Baseline(name="coin", description="coin-toss baseline (toy, from a test)",
                               model_name=lambda config, overrides: "coin",
                               settings=lambda config, overrides: {"toy": 1}, run=_coin_baseline_run))
    try:
        out = study["out"]
        result, _ = _run(out, ["baselines.coin.enabled=true"], fractions=[0.5, 1.0])
        # the coin stage, and what reads every model (an earlier test's config change reverts too)
        assert "coin" in result["ran"] and "compare" in result["ran"] and result["ran"][-1] == "report"
        assert "finetune:ssl_vit" in result["skipped"] and "radiomics" in result["skipped"]
        preds = pd.read_csv(out / "coin" / "predictions.csv")
        assert set(preds["cohort"]) == {"oof", "internal_test", "external"}
        stats = json.loads((out / "compare" / "stats.json").read_text())
        assert "coin" in stats["cohorts"]["external"]["models"]
        compared = {c["model"] for c in stats["cohorts"]["internal_test"]["comparisons"]}
        assert "coin" in compared                       # DeLong against the reference model
        report = json.loads((out / "report" / "report.json").read_text())
        assert "coin" in report["models"]
        assert report["model_descriptions"]["coin"].startswith("coin-toss baseline (toy, from a test)")
    finally:
        BASELINES.pop("coin", None)


@pytest.mark.parametrize("monitor_epochs", [0, 10])
def test_pretraining_reads_the_internal_cache_and_split_of_this_run(monitor_epochs, tmp_path):
    """configs/pretrain/dino_vitb.yaml names paper_run/... paths; in a study they are this run's,
    with the label-efficiency monitor on or off (its split keeps the internal-test patients out of
    the pool), never the YAML's."""
    cfg = load_study_config("configs/study/paper_synthetic_gpu.yaml")
    cfg.pretrain.set = [*cfg.pretrain.set, f"monitor.every_n_epochs={monitor_epochs}"]
    study = Study(cfg, tmp_path / "run")
    pretrain = study.pretrain_config()
    assert pretrain.data.split == str(study.split_path)
    assert pretrain.data.internal_cache == str(study.cache("internal"))
    tiny = Study(load_study_config(TINY), tmp_path / "tiny").pretrain_config()   # dino_demo.yaml: none
    assert tiny.data.split is None and tiny.data.internal_cache is None

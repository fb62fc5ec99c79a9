"""``rn-classifier predict`` with a tiny model trained on a SYNTHETIC cohort (session fixture).

Checks: the fold models reload to the run's own predictions; a new NIfTI case and the real brain1
NRRD scan (0.78 × 0.78 × 6.5 mm, LPS) give every output with the image's grid and affine; the
threshold is the one frozen on out-of-fold predictions; bad inputs are refused with one clear
message and nothing written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from builders import head_volume, save_nifti, sphere, write_dicom_series

from rn_classifier.cli import main
from rn_classifier.data.cache import CropCache
from rn_classifier.errors import InputError
from rn_classifier.explain.geometry import stored_grid
from rn_classifier.predict import frozen_threshold, load_model, predict_case
from rn_classifier.predict.inputs import prepare_case


@pytest.fixture(scope="module")
def ssl_run(tiny_study):
    return load_model(tiny_study / "finetune" / "ssl_vit")


@pytest.fixture(scope="module")
def new_case(tmp_path_factory):
    """A head with one lesion on an LAS grid with 1 × 1 × 3 mm voxels (not the training grid)."""
    folder = tmp_path_factory.mktemp("new_case")
    affine = np.array([[-1.0, 0, 0, 30.0], [0, 1.0, 0, -40.0], [0, 0, 3.0, -20.0], [0, 0, 0, 1]])
    shape = (70, 76, 24)
    image = head_volume(shape, seed=3)
    lesion = sphere(shape, (30, 40, 12), 5)
    image[lesion] = 1500
    mask = np.where(lesion, 11, 0).astype(np.int16)
    mask[sphere(shape, (30, 40, 12), 2)] = 12
    return {"image": save_nifti(image, folder / "t1ce.nii.gz", affine),
            "mask": save_nifti(mask, folder / "mask.nii.gz", affine), "affine": affine, "shape": shape}


def test_fold_models_reload_to_the_runs_own_predictions(tiny_study, ssl_run):
    """Held-out predictions recomputed from the saved fold models equal predictions.csv."""
    preds = pd.read_csv(tiny_study / "finetune" / "ssl_vit" / "predictions.csv", dtype={"case_id": str})
    external = preds[preds["cohort"] == "external"].head(3)
    cache = CropCache(tiny_study / "cohort" / "cache" / "external")
    for _, row in external.iterrows():
        crop = cache[int(cache.rows_for([row["case_id"]])[0])]
        out = ssl_run.predict(crop, None, with_attention=True)
        assert out.probs.mean() == pytest.approx(row["y_prob"], abs=1e-5)
        assert out.probs.std() == pytest.approx(row["y_std"], abs=1e-5)
        assert len(out.maps) == ssl_run.n_folds and out.maps[0].cls_heads.shape == (3, 4, 4, 4)


def test_threshold_comes_from_stats_or_the_same_function_on_the_runs_oof(tiny_study, ssl_run, tmp_path):
    stats = json.loads((tiny_study / "compare" / "stats.json").read_text())
    from_stats = frozen_threshold(ssl_run)
    assert from_stats["value"] == stats["thresholds"]["ssl_vit"]["threshold"]
    assert "stats.json" in from_stats["source"] and from_stats["chosen_on"] == "oof"
    alone = tmp_path / "alone" / "ssl_vit"                   # no study around it: no compare/stats.json
    shutil.copytree(tiny_study / "finetune" / "ssl_vit", alone, ignore=shutil.ignore_patterns("bundle"))
    own = frozen_threshold(load_model(alone))
    assert own["value"] == pytest.approx(from_stats["value"]) and "predictions.csv" in own["source"]


def test_predict_writes_every_output_on_the_images_grid(ssl_run, new_case, tmp_path):
    result = predict_case(ssl_run.folder, new_case["image"], new_case["mask"], tmp_path / "out",
                          mask_labels=[11, 12], run=ssl_run)
    written = json.loads((tmp_path / "out" / "prediction.json").read_text())
    assert written["probability_rn"] == pytest.approx(result["probability_rn"])
    assert 0.0 <= written["probability_rn"] <= 1.0
    assert written["probability_rn"] == pytest.approx(np.mean(written["fold_probabilities"]))
    assert written["fold_spread_sd"] == pytest.approx(np.std(written["fold_probabilities"]))
    assert written["synthetic_model"] is True and "SYNTHETIC" in written["warning"]
    called_rn = written["probability_rn"] >= written["threshold"]["value"]
    expected = "radiation necrosis" if called_rn else "tumour progression"
    assert written["decision"] == expected
    assert written["model"]["name"] == "ssl_vit" and written["model"]["rn_classifier_version"]
    for name in ("attention.nii.gz", "attention_rollout.nii.gz"):
        img = nib.load(str(tmp_path / "out" / name))
        np.testing.assert_allclose(img.affine, new_case["affine"], atol=1e-5)
        assert img.shape == new_case["shape"] and np.asarray(img.dataobj).max() > 0
    heads = nib.load(str(tmp_path / "out" / "attention_heads.nii.gz"))
    assert heads.shape == (*new_case["shape"], 3)
    np.testing.assert_allclose(np.asarray(heads.dataobj).mean(axis=-1),
                               np.asarray(nib.load(str(tmp_path / "out" / "attention.nii.gz")).dataobj),
                               rtol=1e-5, atol=1e-9)                 # the map is the head mean
    png = (tmp_path / "out" / "attention.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    focus = written["attention"]["focus"]
    assert 0 < focus["in_mask"] <= focus["in_margin"] <= 1
    assert str(tmp_path) not in json.dumps(written)          # file names only, no machine paths


@pytest.mark.real_data
def test_predict_on_real_brain1_scan_places_the_map_on_the_lesion(ssl_run, brain1, tmp_path):
    result = predict_case(ssl_run.folder, brain1["image"], brain1["mask"], tmp_path / "brain1", run=ssl_run)
    grid = stored_grid(brain1["image"])
    img = nib.load(str(tmp_path / "brain1" / "attention.nii.gz"))
    np.testing.assert_allclose(img.affine, grid.affine, atol=1e-4)      # LPS header → RAS affine
    assert img.shape == (256, 256, 25)
    assert result["input"]["stored_spacing_mm"] == pytest.approx([0.7812, 0.7812, 6.5], abs=1e-3)
    assert (tmp_path / "brain1" / "attention.png").stat().st_size > 1000
    # the map is placed on the lesion: the crop the model saw is centred on it, so the lesion's
    # voxels carry more attention than the image on average (zero outside the crop). Where inside
    # the crop the tiny synthetic-trained model looks is not asserted: it is not trained for that.
    attention = np.asarray(img.dataobj)
    label = stored_grid(brain1["mask"])
    np.testing.assert_allclose(label.affine, grid.affine, atol=1e-4)
    import SimpleITK as sitk

    lesion = np.transpose(sitk.GetArrayFromImage(sitk.ReadImage(str(brain1["mask"]))), (2, 1, 0)) > 0
    assert attention[lesion].mean() > attention.mean() > 0


def test_cli_predict(ssl_run, new_case, tmp_path, capsys):
    rc = main(["predict", "--model", str(ssl_run.folder), "--image", str(new_case["image"]),
               "--mask", str(new_case["mask"]), "--mask-labels", "11,12", "--out", str(tmp_path / "cli")])
    captured = capsys.readouterr()
    assert rc == 0 and "P(radiation necrosis)" in captured.out and "SYNTHETIC" in captured.err
    assert (tmp_path / "cli" / "prediction.json").is_file()


def _bad_image(tmp_path, affine, image=None):
    shape = (40, 40, 20)
    image = head_volume(shape) if image is None else image
    mask = sphere(shape, (20, 20, 10), 4).astype(np.int16)
    return (save_nifti(image, tmp_path / "img.nii.gz", affine), save_nifti(mask, tmp_path / "msk.nii.gz", affine))


@pytest.mark.parametrize("problem, affine, image, expected", [
    ("thick slices", np.diag([1.0, 1.0, 10.0, 1.0]), None, "too coarse"),
    ("oblique", np.array([[0.7071, -0.7071, 0, 0], [0.7071, 0.7071, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]]),
     None, "oblique"),
    ("label map as image", np.eye(4), sphere((40, 40, 20), (20, 20, 10), 8).astype(np.int16), "distinct intensities"),
    ("constant image", np.eye(4), np.full((40, 40, 20), 7, np.int16), "distinct intensities"),
])
def test_images_that_cannot_reach_the_training_setting_are_refused(ssl_run, tmp_path, problem, affine,
                                                                   image, expected):
    img, msk = _bad_image(tmp_path, affine, image)
    with pytest.raises(InputError, match=expected):
        predict_case(ssl_run.folder, img, msk, tmp_path / "out", run=ssl_run)
    assert not (tmp_path / "out").exists()


def test_wrong_mask_labels_are_refused_listing_the_values_present(ssl_run, new_case, tmp_path):
    with pytest.raises(InputError, match=r"lesion code\(s\) \[3\].*\[11, 12\]"):
        predict_case(ssl_run.folder, new_case["image"], new_case["mask"], tmp_path / "out",
                     mask_labels=[3], run=ssl_run)
    assert not (tmp_path / "out").exists()


def test_clinical_values_are_checked_against_the_model(tiny_study, ssl_run, new_case, tmp_path):
    with pytest.raises(InputError, match="uses no clinical data"):
        predict_case(ssl_run.folder, new_case["image"], new_case["mask"], tmp_path / "o", clinical=["age=60"],
                     run=ssl_run)
    clinical = load_model(tiny_study / "finetune" / "clinical")
    args = (clinical.folder, new_case["image"], new_case["mask"], tmp_path / "o")
    with pytest.raises(InputError, match="no clinical column 'weight'.*age \\(numeric\\), sex \\(categorical\\)"):
        predict_case(*args, clinical=["weight=70"], run=clinical)
    with pytest.raises(InputError, match="age is numeric"):
        predict_case(*args, clinical=["age=old"], run=clinical)
    with pytest.raises(InputError, match="unknown category for sex.*'F', 'M'"):
        predict_case(*args, clinical=["sex=X"], run=clinical)
    assert not (tmp_path / "o").exists()
    result = predict_case(*args, clinical=["age=71", "sex=F"], run=clinical)
    assert result["clinical"]["given"] == {"age": 71.0, "sex": "F"} and result["attention"]["available"] is False
    partial = predict_case(*args, clinical=["sex=M"], run=clinical)
    assert partial["clinical"]["imputed_by_model"] == ["age"]


def test_late_fusion_predicts_with_its_image_runs_attention(tiny_study, new_case, tmp_path):
    late = load_model(tiny_study / "finetune" / "ssl_vit_clinical_late")
    assert late.kind == "late" and late.provenance["image_run"] == "ssl_vit"
    result = predict_case(late.folder, new_case["image"], new_case["mask"], tmp_path / "late",
                          mask_labels=[11, 12], clinical=["age=66", "sex=M"], run=late)
    crop = prepare_case(new_case["image"], new_case["mask"], [11, 12], late.preprocessing).crop
    image = load_model(tiny_study / "finetune" / "ssl_vit").predict(crop, None, with_attention=False)
    from rn_classifier.finetune.cv import fold_dir
    from rn_classifier.models.clinical_json import LogisticModelJSON

    frame = pd.DataFrame([{"age": 66.0, "sex": "M"}])
    folds = [fold_dir(tiny_study / "finetune" / "ssl_vit_clinical_late", k) for k in range(late.n_folds)]
    expected = []
    for d, logit in zip(folds, image.logits):   # each stacker reads its fold model's logit standardised
        scale = json.loads((d / "late_fusion.json").read_text())["image_logit_scale"]
        z = (logit - scale["mean"]) / scale["sd"]
        expected.append(LogisticModelJSON.load(d / "late_fusion.json").predict_proba(frame.assign(image_logit=z))[0])
    assert result["fold_probabilities"] == pytest.approx(expected)
    assert result["attention"]["available"] and (tmp_path / "late" / "attention.nii.gz").is_file()


def test_predict_reads_a_dicom_series(ssl_run, tmp_path):
    from rn_classifier.data.readers import read_image

    head = head_volume((20, 64, 60), seed=5)                     # (Z, Y, X) as DICOM slices
    head[sphere(head.shape, (10, 30, 28), 4)] = 1500
    series = write_dicom_series(head, (1.0, 1.0, 2.5), (40.0, -30.0, 10.0), tmp_path / "series")
    volume = read_image(series)                                  # RAS grid it is read into
    lesion = sphere(volume.shape, np.argwhere(volume.array >= 1500).mean(axis=0), 4)
    mask = save_nifti(lesion.astype(np.uint8), tmp_path / "mask.nii.gz", volume.affine)
    result = predict_case(ssl_run.folder, series, mask, tmp_path / "out", run=ssl_run)
    saved = nib.load(str(tmp_path / "out" / "attention.nii.gz"))
    np.testing.assert_allclose(saved.affine, volume.affine, atol=1e-5)   # the series' own world grid
    assert saved.shape == volume.shape and np.asarray(saved.dataobj)[lesion].min() > 0
    assert result["input"]["image"] == "series"


def test_cli_clinical_values_repeated_or_comma_separated(tiny_study, new_case, tmp_path, capsys):
    run = str(tiny_study / "finetune" / "clinical")
    base = ["predict", "--model", run, "--image", str(new_case["image"]), "--mask", str(new_case["mask"])]
    assert main(base + ["--clinical", "age=61,sex=F", "--out", str(tmp_path / "a")]) == 0
    assert main(base + ["--clinical", "age=61", "--clinical", "sex=F", "--out", str(tmp_path / "b")]) == 0
    a, b = (json.loads((tmp_path / d / "prediction.json").read_text()) for d in "ab")
    assert a["probability_rn"] == b["probability_rn"] and a["clinical"]["given"] == {"age": 61.0, "sex": "F"}
    assert main(base + ["--clinical", "sex=X", "--out", str(tmp_path / "c")]) == 2
    assert "unknown category for sex" in capsys.readouterr().err and not (tmp_path / "c").exists()


TRAINING_MODULES = ("rn_classifier.finetune", "lightning", "pytorch_lightning")


# What predict never needs: the training loop, MONAI (models build without it), scikit-learn.
HEAVY_LIBRARIES = ("lightning", "monai", "sklearn")


@pytest.mark.parametrize("entry", ["library", "cli"])
def test_predict_from_a_bundle_imports_no_training_code(tiny_study, new_case, tmp_path, entry):
    """A fresh process predicts from a late-fusion bundle (image networks + stacker) and lists the
    training modules it loaded: none (the CLI's command table registers `finetune` without its code)."""
    import subprocess
    import sys

    bundle = tiny_study / "finetune" / "ssl_vit_clinical_late" / "bundle"
    args = ["--model", str(bundle), "--image", str(new_case["image"]), "--mask", str(new_case["mask"]),
            "--out", str(tmp_path / "out"), "--clinical", "age=66,sex=M"]
    call = ("from rn_classifier.cli import main; assert main(['predict', *sys.argv[1:]]) == 0" if entry == "cli"
            else "from rn_classifier.predict import predict_case; "
                 "predict_case(sys.argv[2], sys.argv[4], sys.argv[6], sys.argv[8], clinical=['age=66', 'sex=M'])")
    code = (f"import sys; {call}; "
            f"print([m for m in sys.modules if m.startswith({TRAINING_MODULES!r})]); "
            f"print([m for m in {HEAVY_LIBRARIES!r} if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    loaded, libraries = (eval(line) for line in done.stdout.strip().splitlines()[-2:])
    allowed = {"rn_classifier.finetune", "rn_classifier.finetune.commands"} if entry == "cli" else set()
    assert set(loaded) <= allowed, loaded
    assert libraries == [], f"the predict path imported {libraries} (start-up: benchmarks/predict_latency.py)"
    assert (tmp_path / "out" / "prediction.json").is_file()


def test_a_bundle_refuses_an_unknown_format_and_an_old_run_folder_gets_one(tiny_study, tmp_path):
    from rn_classifier.models.bundle import META_NAME, ModelBundle

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / META_NAME).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(InputError, match="is not a model bundle"):
        ModelBundle(bad)
    with pytest.raises(InputError, match="neither a model bundle"):
        load_model(tmp_path)
    old = tmp_path / "old" / "clinical"               # a run folder written before model bundles
    shutil.copytree(tiny_study / "finetune" / "clinical", old, ignore=shutil.ignore_patterns("bundle"))
    model = load_model(old)
    assert model.folder == old / "bundle" and model.kind == "clinical" and model.threshold["value"] is not None


def test_prediction_reports_the_contour_spread_two_raters_and_the_shift_check(ssl_run, tiny_study, new_case,
                                                                              tmp_path, capsys):
    from rn_classifier.data.contour_variants import ContourVariantConfig, contour_variants, variant_inputs
    from rn_classifier.data.crop import read_case

    folder = Path(new_case["image"]).parent
    shape = new_case["shape"]
    raters = []
    for name, radius in (("rater2.nii.gz", 6), ("rater3.nii.gz", 4)):
        mask = np.where(sphere(shape, (30, 40, 12), radius), 11, 0).astype(np.int16)
        mask[sphere(shape, (30, 40, 12), 2)] = 12
        raters.append(save_nifti(mask, folder / name, new_case["affine"]))
    assert main(["predict", "--model", str(ssl_run.folder), "--image", str(new_case["image"]),
                 "--mask", str(new_case["mask"]), "--mask-labels", "11,12", "--out", str(tmp_path / "out"),
                 "--rater-mask", str(raters[0]), "--rater-mask", str(raters[1])]) == 0
    assert "contour spread: SD" in capsys.readouterr().out
    written = json.loads((tmp_path / "out" / "prediction.json").read_text())
    contour = written["contour"]
    probs = contour["probabilities"]
    assert set(probs) == {"original", "erode", "dilate", "jitter0", "jitter1",
                          "rater:rater2.nii.gz", "rater:rater3.nii.gz"}
    assert probs["original"] == pytest.approx(written["probability_rn"])
    assert contour["sd"] == pytest.approx(np.std(list(probs.values())))
    assert contour["max_shift"] == pytest.approx(max(abs(p - probs["original"]) for p in probs.values()))
    # the dilated contour's P is the model's P on the crop of the dilated lesion (one road)
    case = read_case(new_case["image"], new_case["mask"], [11, 12])
    dilated = contour_variants(case.mask.lesion, case.image.spacing, ContourVariantConfig(n_jitter=0))["dilate"]
    x = variant_inputs(case, ssl_run.preprocessing.crop_setting, {"dilate": dilated})["dilate"]
    assert probs["dilate"] == pytest.approx(float(np.mean(ssl_run.predict(x, None, with_attention=False).probs)))
    shift = written["shift"]
    assert shift["available"] and shift["reference"] == "bundle"      # the study recorded it there
    assert set(shift) >= {"distance", "threshold", "flagged", "furthest"}
    without = predict_case(ssl_run.folder, new_case["image"], new_case["mask"], tmp_path / "plain",
                           mask_labels=[11, 12], run=ssl_run, contour=False)
    assert "contour" not in without and without["shift"]["available"]
    with pytest.raises(InputError, match="--shift .*none.json"):
        predict_case(ssl_run.folder, new_case["image"], new_case["mask"], tmp_path / "bad",
                     mask_labels=[11, 12], run=ssl_run, shift=tmp_path / "none.json")


def test_the_shift_check_travels_with_the_bundle(ssl_run, tiny_study, new_case, tmp_path):
    """A bundle the study recorded its internal range into, copied where no run folder is around it,
    checks the case exactly as the study's shift.json does (and --shift still wins); a bundle
    without one finds shift/shift.json above it (old run folders); with neither there is no check,
    and no error."""
    from rn_classifier.models.bundle import META_NAME, SHIFT_REFERENCE, shift_reference
    from rn_classifier.shift.check import case_reference

    study_shift = tiny_study / "shift" / "shift.json"
    alone = shutil.copytree(ssl_run.folder, tmp_path / "alone" / "bundle")
    assert shift_reference(alone) == case_reference(json.loads(study_shift.read_text()))

    def shift_of(model: Path, out: str, **kwargs) -> dict:
        return predict_case(model, new_case["image"], new_case["mask"], tmp_path / out, mask_labels=[11, 12],
                            contour=False, **kwargs)["shift"]

    from_bundle, from_file = shift_of(alone, "bundle"), shift_of(alone, "explicit", shift=study_shift)
    assert from_bundle.pop("reference") == "bundle" and from_file.pop("reference") == str(study_shift)
    assert from_bundle["available"] and from_bundle == from_file
    old_run = tmp_path / "old_run"                     # a study folder whose bundle predates the reference
    old = shutil.copytree(alone, old_run / "finetune" / "ssl_vit" / "bundle")
    meta = json.loads((old / META_NAME).read_text())
    del meta[SHIFT_REFERENCE]
    (old / META_NAME).write_text(json.dumps(meta))
    (old_run / "shift").mkdir()
    shutil.copy(study_shift, old_run / "shift" / "shift.json")
    walked = shift_of(old, "walked")
    assert walked.pop("reference") == str((old_run / "shift" / "shift.json").resolve()) and walked == from_file
    bare = shutil.copytree(old, tmp_path / "bare" / "a" / "b" / "bundle")
    none = shift_of(bare, "none")
    assert none["available"] is False and "distance" not in none and "--shift" in none["reason"]
    assert json.loads((tmp_path / "none" / "prediction.json").read_text())["shift"] == none


# -- many cases, borderline decisions, coarse slices (issue 15, item 7) ----------------------------

@pytest.fixture(scope="module")
def five_cases(tmp_path_factory, new_case):
    """Five heads with one lesion each, as images/ + masks/ and as a manifest."""
    folder = tmp_path_factory.mktemp("five")
    affine = new_case["affine"]
    rows = []
    for k in range(5):
        image = head_volume(new_case["shape"], seed=10 + k)
        lesion = sphere(new_case["shape"], (26 + 3 * k, 36 + 2 * k, 11), 3 + k % 3)
        image[lesion] = 900 + 200 * k
        for sub, array in (("images", image), ("masks", lesion.astype(np.int16))):
            (folder / sub).mkdir(exist_ok=True)
            save_nifti(array, folder / sub / f"case{k}.nii.gz", affine)
        rows.append({"case_id": f"case{k}", "image": f"images/case{k}.nii.gz", "mask": f"masks/case{k}.nii.gz"})
    pd.DataFrame(rows).to_csv(folder / "cases.csv", sep=";", index=False)
    return folder


def test_predict_on_a_folder_of_five_cases_matches_five_single_case_runs(ssl_run, five_cases, tmp_path, capsys):
    rc = main(["predict", "--model", str(ssl_run.folder), "--cases", str(five_cases), "--out", str(tmp_path / "many")])
    out = capsys.readouterr()
    assert rc == 0, out.err
    table = pd.read_csv(tmp_path / "many" / "predictions.csv", keep_default_na=False)
    assert table["case_id"].tolist() == [f"case{k}" for k in range(5)]
    for k in range(5):
        single = predict_case(ssl_run.folder, five_cases / "images" / f"case{k}.nii.gz",
                              five_cases / "masks" / f"case{k}.nii.gz", tmp_path / f"single{k}", run=ssl_run)
        row = table.iloc[k]
        assert row["probability_rn"] == pytest.approx(single["probability_rn"], abs=1e-12)
        assert row["decision"] == single["decision"] and bool(row["borderline"]) == single["borderline"]
        many = json.loads((tmp_path / "many" / f"case{k}" / "prediction.json").read_text())
        assert many["fold_probabilities"] == single["fold_probabilities"]
    manifest = main(["predict", "--model", str(ssl_run.folder), "--cases", str(five_cases / "cases.csv"),
                     "--out", str(tmp_path / "manifest")])
    assert manifest == 0
    again = pd.read_csv(tmp_path / "manifest" / "predictions.csv")
    np.testing.assert_allclose(again["probability_rn"], table["probability_rn"], rtol=0, atol=1e-12)


def test_a_case_that_cannot_be_predicted_is_a_row_with_its_error(ssl_run, five_cases, tmp_path, capsys):
    manifest = pd.read_csv(five_cases / "cases.csv", sep=";")
    manifest.loc[2, "image"] = "images/missing.nii.gz"
    manifest.to_csv(tmp_path / "cases.csv", index=False)
    for sub in ("images", "masks"):
        shutil.copytree(five_cases / sub, tmp_path / sub)
    rc = main(["predict", "--model", str(ssl_run.folder), "--cases", str(tmp_path / "cases.csv"), "--out",
               str(tmp_path / "out")])
    assert rc == 1
    table = pd.read_csv(tmp_path / "out" / "predictions.csv", keep_default_na=False)
    assert len(table) == 5 and "missing.nii.gz" in table.loc[2, "error"]
    assert (table["error"] == "").sum() == 4 and "5 case(s), " in capsys.readouterr().out


def test_a_cases_manifest_with_a_raters_column_reports_that_rater_per_case(ssl_run, five_cases, tmp_path):
    """``mask_rater2`` (relative to the manifest, like ``mask``) goes into that case's contour spread
    as ``rater:mask_rater2``; an empty cell means rater 2 did not contour the case: no entry."""
    from rn_classifier.data.contour_variants import variant_inputs
    from rn_classifier.data.crop import read_case
    from rn_classifier.data.readers import read_mask

    for sub in ("images", "masks"):
        shutil.copytree(five_cases / sub, tmp_path / sub)
    (tmp_path / "rater2").mkdir()
    ref = nib.load(five_cases / "images" / "case0.nii.gz")
    rater2 = sphere(ref.shape, (26, 36, 11), 5).astype(np.int16)       # case0's lesion, drawn wider
    save_nifti(rater2, tmp_path / "rater2" / "case0.nii.gz", ref.affine)
    pd.DataFrame([{"case_id": "case0", "image": "images/case0.nii.gz", "mask": "masks/case0.nii.gz",
                   "mask_rater2": "rater2/case0.nii.gz"},
                  {"case_id": "case1", "image": "images/case1.nii.gz", "mask": "masks/case1.nii.gz",
                   "mask_rater2": ""}]).to_csv(tmp_path / "cases.csv", index=False)
    rc = main(["predict", "--model", str(ssl_run.folder), "--cases", str(tmp_path / "cases.csv"),
               "--out", str(tmp_path / "out")])
    assert rc == 0
    first, second = (json.loads((tmp_path / "out" / c / "prediction.json").read_text())["contour"]
                     for c in ("case0", "case1"))
    assert first["settings"]["rater_masks"] == {"mask_rater2": "case0.nii.gz"}
    assert not [k for k in second["probabilities"] if k.startswith("rater:")]
    assert first["n_contours"] == second["n_contours"] + 1
    # rater 2's P is the model's P on the crop of rater 2's lesion (the one road), next to the spread
    case = read_case(tmp_path / "images" / "case0.nii.gz", tmp_path / "masks" / "case0.nii.gz", ())
    lesion = read_mask(tmp_path / "rater2" / "case0.nii.gz", (), case.image).lesion     # on the RAS grid
    x = variant_inputs(case, ssl_run.preprocessing.crop_setting, {"r2": lesion})["r2"]
    assert first["probabilities"]["rater:mask_rater2"] == pytest.approx(
        float(np.mean(ssl_run.predict(x, None, with_attention=False).probs)))
    assert first["sd"] == pytest.approx(np.std(list(first["probabilities"].values())))


def test_a_decision_inside_the_fold_spread_is_flagged_borderline(ssl_run, new_case, tmp_path, capsys):
    result = predict_case(ssl_run.folder, new_case["image"], new_case["mask"], tmp_path / "a", run=ssl_run)
    probs = np.asarray(result["fold_probabilities"])
    stats = tmp_path / "stats.json"             # a threshold frozen inside this case's fold spread
    stats.write_text(json.dumps({"thresholds": {ssl_run.name: {"threshold": float(probs.mean()),
                                                                "threshold_cohort": "oof"}}}))
    rc = main(["predict", "--model", str(ssl_run.folder), "--image", str(new_case["image"]), "--mask",
               str(new_case["mask"]), "--stats", str(stats), "--out", str(tmp_path / "b")])
    assert rc == 0
    assert json.loads((tmp_path / "b" / "prediction.json").read_text())["borderline"] is True
    assert "BORDERLINE: the threshold lies inside the fold models' spread" in capsys.readouterr().out


def test_slices_coarser_than_twice_the_training_spacing_are_warned_about(ssl_run, tmp_path):
    spacing = ssl_run.preprocessing.spacing
    affine = np.diag([spacing[0], spacing[1], 2.5 * spacing[2], 1.0])
    image, mask = _bad_image(tmp_path, affine)
    result = predict_case(ssl_run.folder, image, mask, tmp_path / "out", run=ssl_run)
    assert any("voxel axis 2" in w and "2.50× the training spacing" in w for w in result["warnings"])


def test_a_word_for_a_coded_category_explains_the_coding(tiny_study, new_case, tmp_path):
    late = load_model(tiny_study / "finetune" / "ssl_vit_clinical_late")
    from rn_classifier.predict.inputs import parse_clinical

    with pytest.raises(InputError, match=r"sex=.*1 = F, 2 = M.*give the code, e\.g\. sex=1"):
        parse_clinical(["sex=F"], {"sex": "categorical"}, {"sex": ["1", "2"]}, late.name)

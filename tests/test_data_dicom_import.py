"""``import-dicom`` (pairing, labels, the report of what was not paired) and ``synth --format
dicom-rt``: the SYNTHETIC external centre as MR series + RTSTRUCT predicts like its NIfTI twin."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rn_classifier.cli import main
from rn_classifier.data.dicom_import import import_dicom
from rn_classifier.data.dicom_write import write_mr_series, write_rtstruct
from rn_classifier.data.ingest import Volume
from rn_classifier.data.readers import read_image, read_mask
from rn_classifier.data.manifest import load_manifest
from rn_classifier.data.synth import make_synthetic_cohort
from rn_classifier.data.synth.dicom_export import roi_name, study_date
from rn_classifier.errors import DataIntegrityError

SHAPE = (32, 36, 20)
AFFINE = np.diag([1.5, 1.5, 3.0, 1.0])


def _scan(folder, key, patient, lesions: dict[str, tuple], seed=0):
    """A head with spherical lesions as an MR series in ``folder/MR``; returns (volume, series, masks)."""
    from builders import head_volume, sphere

    image = head_volume(SHAPE, seed)
    masks = {name: sphere(SHAPE, centre, radius) for name, (centre, radius) in lesions.items()}
    for m in masks.values():
        image[m] = 1400
    volume = Volume(image, AFFINE.copy())
    return volume, write_mr_series(volume, folder / "MR", key=key, patient_id=patient), masks


@pytest.fixture()
def planning_export(tmp_path):
    """Patient A: series + RTSTRUCT (GTV_1, GTV_2, GTV_3, Brainstem), nested two levels down;
    patient B: series + DICOM-SEG (segment 'lesion'); patient C: a series without contours; an
    RTSTRUCT whose series is not in the tree."""
    from dicom_builders import write_seg

    root = tmp_path / "export"
    volume, series, masks = _scan(root / "A" / "plan1" / "img", "A", "PAT-A",
                                  {"GTV_1": ((10, 12, 8), 3), "GTV_2": ((22, 24, 12), 4), "GTV_3": ((20, 8, 6), 2),
                                   "Brainstem": ((16, 30, 10), 3)})
    write_rtstruct(root / "A" / "plan1" / "RS.A.dcm", masks, volume, series, key="A")
    _, _, b_masks = _scan(root / "B", "B", "PAT-B", {"x": ((14, 14, 10), 4)}, seed=1)
    write_seg(root / "B" / "SEG.dcm", root / "B" / "MR", {"lesion": np.transpose(b_masks["x"], (2, 1, 0))})
    _scan(root / "C" / "only_series", "C", "PAT-C", {})
    other_volume, other_series, other_masks = _scan(tmp_path / "elsewhere", "D", "PAT-D", {"GTV_1": ((12, 12, 10), 3)})
    write_rtstruct(root / "D" / "RS.D.dcm", other_masks, other_volume, other_series, key="D")
    labels = pd.DataFrame([{"patient": "PAT-A", "roi": "GTV_1", "label": "RN", "age": 61},
                           {"patient": "PAT-A", "roi": "GTV_2", "label": "0", "age": 61},
                           {"patient": "PAT-B", "roi": "lesion", "label": "1", "age": 70}])
    labels.to_csv(tmp_path / "labels.csv", index=False)
    return {"root": root, "labels": tmp_path / "labels.csv", "masks": masks, "tmp": tmp_path}


def test_import_pairs_structure_sets_and_segs_with_their_series(planning_export, capsys):
    out = planning_export["tmp"] / "cohort" / "site2.csv"
    assert main(["import-dicom", str(planning_export["root"]), "--labels", str(planning_export["labels"]),
                 "--out", str(out), "--center", "SITE2", "--roi-pattern", "(?i)^(gtv|lesion)"]) == 0
    captured = capsys.readouterr()
    assert "wrote" in captured.out and "3 cases, 2 patients, 2 RN / 1 progression" in captured.out
    df = load_manifest(out)
    assert sorted(df["mask_labels"].map(tuple)) == [("GTV_1",), ("GTV_2",), ("lesion",)]
    assert set(df["center"]) == {"SITE2"} and df["age"].tolist() and "Brainstem" not in set(df["lesion"])
    report = pd.read_csv(out.with_name("site2.report.csv"))
    kinds = dict(zip(report["kind"], report["detail"]))
    assert "PAT-A" in kinds["lesion without a label"] and "GTV_3" in kinds["lesion without a label"]
    assert "no RTSTRUCT or SEG references it" in kinds["series without contours"]
    assert "not found under the root" in kinds["rtstruct without its series"]
    assert "not paired or not labelled (3, listed in" in captured.err and len(report) == 3
    # every case reads: RTSTRUCT ROIs and the SEG segment land where the lesions are
    for _, row in df.iterrows():
        image = read_image(row["image_path"])
        lesion = read_mask(row["mask_path"], row["mask_labels"], image).lesion
        assert (image.array[lesion] == 1400).mean() > 0.95


def test_a_label_that_matches_no_lesion_stops_the_import(planning_export):
    labels = pd.read_csv(planning_export["labels"])
    labels.loc[len(labels)] = {"patient": "PAT-C", "roi": "GTV_1", "label": 1, "age": 50}
    labels.to_csv(planning_export["labels"], index=False)
    with pytest.raises(DataIntegrityError, match=r"patient PAT-C, ROI GTV_1 matches no lesion ROI of a structure set"):
        import_dicom(planning_export["root"], planning_export["labels"], planning_export["tmp"] / "m.csv")
    assert not (planning_export["tmp"] / "m.csv").exists()


# -- the SYNTHETIC cohort in DICOM-RT -------------------------------------------------------------

@pytest.fixture(scope="module")
def synthetic_twins(tmp_path_factory):
    """The tiny SYNTHETIC cohort (seed 3) as NIfTI and, through the command line, as DICOM-RT."""
    root = tmp_path_factory.mktemp("twins")
    make_synthetic_cohort(root / "nifti", preset="tiny", seed=3, pool_size=0, workers=1)
    assert main(["synth", "--preset", "tiny", "--seed", "3", "--pool-size", "0", "--workers", "1",
                 "--format", "dicom-rt", "--out", str(root / "rt")]) == 0
    return root


def _key(row) -> tuple:
    return row["patient_id"], str(row["timepoint"]), str(row["lesion"])


def _twin_rows(root, cohort):
    nifti = load_manifest(root / "nifti" / "manifests" / f"{cohort}.csv")
    rt = load_manifest(root / "rt" / "manifests" / f"{cohort}.csv")
    rt_by_key = {_key(r): r for _, r in rt.iterrows()}
    pairs = [(r, rt_by_key[(r["patient_id"], study_date(r["timepoint"]), roi_name(r["lesion"]))])
             for _, r in nifti.iterrows()]
    assert len(pairs) == len(nifti) == len(rt)
    return pairs


def test_synth_dicom_rt_tree_and_manifests(synthetic_twins, capsys):
    rt = synthetic_twins / "rt"
    assert not (rt / "external" / "molab").exists() and (rt / "external" / "dicom").is_dir()
    for cohort in ("internal", "external"):
        assert main(["check-data", str(rt / "manifests" / f"{cohort}.csv")]) == 0, capsys.readouterr().err
        for nifti, dicom in _twin_rows(synthetic_twins, cohort):
            assert dicom["label"] == nifti["label"] and dicom["synthetic"] == 1
            for column in ("age", "sex", "primary"):
                assert str(dicom[column]) == str(nifti[column]) or (pd.isna(dicom[column]) and pd.isna(nifti[column]))
    import pydicom

    first = next((rt / "external" / "dicom").rglob("MR.0001.dcm"))
    assert "SYNTHETIC" in str(pydicom.dcmread(first).ImageComments)


def test_external_centre_in_dicom_rt_predicts_like_its_nifti_twin(synthetic_twins, tiny_study):
    """Predictions within 0.02 and lesion volumes within 5 % of the NIfTI version's."""
    from rn_classifier.predict import load_model
    from rn_classifier.predict.inputs import prepare_case

    run = load_model(tiny_study / "finetune" / "ssl_vit")
    for nifti, dicom in _twin_rows(synthetic_twins, "external"):
        a = prepare_case(nifti["image_path"], nifti["mask_path"], nifti["mask_labels"], run.preprocessing)
        b = prepare_case(dicom["image_path"], dicom["mask_path"], dicom["mask_labels"], run.preprocessing)
        assert b.lesion_volume_ml == pytest.approx(a.lesion_volume_ml, rel=0.05)
        np.testing.assert_allclose(b.crop[0], a.crop[0], atol=1e-4)
        p_a = float(run.predict(a.crop, None).probs.mean())
        p_b = float(run.predict(b.crop, None).probs.mean())
        assert abs(p_a - p_b) <= 0.02, (nifti["case_id"], p_a, p_b)

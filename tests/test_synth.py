"""Synthetic cohort: layout, coding, reproducibility, importer round trip, phenotype design."""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from rn_classifier.data.manifest import load_manifest
from rn_classifier.data.synth import make_synthetic_cohort
from rn_classifier.data.synth.clinical import (SPREADSHEET_COLUMNS, CaseMix, draw_lesion,
                                               draw_patient)
from rn_classifier.data.synth.cohort import plan_center, split_counts
from rn_classifier.data.synth.lesions import (PROGRESSION, RN, composite, draw_phenotype,
                                              render_lesion, segment_codes)
from rn_classifier.data.synth.presets import get_preset
from rn_classifier.data.synth.writer import DESCRIP
from rn_classifier.errors import InputError

REPO = Path(__file__).resolve().parents[1]
TINY = get_preset("tiny")


def _tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "cohort"
    make_synthetic_cohort(out, preset="tiny", seed=3, workers=1)
    return out


def _masks(tiny: Path, key: str) -> list[Path]:
    return sorted((tiny / key / "molab").glob("*/*/NIFTI/*_msk.nii.gz"))


def test_same_seed_gives_identical_files_whatever_the_worker_count(tiny, tmp_path):
    again = tmp_path / "again"
    make_synthetic_cohort(again, preset="tiny", seed=3, workers=2)
    first, second = _tree_hashes(tiny), _tree_hashes(again)
    assert first.keys() == second.keys()
    assert first == second


def test_different_seed_changes_the_cohort():
    a = plan_center(TINY.internal, seed=3, separation=1.0, missing_rate=0.04)
    b = plan_center(TINY.internal, seed=4, separation=1.0, missing_rate=0.04)
    assert [lp.phenotype for p in a for lp in p.lesions] != [lp.phenotype for p in b for lp in p.lesions]


def test_layout_and_counts(tiny):
    for key, center in (("internal", TINY.internal), ("external", TINY.external)):
        images = sorted((tiny / key / "molab").glob("*/*/NIFTI/*_img.nii.gz"))
        assert len(images) == len(_masks(tiny, key)) > 0
        for img in images:
            patient = img.parent.parent.name
            assert img.parent.parent.parent.name == patient and "_" not in patient
            assert img.name.startswith(f"{patient}_t")
            assert img.with_name(img.name.replace("_img", "_msk")).is_file()
        labels = pd.read_csv(tiny / key / "labels.csv")
        assert len(labels) == center.n_cases
        assert labels["patient"].nunique() == center.n_patients
    assert len(list((tiny / "unlabeled").glob("*_img.nii.gz"))) == TINY.pool.size
    for name in ("README.md", "cohort.json", "manifests/internal.csv", "manifests/external.csv",
                 "manifests/unlabeled.csv"):
        assert (tiny / name).is_file(), name


def test_mask_codes_are_lesion_times_ten_plus_segment_with_both_segments(tiny):
    for key in ("internal", "external"):
        labels = pd.read_csv(tiny / key / "labels.csv")
        for mask_path in _masks(tiny, key):
            mask = np.asarray(nib.load(mask_path).dataobj)
            assert mask.dtype == np.int16
            codes = {int(v) for v in np.unique(mask) if v}
            assert all(c % 10 in (1, 2) for c in codes), codes
            lesions = {c // 10 for c in codes}
            for lesion in lesions:
                assert {lesion * 10 + 1, lesion * 10 + 2} <= codes, (mask_path.name, codes)
            patient, tp = mask_path.name.removesuffix("_msk.nii.gz").rsplit("_", 1)
            listed = labels[(labels.patient == patient) & (labels.timepoint == tp)]
            assert lesions == set(listed["lesion"]), mask_path.name


def test_every_file_says_synthetic(tiny):
    for path in tiny.rglob("*.nii.gz"):
        img = nib.load(path)
        assert bytes(img.header["descrip"]).rstrip(b"\0") == DESCRIP
        assert img.get_data_dtype() == np.int16
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    for csv in list(tiny.rglob("labels.csv")) + list((tiny / "manifests").glob("*.csv")):
        frame = pd.read_csv(csv)
        assert (frame["synthetic"] == 1).all(), csv
    assert "SYNTHETIC" in (tiny / "README.md").read_text()
    assert json.loads((tiny / "cohort.json").read_text())["synthetic"] is True
    from openpyxl import load_workbook
    wb = load_workbook(tiny / "internal" / "clinical.xlsx")
    assert "SYNTHETIC" in wb.properties.title
    assert "SYNTHETIC" in wb["README"]["A1"].value


def test_external_centre_has_5mm_slices_and_another_intensity_scale(tiny):
    ext = nib.load(next((tiny / "external" / "molab").rglob("*_img.nii.gz")))
    intl = nib.load(next((tiny / "internal" / "molab").rglob("*_img.nii.gz")))
    assert ext.header.get_zooms()[2] == pytest.approx(5.0)
    assert ext.header.get_zooms()[0] < 5.0
    assert len(set(np.round(intl.header.get_zooms(), 3))) == 1      # isotropic
    brain_ext = np.percentile(np.asarray(ext.dataobj), 95)
    brain_int = np.percentile(np.asarray(intl.dataobj), 95)
    assert brain_ext < 0.75 * brain_int      # the external scanner stores lower values


def test_spreadsheet_has_two_header_rows_and_positional_columns(tiny):
    raw = pd.read_excel(tiny / "internal" / "clinical.xlsx", sheet_name="Clinical", header=None)
    assert raw.shape[1] == len(SPREADSHEET_COLUMNS)
    assert raw.iloc[0, 0] == "Patient"                    # group row
    assert list(raw.iloc[1]) == [c.header for c in SPREADSHEET_COLUMNS]
    body = raw.iloc[2:].reset_index(drop=True)
    labels = pd.read_csv(tiny / "internal" / "labels.csv")
    expected = labels[["patient", "lesion"]].drop_duplicates()
    assert sorted(zip(body[0], body[4].astype(int))) == sorted(zip(expected.patient, expected.lesion))
    assert set(body[2].dropna().astype(int)) <= {1, 2}
    assert set(body[5].dropna().astype(int)) <= set(range(1, 13))


def test_synthetic_column_map_config_matches_the_written_layout():
    from rn_classifier.data.molab import load_column_map
    from rn_classifier.data.synth.clinical import column_map

    assert load_column_map(REPO / "configs" / "data" / "synthetic_columns.yaml") == column_map()


def test_importer_round_trip(tiny):
    for key, center in (("internal", TINY.internal), ("external", TINY.external)):
        df = load_manifest(tiny / "manifests" / f"{key}.csv")
        assert len(df) == center.n_cases
        assert (df["center"] == center.name).all()
        labels = pd.read_csv(tiny / key / "labels.csv")
        merged = df.merge(labels, left_on=["patient_id", "timepoint", "lesion"],
                          right_on=["patient", "timepoint", "lesion"], suffixes=("", "_csv"))
        assert len(merged) == len(df)
        assert (merged["label"].astype(int) == merged["label_csv"]).all()
        for _, row in df.iterrows():
            assert row["mask_labels"] == (row["lesion"] * 10 + 1, row["lesion"] * 10 + 2)
            assert Path(row["image_path"]).is_file() and Path(row["mask_path"]).is_file()
        for col in ("age", "sex", "gpa", "primary", "dose_gy", "fractions", "months_since_srs", "steroids"):
            assert col in df.columns and df[col].notna().any(), col


def test_pool_manifest(tiny):
    pool = pd.read_csv(tiny / "manifests" / "unlabeled.csv", keep_default_na=False)
    assert list(pool.columns) == ["case_id", "patient_id", "center", "image", "mask",
                                  "mask_labels", "label", "synthetic", "kind",
                                  "centre_x", "centre_y", "centre_z"]
    assert len(pool) == TINY.pool.size
    assert (pool["center"] == "SYN-POOL").all()
    assert (pool["label"] == "").all()
    assert set(pool["kind"]) <= {"lesion", "random"}
    for _, row in pool.iterrows():
        img = nib.load(tiny / "manifests" / row["image"])
        assert img.shape == TINY.pool.shape
        centre_voxel = np.linalg.inv(img.affine) @ [row["centre_x"], row["centre_y"], row["centre_z"], 1]
        if row["kind"] == "random":  # the grid's centre, no mask
            assert row["mask"] == row["mask_labels"] == ""
            np.testing.assert_allclose(centre_voxel[:3], (np.asarray(img.shape) - 1) / 2, atol=1e-2)
        else:  # the lesion's mask (MOLAB codes of lesion 1), the centre at its centroid
            mask = np.asarray(nib.load(tiny / "manifests" / row["mask"]).dataobj)
            assert sorted(np.unique(mask[mask > 0])) == [int(v) for v in row["mask_labels"].split(";")]
            np.testing.assert_allclose(centre_voxel[:3], np.argwhere(mask > 0).mean(0), atol=1e-2)


def test_refuses_to_replace_a_folder_that_is_not_a_synthetic_cohort(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a synthetic cohort"):
        make_synthetic_cohort(out, preset="tiny", seed=0)
    assert [p.name for p in out.iterdir()] == ["precious.txt"]


@pytest.mark.parametrize("kwargs, match", [({"preset": "huge"}, "unknown synthetic cohort preset"),
                                           ({"seed": -1}, "seed"), ({"pool_size": -5}, "pool_size")])
def test_bad_arguments_raise_input_error(tmp_path, kwargs, match):
    with pytest.raises(InputError, match=match):
        make_synthetic_cohort(tmp_path / "x", **{"preset": "tiny", **kwargs})
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("n_patients, n_cases, max_l, max_t", [(75, 109, 3, 3), (22, 28, 3, 1), (4, 6, 3, 3)])
def test_split_counts_meets_the_totals_exactly(n_patients, n_cases, max_l, max_t):
    counts = split_counts(np.random.default_rng(0), n_patients, n_cases, max_l, max_t)
    assert len(counts) == n_patients
    assert sum(nl * nt for nl, nt in counts) == n_cases
    assert all(1 <= nl <= max_l and 1 <= nt <= max_t for nl, nt in counts)


def test_split_counts_rejects_impossible_totals():
    with pytest.raises(InputError):
        split_counts(np.random.default_rng(0), 5, 4, 3, 3)


def test_template_loads_without_network(monkeypatch):
    from rn_classifier.data.synth.anatomy import load_template

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    template = load_template.__wrapped__()
    assert template.fine.t1.shape[0] > 150 and template.brain_points.shape[1] == 3


def _measure_lesions(n_per_class: int, voxel_mm: float = 2.0, seed: int = 0) -> pd.DataFrame:
    """Render lesions on a white-matter background and measure them as an analyst would:
    from the segmentation (necrotic fraction, volume) and the image around it (oedema)."""
    rng = np.random.default_rng(seed)
    axis = np.arange(-44, 44.01, voxel_mm, dtype=np.float32)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij")).reshape(3, -1)
    grid = grid[:, (grid ** 2).sum(0) <= 44 ** 2]      # a ball that holds lesion + 10 mm shell
    rows = []
    for i in range(2 * n_per_class):
        label = RN if i % 2 else PROGRESSION
        ph = draw_phenotype(label, rng)
        fields = render_lesion(ph, 0, grid, lambda idx: np.full(idx.size, 0.9, np.float32), voxel_mm)
        codes = segment_codes(fields.inside, fields.enhancing, 1)
        image = composite(np.ones(grid.shape[1], np.float32), fields)
        lesion = codes > 0
        r = np.sqrt((grid ** 2).sum(0))
        r_lesion = r[lesion].max()
        shell = (~lesion) & (r > r_lesion + 2) & (r < r_lesion + 10)
        rows.append({"label": label, "necrotic_fraction": (codes == 12).sum() / lesion.sum(),
                     "volume": lesion.sum(), "oedema_darkening": 1 - image[shell].mean()})
    return pd.DataFrame(rows)


def test_phenotypes_differ_in_the_expected_direction_with_overlap():
    df = _measure_lesions(40)
    rn, pd_ = df[df.label == RN], df[df.label == PROGRESSION]
    assert rn.necrotic_fraction.mean() > pd_.necrotic_fraction.mean()
    assert rn.oedema_darkening.mean() > pd_.oedema_darkening.mean()
    # overlap: no single measurement separates the classes
    for feature in ("necrotic_fraction", "oedema_darkening"):
        auc = roc_auc_score(df.label, df[feature])
        assert 0.55 < auc < 0.9, (feature, auc)
    # size is not the answer
    assert 0.3 < roc_auc_score(df.label, df.volume) < 0.7


def test_clinical_variables_are_each_only_weakly_informative():
    rng = np.random.default_rng(0)
    mix = CaseMix(0.45, get_preset("demo").internal.case_mix.primary_weights)
    rows = []
    for _ in range(1500):
        label = int(rng.random() < 0.45)
        rows.append({"label": label, **draw_patient(rng, [label], mix), **draw_lesion(rng, label)})
    df = pd.DataFrame(rows)
    # direction: RN after higher single-fraction dose, later, more steroids
    assert roc_auc_score(df.label, df.months_since_srs) > 0.55
    assert roc_auc_score(df.label, df.steroids) > 0.55
    for col in ("age", "gpa", "dose_gy", "fractions", "months_since_srs", "steroids"):
        auc = roc_auc_score(df.label, df[col])
        assert max(auc, 1 - auc) < 0.75, (col, auc)

"""MOLAB importer: tree → manifest round trip, mask coding, labels, spreadsheet mapping, bad input."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from rn_classifier.cli import main
from rn_classifier.data.manifest import load_manifest
from rn_classifier.data.molab import import_molab, load_column_map
from rn_classifier.errors import DataIntegrityError, InputError
from builders import write_tiny_molab

REPO = Path(__file__).resolve().parents[1]
SYNTH_COLUMNS = REPO / "configs" / "data" / "synthetic_columns.yaml"


@pytest.fixture()
def tiny(tmp_path):
    return write_tiny_molab(tmp_path)


def test_round_trip_tree_to_manifest(tiny, tmp_path):
    out = tmp_path / "m" / "internal.csv"
    df = import_molab(tiny["tree"], tiny["labels"], tiny["clinical"], center="A", out=out,
                      column_map=SYNTH_COLUMNS)
    # 6 patients; odd ones have 2 lesions; every third patient has 2 time points
    expected = sum((1 + p % 2) * (1 + (p % 3 == 0)) for p in range(6))
    assert len(df) == expected
    m = load_manifest(out, clinical=load_column_map(SYNTH_COLUMNS).types, require_labels=True)
    assert len(m) == expected
    row = m.set_index("case_id").loc["P001_t1_L2"]
    assert row["mask_labels"] == (21, 22)
    assert row["patient_id"] == "P001" and row["center"] == "A"
    assert Path(row["image_path"]).is_file() and Path(row["mask_path"]).is_file()
    assert not Path(m["image"].iloc[0]).is_absolute(), "manifest paths are relative to the manifest"
    assert row["label"] == (1 + 2) % 2
    assert row["sex"] == "2" and row["dose_gy"] == 20.0
    # the same lesion at two time points carries the same label and patient
    p0 = m[m["patient_id"] == "P000"]
    assert set(p0["case_id"]) == {"P000_t1_L1", "P000_t2_L1"}


def test_cli_import_molab(tiny, tmp_path):
    out = tmp_path / "cli.csv"
    rc = main(["import-molab", str(tiny["tree"]), "--labels", str(tiny["labels"]), "--clinical",
               str(tiny["clinical"]), "--center", "A", "--columns", str(SYNTH_COLUMNS), "--out", str(out)])
    assert rc == 0 and out.is_file()


def test_image_without_mask_is_named(tiny, tmp_path):
    mask = next(Path(tiny["tree"]).glob("P002/P002/NIFTI/*_msk.nii.gz"))
    mask.unlink()
    with pytest.raises(DataIntegrityError, match=r"P002_t1_img.*no mask"):
        import_molab(tiny["tree"], tiny["labels"], out=tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


def test_label_for_lesion_missing_from_mask(tiny, tmp_path):
    labels = pd.read_csv(tiny["labels"], dtype=str)
    labels.loc[len(labels)] = {"patient": "P000", "timepoint": "", "lesion": "3", "label": "1"}
    labels.to_csv(tiny["labels"], index=False)
    with pytest.raises(DataIntegrityError, match=r"P000 lesion 3.*31/32"):
        import_molab(tiny["tree"], tiny["labels"], out=tmp_path / "x.csv")


def test_bad_label_value_is_named(tiny, tmp_path):
    labels = pd.read_csv(tiny["labels"])
    labels["label"] = labels["label"].astype(object)
    labels.loc[0, "label"] = "maybe"
    labels.to_csv(tiny["labels"], index=False)
    with pytest.raises(DataIntegrityError, match="got 'maybe'"):
        import_molab(tiny["tree"], tiny["labels"], out=tmp_path / "x.csv")


def test_spreadsheet_header_not_matching_the_map(tiny, tmp_path):
    cmap = load_column_map(SYNTH_COLUMNS)
    cmap.header_rows = 1  # the sheet has two header rows: the name row is read as data
    with pytest.raises(DataIntegrityError, match="does not match the column map"):
        import_molab(tiny["tree"], tiny["labels"], tiny["clinical"], out=tmp_path / "x.csv", column_map=cmap)
    cmap = load_column_map(SYNTH_COLUMNS)
    cmap.columns["age"] = 40
    with pytest.raises(InputError, match="positions"):
        import_molab(tiny["tree"], tiny["labels"], tiny["clinical"], out=tmp_path / "x.csv", column_map=cmap)
    assert not (tmp_path / "x.csv").exists()


def test_not_a_molab_tree(tmp_path):
    (tmp_path / "labels.csv").write_text("patient,timepoint,lesion,label\n")
    with pytest.raises(InputError, match="MOLAB layout"):
        import_molab(tmp_path, tmp_path / "labels.csv", out=tmp_path / "x.csv")

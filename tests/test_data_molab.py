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


# -- never a silent blank (issue 15, item 2): each way a clinical value could be lost ----------

def _sheet(tiny) -> pd.DataFrame:
    return pd.read_excel(tiny["clinical"], header=None, dtype=object)


def _write_sheet(tiny, sheet: pd.DataFrame) -> None:
    sheet.to_excel(tiny["clinical"], header=False, index=False)


def test_a_one_row_header_where_the_map_expects_two_is_refused_not_a_blank_patient(tiny, tmp_path):
    sheet = _sheet(tiny)
    _write_sheet(tiny, sheet.iloc[1:])            # only the name row: P000's row would be the 2nd "header" row
    out = tmp_path / "x.csv"
    with pytest.raises(DataIntegrityError, match=r"it has 1 header row\(s\) above the first row with a patient ID "
                                                 r"and a lesion number \(row 2: \['P000'.*header_rows=2: the first "
                                                 r"1 patient row\(s\) would be read as header and lost; set "
                                                 r"`header_rows: 1`"):
        import_molab(tiny["tree"], tiny["labels"], tiny["clinical"], out=out, column_map=SYNTH_COLUMNS)
    assert not out.exists()
    cmap = load_column_map(SYNTH_COLUMNS)
    cmap.header_rows = 1                          # the fix the message names
    df = import_molab(tiny["tree"], tiny["labels"], tiny["clinical"], out=out, column_map=cmap)
    assert df.loc[df["patient_id"] == "P000", "age"].notna().all()
    assert df.attrs["cases_without_clinical_row"] == []


def test_a_case_without_a_spreadsheet_row_is_listed(tiny, tmp_path, capsys):
    sheet = _sheet(tiny)
    _write_sheet(tiny, sheet[sheet[0] != "P002"])
    df = import_molab(tiny["tree"], tiny["labels"], tiny["clinical"], out=tmp_path / "x.csv",
                      column_map=SYNTH_COLUMNS)
    assert df.attrs["cases_without_clinical_row"] == ["P002_t1_L1"]
    rc = main(["import-molab", str(tiny["tree"]), "--labels", str(tiny["labels"]), "--clinical",
               str(tiny["clinical"]), "--columns", str(SYNTH_COLUMNS), "--out", str(tmp_path / "y.csv")])
    err = capsys.readouterr().err
    assert rc == 0 and "warning: 1 case(s) have no row in the clinical spreadsheet" in err and "P002_t1_L1" in err


def test_a_spreadsheet_row_without_a_case_is_listed(tiny, tmp_path):
    sheet = _sheet(tiny)
    extra = sheet.iloc[[2]].copy()
    extra[0] = "P099"                             # a patient the tree does not hold
    _write_sheet(tiny, pd.concat([sheet, extra], ignore_index=True))
    df = import_molab(tiny["tree"], tiny["labels"], tiny["clinical"], out=tmp_path / "x.csv",
                      column_map=SYNTH_COLUMNS)
    assert df.attrs["clinical_rows_without_case"] == [f"row {len(sheet) + 1}: patient P099 lesion 1"]


def test_a_row_without_patient_id_or_lesion_number_is_refused(tiny, tmp_path):
    sheet = _sheet(tiny)
    sheet.iat[3, 0] = None                        # merged patient cells read as empty
    sheet.iat[4, 4] = "two"
    _write_sheet(tiny, sheet)
    with pytest.raises(DataIntegrityError) as exc:
        import_molab(tiny["tree"], tiny["labels"], tiny["clinical"], out=tmp_path / "x.csv",
                     column_map=SYNTH_COLUMNS)
    text = str(exc.value)
    assert "row 4: clinical values" in text and "no patient ID in column 0" in text
    assert "row 5 (patient P001): lesion column 4 holds 'two', expected a whole lesion number" in text


def test_two_differing_rows_of_one_lesion_are_refused(tiny, tmp_path):
    sheet = _sheet(tiny)
    twin = sheet.iloc[[2]].copy()
    twin[1] = 99                                  # another age for P000 lesion 1
    _write_sheet(tiny, pd.concat([sheet, twin], ignore_index=True))
    with pytest.raises(DataIntegrityError, match=rf"rows \[3, {len(sheet) + 1}\]: patient P000 lesion 1 appears "
                                                 "more than once with different values"):
        import_molab(tiny["tree"], tiny["labels"], tiny["clinical"], out=tmp_path / "x.csv",
                     column_map=SYNTH_COLUMNS)


def test_check_data_lists_missing_clinical_values_per_column_and_case(tiny, tmp_path, capsys):
    sheet = _sheet(tiny)
    sheet.iat[2, 1] = None                        # P000's age
    _write_sheet(tiny, sheet)
    out = tmp_path / "x.csv"
    import_molab(tiny["tree"], tiny["labels"], tiny["clinical"], out=out, column_map=SYNTH_COLUMNS)
    capsys.readouterr()
    for extra in ([], ["--columns", str(SYNTH_COLUMNS)]):   # typed by a column map, or every extra column
        assert main(["check-data", str(out), *extra]) == 0
        text = capsys.readouterr().out
        assert "clinical column 'age' is empty for 2/" in text and "(P000_t1_L1, P000_t2_L1)" in text

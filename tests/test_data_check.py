"""check-data finds every planted fault in one run; clean data passes."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from rn_classifier.cli import main
from rn_classifier.data.check import check_manifest
from rn_classifier.data.manifest import load_manifest
from rn_classifier.data.molab import import_molab
from rn_classifier.errors import DataIntegrityError, InputError
from builders import save_nifti, write_tiny_molab


@pytest.fixture()
def manifest(tmp_path):
    tiny = write_tiny_molab(tmp_path)
    out = tmp_path / "internal.csv"
    import_molab(tiny["tree"], tiny["labels"], out=out)
    return out


def test_clean_manifest_passes(manifest, capsys):
    df, problems = check_manifest(manifest)
    assert problems == [] and len(df) > 0
    assert main(["check-data", str(manifest)]) == 0


def test_every_planted_fault_is_listed_once_in_one_run(manifest, capsys):
    df = pd.read_csv(manifest, dtype=str)
    base = manifest.parent
    ids = df["case_id"].tolist()
    planted = {}

    def img_of(i):
        return base / df.loc[i, "image"]

    # 1 NaN voxels
    a = nib.load(img_of(0))
    data = np.asarray(a.dataobj, dtype=np.float32)
    data[3, 3, 3] = np.nan
    nan_path = base / "nan_img.nii.gz"
    save_nifti(data, nan_path, a.affine)
    df.loc[0, "image"] = nan_path.name
    planted[ids[0]] = "NaN"
    # 2 a 4D image
    four = base / "four_img.nii.gz"
    save_nifti(np.zeros((4, 4, 4, 2), np.int16), four)
    df.loc[1, "image"] = four.name
    planted[ids[1]] = "3D"
    # 3 mask of another shape
    small = base / "small_msk.nii.gz"
    save_nifti(np.ones((5, 5, 5), np.int16) * 11, small)
    df.loc[2, "mask"] = small.name
    df.loc[2, "mask_labels"] = "11"
    planted[ids[2]] = "shape"
    # 4 lesion codes absent from the mask
    df.loc[3, "mask_labels"] = "71;72"
    planted[ids[3]] = "lacks lesion code"
    # 5 truncated file
    raw = gzip.decompress(img_of(4).read_bytes())
    cut = base / "cut_img.nii"
    cut.write_bytes(raw[: len(raw) // 3])
    df.loc[4, "image"] = cut.name
    planted[ids[4]] = "truncated|not a readable|could not be read"
    # 6 label outside {0, 1}
    df.loc[5, "label"] = "2"
    planted[ids[5]] = "label must be"
    # 7 duplicate case id
    df.loc[7, "case_id"] = df.loc[6, "case_id"]
    planted[df.loc[6, "case_id"]] = "more than once"
    df.to_csv(manifest, index=False)

    _, problems = check_manifest(manifest)
    text = "\n".join(problems)
    import re
    for cid, what in planted.items():
        assert any(cid in p and re.search(what, p) for p in problems), f"{cid}: {what} not found in\n{text}"
    rc = main(["check-data", str(manifest)])
    assert rc == 1
    err = capsys.readouterr().err
    assert f"{len(problems)} problem(s)" in err


def test_a_pool_manifest_may_leave_out_mask_and_label_columns(tmp_path):
    """README: the pretraining pool is `case_id, patient_id, center, image` (mask, label empty)."""
    p = tmp_path / "pool.csv"
    pd.DataFrame({"case_id": ["a", "b"], "patient_id": ["p", "q"], "center": ["c", "c"],
                  "image": ["x.nii", "y.nii"]}).to_csv(p, index=False)
    df = load_manifest(p)
    assert df["label"].isna().all() and (df["mask_path"] == "").all() and df["mask_labels"].tolist() == [(), ()]


def test_load_manifest_errors_name_the_column(tmp_path):
    p = tmp_path / "m.csv"
    pd.DataFrame({"case_id": ["a"], "patient_id": ["p"], "image": ["x.nii"]}).to_csv(p, index=False)
    with pytest.raises(InputError, match=r"missing column\(s\) \['center'\];"):
        load_manifest(p)      # mask, mask_labels, label may be absent together (an unlabeled pool)
    pd.DataFrame({"case_id": ["a"], "patient_id": ["p"], "center": ["c"], "image": ["x.nii"],
                  "mask": ["y.nii"]}).to_csv(p, index=False)
    with pytest.raises(InputError, match=r"missing column\(s\) \['mask_labels', 'label'\];"):
        load_manifest(p)
    pd.DataFrame({"case_id": ["a"], "patient_id": ["p"], "center": ["c"], "image": ["x.nii"],
                  "mask": ["y.nii"], "mask_labels": ["11"], "label": [1], "age": ["old"]}).to_csv(p, index=False)
    with pytest.raises(InputError, match="'sex'.*missing"):
        load_manifest(p, clinical={"age": "numeric", "sex": "categorical"})
    with pytest.raises(DataIntegrityError, match="'age' is numeric but holds 'old'"):
        load_manifest(p, clinical={"age": "numeric"})


def test_other_raters_masks_are_checked_like_the_drawn_one(manifest, capsys):
    """``mask_<rater>`` columns: a missing file, a mask on another grid and an empty mask are one
    problem each, naming case, column and file; a good mask and an empty cell (not contoured) pass."""
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    base = manifest.parent
    ids = df["case_id"].tolist()
    shape = nib.load(base / df.loc[0, "image"]).shape
    affine = nib.load(base / df.loc[0, "image"]).affine
    df["mask_rater2"] = ""
    df.loc[0, "mask_rater2"] = df.loc[0, "mask"]                         # good: the drawn mask itself
    df.loc[1, "mask_rater2"] = "rater2/missing.nii.gz"
    save_nifti(np.full((5, 5, 5), 11, np.int16), base / "rater2_small.nii.gz")
    df.loc[2, "mask_rater2"] = "rater2_small.nii.gz"                    # another grid
    save_nifti(np.zeros(shape, np.int16), base / "rater2_empty.nii.gz", affine)
    df.loc[3, "mask_rater2"] = "rater2_empty.nii.gz"                    # no lesion voxel at all
    df.loc[3, "mask_labels"] = ""                                        # (the drawn mask: every non-zero)
    # df.loc[4:, "mask_rater2"] stays empty: rater 2 did not contour those cases
    df.to_csv(manifest, index=False)

    _, problems = check_manifest(manifest)
    bad = {ids[1]: ("missing.nii.gz", "does not exist"), ids[2]: ("rater2_small.nii.gz", "grid|shape"),
           ids[3]: ("rater2_empty.nii.gz", "empty")}
    assert len(problems) == 3, "\n".join(problems)
    for cid, (file, what) in bad.items():
        [line] = [p for p in problems if f"case {cid}," in p]
        assert "column mask_rater2" in line and file in line and re.search(what, line), line
    assert main(["check-data", str(manifest)]) == 1
    assert "3 problem(s)" in capsys.readouterr().err


def test_a_raters_mask_column_is_not_listed_as_a_clinical_value(manifest, capsys):
    """A rater who did not contour a case is not a clinical value 'imputed as missing'."""
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    df["mask_rater2"] = df["mask"]
    df.loc[1, "mask_rater2"] = ""
    df.to_csv(manifest, index=False)
    assert main(["check-data", str(manifest)]) == 0
    assert "mask_rater2" not in capsys.readouterr().out

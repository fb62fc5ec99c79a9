"""Patient-level split: no patient on two sides, both classes everywhere, reuse, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rn_classifier.data.split import load_split, make_split, save_split
from rn_classifier.errors import InputError


def _cohort(n_patients=40, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        for lesion in range(1 + rng.integers(0, 3)):
            for t in range(1 + rng.integers(0, 2)):
                rows.append({"case_id": f"P{p}_t{t}_L{lesion}", "patient_id": f"P{p}",
                             "label": int(rng.random() < 0.45)})
    return pd.DataFrame(rows).astype({"label": "Int64"})


def test_no_patient_on_two_sides_and_fractions():
    df = _cohort()
    split = make_split(df, test_fraction=0.2, n_folds=5, seed=1)
    side = split["part"] + split["fold"].astype(str)
    assert (side.groupby(split["patient_id"]).nunique() == 1).all()
    n_test_patients = split.loc[split["part"] == "internal_test", "patient_id"].nunique()
    assert 0.1 <= n_test_patients / df["patient_id"].nunique() <= 0.3
    assert sorted(split.loc[split["part"] == "train", "fold"].unique()) == [0, 1, 2, 3, 4]
    labels = df.set_index("case_id")["label"]
    for k in range(5):
        in_fold = split.loc[split["fold"] == k, "case_id"]
        assert labels.loc[in_fold].nunique() == 2
    assert make_split(df, seed=1).equals(split), "deterministic for a seed"


def test_split_file_round_trip_and_mismatch(tmp_path):
    df = _cohort()
    split = make_split(df)
    save_split(split, tmp_path / "split.csv")
    again = load_split(tmp_path / "split.csv", df)
    pd.testing.assert_frame_equal(again.reset_index(drop=True), split.reset_index(drop=True),
                                  check_dtype=False)
    with pytest.raises(InputError, match="does not match the manifest"):
        load_split(tmp_path / "split.csv", df.iloc[:-1])


def test_leaking_split_file_is_refused(tmp_path):
    df = _cohort()
    split = make_split(df)
    pid = split["patient_id"].iloc[0]
    rows = split.index[split["patient_id"] == pid]
    if len(rows) < 2:
        pytest.skip("first patient has one case")
    split.loc[rows[0], "fold"] = (split.loc[rows[1], "fold"] + 1) % 5
    split.loc[rows[0], "part"] = "train"
    split.loc[rows[1], "part"] = "internal_test"
    save_split(split, tmp_path / "s.csv")
    with pytest.raises(InputError, match="more than one side"):
        load_split(tmp_path / "s.csv", df)


def test_errors_one_class_and_too_few_patients():
    df = _cohort(40)
    with pytest.raises(InputError, match="both classes"):
        make_split(df.assign(label=1))
    with pytest.raises(InputError, match="too few for 5 folds"):
        make_split(_cohort(4))


@pytest.mark.parametrize("n_patients,folds", [(4, 2), (6, 5), (3, 2)])
def test_split_of_a_small_cohort_names_the_command_line_options(n_patients, folds, tmp_path, capsys):
    """`split --folds 2` on a handful of patients used to end in scikit-learn's ValueError."""
    from rn_classifier.cli import main

    df = pd.DataFrame({"case_id": [f"P{p}_L1" for p in range(n_patients)],
                       "patient_id": [f"P{p}" for p in range(n_patients)], "center": "C",
                       "image": "x.nii.gz", "mask": "", "mask_labels": "", "label": [p % 2 for p in range(n_patients)]})
    df.to_csv(tmp_path / "m.csv", index=False)
    code = main(["split", str(tmp_path / "m.csv"), "--out", str(tmp_path / "s.csv"), "--folds", str(folds)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.count("error:") == 1, err
    assert f"{n_patients} patients are too few" in err or "holds one class only" in err, err
    assert "--folds" in err and "cv.n_folds" not in err, err
    assert not (tmp_path / "s.csv").exists()


def test_a_test_fraction_above_one_half_is_refused_with_its_key():
    with pytest.raises(InputError, match="split.test_fraction must be at most 0.5"):
        make_split(_cohort(40), test_fraction=0.7, keys=("split.test_fraction", "split.n_folds"))

"""Messages that say what to do (issue 15, items 5 and 6): before, each of these was a message
that named the symptom only."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rn_classifier.cli import main
from rn_classifier.config import REPO_ROOT, find_config, load_config
from rn_classifier.data.manifest import load_manifest
from rn_classifier.data.preprocess import PreprocessConfig
from rn_classifier.errors import ConfigError, InputError
from rn_classifier.pretrain.methods import load_pretrain_config

ROWS = [{"case_id": "C1", "patient_id": "P1", "center": "A", "image": "i1.nii.gz", "mask": "m1.nii.gz",
         "mask_labels": "1", "label": 1, "age": 62.5},
        {"case_id": "C2", "patient_id": "P2", "center": "A", "image": "i2.nii.gz", "mask": "m2.nii.gz",
         "mask_labels": "1", "label": 0, "age": 70.0}]


def test_a_semicolon_separated_manifest_with_decimal_commas_is_read(tmp_path):
    """As Excel writes CSV where ',' is the decimal mark (before: "missing column(s) [...]")."""
    path = tmp_path / "manifest.csv"
    pd.DataFrame(ROWS).to_csv(path, sep=";", decimal=",", index=False)
    assert ";" in path.read_text().splitlines()[0] and "62,5" in path.read_text()
    df = load_manifest(path, clinical={"age": "numeric"})
    assert df["case_id"].tolist() == ["C1", "C2"] and df["age"].tolist() == [62.5, 70.0]


def test_a_manifest_whose_header_lacks_columns_shows_what_it_found(tmp_path):
    path = tmp_path / "manifest.csv"
    pd.DataFrame(ROWS).drop(columns="mask_labels").to_csv(path, index=False)
    with pytest.raises(InputError, match=r"missing column\(s\) \['mask_labels'\]; .* found \['case_id', "):
        load_manifest(path)


def test_a_folder_given_as_a_manifest_names_its_csv_files(tmp_path):
    (tmp_path / "manifests").mkdir()
    pd.DataFrame(ROWS).to_csv(tmp_path / "manifests" / "internal.csv", index=False)
    with pytest.raises(InputError, match=r"manifest .* is a folder; pass the CSV file itself "
                                         r"\(it holds \['manifests/internal.csv'\]\)"):
        load_manifest(tmp_path)


def test_a_scalar_for_a_list_key_says_how_to_write_the_list():
    """Before: "key 'spacing': Invalid value assigned: AnyNode is not a ListConfig, list or tuple"."""
    with pytest.raises(ConfigError, match=r"key 'spacing' is a list, got '2'; write spacing=\[2,2,2\]"):
        load_config(PreprocessConfig, None, ["spacing=2"])


def test_shipped_configs_are_found_by_name_or_path_from_any_folder(tmp_path, monkeypatch):
    """Before: "configs/preprocess/paper.yaml does not exist" outside the checkout."""
    monkeypatch.chdir(tmp_path)
    assert find_config("dino_demo", "pretrain") == REPO_ROOT / "configs" / "pretrain" / "dino_demo.yaml"
    assert find_config("configs/preprocess/paper.yaml") == REPO_ROOT / "configs" / "preprocess" / "paper.yaml"
    assert load_config(PreprocessConfig, "demo").spacing == [2.0, 2.0, 2.0]    # preprocess/demo, not study/demo
    assert load_pretrain_config("mae_demo.yaml").data.pool_cache == "demo_run/cache/unlabeled"
    with pytest.raises(ConfigError, match=r"shipped pretrain configs by name: \['dino_demo', 'dino_vitb', "
                                          r"'mae_demo', 'mae_vitb', 'statistics_demo'\]"):
        load_pretrain_config("dino_dmeo")
    (tmp_path / "own.yaml").write_text("spacing: [3.0, 3.0, 3.0]\n")
    assert load_config(PreprocessConfig, "own.yaml").spacing == [3.0, 3.0, 3.0]   # the user's file first


@pytest.mark.parametrize("name", ["dino_demo", "mae_demo", "dino_vitb", "mae_vitb"])
def test_shipped_pretrain_configs_read_the_cache_the_study_writes(name):
    """`make demo` (a study) writes RUN/cache/unlabeled; before, the configs read RUN/cache/pool."""
    cache = Path(load_pretrain_config(name).data.pool_cache)
    assert cache.parts[-2:] == ("cache", "unlabeled")
    assert cache.parts[0] == ("demo_run" if "demo" in name else "paper_run")


def test_a_dicom_series_read_says_an_itk_warning_in_one_line_and_an_error_without_it(tmp_path, capfd):
    """Before: a multi-line "WARNING: In .../itkImageSeriesReader.hxx, line 502" block on stderr."""
    from rn_classifier.data.dicom_write import write_mr_series
    from rn_classifier.data.ingest import Volume
    from rn_classifier.data.readers import read_image

    volume = Volume((np.random.default_rng(0).random((8, 8, 6)) * 100).astype(np.int16), np.eye(4), "x")
    write_mr_series(volume, tmp_path / "s", key="K", patient_id="P1")
    files = sorted((tmp_path / "s").iterdir())
    files[2].unlink()                                     # a missing slice
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_image(tmp_path / "s").array.shape == (8, 8, 5)
    assert [str(w.message) for w in caught] == [
        f"{tmp_path / 's'}: ImageSeriesReader: Non uniform sampling or missing slices detected,  "
        "maximum nonuniformity:0.75"]
    data = files[3].read_bytes()
    files[3].write_bytes(data[: len(data) - 50])          # a truncated slice: the read fails
    capfd.readouterr()
    with pytest.raises(InputError, match="not a readable image"):
        read_image(tmp_path / "s")
    assert "WARNING" not in capfd.readouterr().err


def test_the_cli_shows_a_package_warning_as_one_warning_line(tmp_path, capsys):
    from rn_classifier.cli import _show_warning
    import rn_classifier.data.ingest as ingest

    _show_warning(UserWarning("series: missing slices"), UserWarning, ingest.__file__, 1)
    assert capsys.readouterr().err.strip() == "warning: series: missing slices"

"""rn_classifier.privacy: stable salted pseudonyms, and texts without the machine's paths."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from rn_classifier.errors import InputError
from rn_classifier.privacy import (display_path, pseudonym, pseudonym_map, read_salt, scrub_paths,
                                   write_salt_file)

SALT = "0123456789abcdef-study-salt"


def test_pseudonyms_are_stable_salted_and_hide_the_id():
    a = pseudonym("MOLAB-017", SALT, prefix="P-")
    assert a == pseudonym("MOLAB-017", SALT, prefix="P-") and a.startswith("P-") and len(a) == 14
    assert a != pseudonym("MOLAB-018", SALT, prefix="P-")
    assert a != pseudonym("MOLAB-017", SALT + "x", prefix="P-")          # another study, other names
    assert "017" not in a and SALT not in a
    # not the plain hash a reader could recompute from a list of candidate ids
    assert a[2:] != hashlib.sha256(b"MOLAB-017").hexdigest()[:12]


def test_pseudonym_map_covers_every_distinct_id():
    mapping = pseudonym_map(["p1", "p2", "p1", " p2 "], SALT)
    assert list(mapping) == ["p1", "p2"] and len(set(mapping.values())) == 2


def test_short_or_missing_salt_is_refused(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="at least 16"):
        pseudonym("x", "short")
    monkeypatch.delenv("RN_PSEUDONYM_SALT", raising=False)
    with pytest.raises(InputError, match=r"set RN_PSEUDONYM_SALT or pass a salt file"):
        read_salt()
    monkeypatch.setenv("RN_PSEUDONYM_SALT", SALT)
    assert read_salt() == SALT


def test_salt_file_is_private_and_never_overwritten(tmp_path):
    salt = write_salt_file(tmp_path / "study.salt")
    assert read_salt(tmp_path / "study.salt") == salt and len(salt) == 64
    assert (tmp_path / "study.salt").stat().st_mode & 0o777 == 0o600
    with pytest.raises(InputError, match="exists already"):
        write_salt_file(tmp_path / "study.salt")


def test_scrub_paths_replaces_run_folder_data_root_and_home(tmp_path):
    run, data = tmp_path / "runs" / "study", tmp_path / "data"
    home = os.path.expanduser("~")
    text = (f"wrote {run}/report/report.html from {data}/molab/P001_img.nii.gz; "
            f"config {home}/configs/x.yaml; sibling {run}_old/x stays; relative runs/x stays")
    out = scrub_paths(text, {run: ".", data: "<data>"})
    assert out == ("wrote ./report/report.html from <data>/molab/P001_img.nii.gz; config ~/configs/x.yaml; "
                   f"sibling {scrub_paths(str(run))}_old/x stays; relative runs/x stays")
    assert str(tmp_path) not in out.replace(f"{scrub_paths(str(run))}_old", "")


def test_display_path(tmp_path):
    run = tmp_path / "run"
    assert display_path(run / "fold_0" / "model.safetensors", run) == "fold_0/model.safetensors"
    assert display_path("relative/file.csv", run) == "relative/file.csv"
    assert display_path(Path.home() / "data" / "x.nii.gz") == "~/data/x.nii.gz" or Path.home() == Path("/")

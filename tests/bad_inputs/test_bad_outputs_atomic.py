"""rn_classifier.atomic: what a failed write leaves (the previous output, nothing else) and what a
successful one looks like (normal permissions, not mkstemp's owner-only 0600)."""

from __future__ import annotations

import errno
import os

import pytest

from rn_classifier import atomic
from rn_classifier.errors import OutputError


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_outputs_get_normal_permissions(tmp_path, umask_022):
    atomic.write_text(tmp_path / "a.json", "{}")
    with atomic.atomic_path(tmp_path / "b.csv") as tmp:
        tmp.write_text("x\n")
    with atomic.atomic_dir(tmp_path / "cache") as tmp:
        (tmp / "crops.npy").write_bytes(b"0")
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.csv").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "cache").stat().st_mode & 0o777 == 0o755


def test_permissions_follow_a_stricter_umask(tmp_path):
    old = os.umask(0o077)
    try:
        atomic.write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o600


def test_failure_while_writing_keeps_the_previous_file_and_leaves_nothing(tmp_path):
    atomic.write_text(tmp_path / "stats.json", "good\n")
    with pytest.raises(RuntimeError, match="bug"):
        with atomic.atomic_path(tmp_path / "stats.json") as tmp:
            tmp.write_text("half")
            raise RuntimeError("bug while writing")
    assert (tmp_path / "stats.json").read_text() == "good\n"
    assert [p.name for p in tmp_path.iterdir()] == ["stats.json"]


def test_disk_full_is_one_output_error_and_keeps_the_previous_folder(tmp_path):
    with atomic.atomic_dir(tmp_path / "cache") as tmp:
        (tmp / "meta.json").write_text("good\n")
    with pytest.raises(OutputError, match=r"cannot write .*cache: the disk is full \(\[Errno 28\]"):
        with atomic.atomic_dir(tmp_path / "cache") as tmp:
            (tmp / "meta.json").write_text("half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert (tmp_path / "cache" / "meta.json").read_text() == "good\n"
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]


def test_reading_errors_inside_a_write_are_not_called_output_errors(tmp_path):
    """The body may read inputs: a permission error there is the input's, not the output's."""
    with pytest.raises(PermissionError):
        with atomic.atomic_path(tmp_path / "out.csv"):
            raise PermissionError(errno.EACCES, "Permission denied", "/data/image.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_reserve_space_allocates_a_sparse_file(tmp_path):
    path = tmp_path / "crops.npy"
    with open(path, "wb") as f:
        f.truncate(1 << 20)                       # sparse: no block allocated yet
    atomic.reserve_space(path)
    assert path.stat().st_size == 1 << 20
    assert path.stat().st_blocks * 512 >= 1 << 20

"""Outputs written atomically: to a temporary name in the same folder, then renamed.

A crash, a full disk or a bad input part-way through never leaves a half-written file under the
final name, and never replaces the previous good file. A folder that cannot be written or a disk
that fills up is one :class:`~rn_classifier.errors.OutputError` naming the output. Renamed
outputs get the permissions of a normally created file (``0666 & ~umask``; ``mkstemp`` would
leave them readable by their owner only).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import OutputError


# Errors of the output location, not of the program, turned into one OutputError: while writing
# (the body may also read inputs, so only errors that writing alone causes) ...
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# ... and while creating the temporary name.
_CREATE_ERRNOS = _WRITE_ERRNOS | {errno.EACCES, errno.EPERM, errno.EROFS}


def make_output_dir(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and its parents) for outputs; OutputError when it cannot be written."""
    folder = Path(folder)
    _check_writable_dir(folder)
    return folder


def _check_writable_dir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        why = f"{blocking} is a file, not a folder" if blocking is not None else exc.strerror or exc
        raise OutputError(f"cannot create output folder {folder}: {why}") from exc
    if not os.access(folder, os.W_OK):
        raise OutputError(f"output folder {folder} is not writable")


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _describe(exc: OSError, final: Path) -> str:
    what = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
            errno.EFBIG: "the file size limit was reached"}.get(exc.errno, exc.strerror)
    return (f"cannot write {final}: {what} ([Errno {exc.errno}] {exc.strerror}); nothing was "
            "written under that name")


@contextlib.contextmanager
def _output_errors(final: Path, errnos=_WRITE_ERRNOS) -> Iterator[None]:
    """Turn an OSError of the output location (disk full, permission) into one OutputError."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in errnos:
            raise
        raise OutputError(_describe(exc, final)) from exc


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` only on success."""
    final = Path(final)
    _check_writable_dir(final.parent)
    with _output_errors(final, _CREATE_ERRNOS):
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix or ".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _output_errors(final):
            yield tmp_path
            os.chmod(tmp_path, 0o666 & ~_umask())
            os.replace(tmp_path, final)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; it replaces ``final`` only on success."""
    final = Path(final)
    _check_writable_dir(final.parent)
    with _output_errors(final, _CREATE_ERRNOS):
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        with _output_errors(final):
            yield tmp
            os.chmod(tmp, 0o777 & ~_umask())
            if final.exists():
                old = final.with_name(f".{final.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# mkstemp's names in atomic_path: ".<final name>.<8 random characters>.tmp"
_LEFTOVER = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def remove_leftovers(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed writer left in ``folder`` (a checkpoint cut off mid-write
    can be gigabytes); returns what was removed. Call it only where no writer is running."""
    folder = Path(folder)
    removed = [p for p in folder.iterdir() if p.is_file() and _LEFTOVER.match(p.name)] if folder.is_dir() else []
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def reserve_space(path: str | os.PathLike) -> None:
    """Allocate the disk blocks of an already sized (sparse) file, e.g. one about to be filled
    through a memory map: a full disk then fails here with an OSError (ENOSPC, turned into an
    OutputError inside :func:`atomic_path` / :func:`atomic_dir`) instead of killing the process
    with SIGBUS when the map first touches a block that cannot be allocated."""
    with open(path, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        try:
            os.posix_fallocate(f.fileno(), 0, size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):  # not supported here
                raise
        except AttributeError:  # no posix_fallocate on this platform
            pass


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")  # not the locale's: GDCM can reset it to C
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_csv(path: str | os.PathLike, frame) -> Path:
    """Write a pandas DataFrame as CSV without its index."""
    with atomic_path(path, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)

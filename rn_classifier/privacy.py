"""Pseudonyms for patient / case ids and paths without the user's machine in them.

Reports and logs leave the hospital: with ``--pseudonymize`` they carry no patient id, and they
never carry an absolute path of the user's machine (a home folder names a person).

* :func:`pseudonym` is a keyed hash (HMAC-SHA256 with a secret salt) of an id: the same id and
  salt always give the same pseudonym, so tables of one study still join; without the salt the
  id cannot be recovered by hashing candidate ids (which a plain hash of a short hospital id
  would allow). The salt comes from the user (``RN_PSEUDONYM_SALT`` or a salt file kept outside
  the report) and is never written into an output: only the pseudonyms are.
* :func:`scrub_paths` rewrites absolute paths in a text: known folders (the run folder, the data
  root) become their given label, the home folder becomes ``~``.
* :func:`display_path` is the form of one path to write into an output: relative to the run
  folder when inside it, ``~/...`` under the home folder, else as given.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

from . import atomic
from .errors import InputError

SALT_ENV = "RN_PSEUDONYM_SALT"
MIN_SALT_CHARS = 16


def new_salt() -> str:
    """A random salt (64 hex characters) for a new study."""
    return secrets.token_hex(32)


def write_salt_file(path: str | os.PathLike) -> str:
    """Create a salt file readable by its owner only; returns the salt. Keep it out of reports."""
    path = Path(path)
    if path.exists():
        raise InputError(f"salt file {path} exists already; reuse it (read_salt) so pseudonyms stay "
                         "stable, or remove it to start new ones")
    salt = new_salt()
    atomic.write_text(path, salt + "\n")
    path.chmod(0o600)
    return salt


def read_salt(path: str | os.PathLike | None = None) -> str:
    """The salt from ``path`` or, without a path, from the environment variable ``RN_PSEUDONYM_SALT``."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"salt file {p} does not exist (create one with "
                             "rn_classifier.privacy.write_salt_file)")
        salt, source = p.read_text().strip(), str(p)
    else:
        salt, source = os.environ.get(SALT_ENV, "").strip(), f"${SALT_ENV}"
        if not salt:
            raise InputError(f"pseudonyms need a secret salt: set {SALT_ENV} or pass a salt file")
    if len(salt) < MIN_SALT_CHARS:
        raise InputError(f"the salt in {source} has {len(salt)} characters, expected at least "
                         f"{MIN_SALT_CHARS} (use rn_classifier.privacy.new_salt())")
    return salt


def pseudonym(identifier: object, salt: str, prefix: str = "", length: int = 12) -> str:
    """``prefix`` + the first ``length`` hex digits of HMAC-SHA256(salt, id); stable across runs."""
    if len(salt) < MIN_SALT_CHARS:
        raise InputError(f"salt too short ({len(salt)} characters, expected at least {MIN_SALT_CHARS})")
    digest = hmac.new(salt.encode(), str(identifier).strip().encode(), hashlib.sha256).hexdigest()
    return f"{prefix}{digest[:length]}"


def pseudonym_map(identifiers: Iterable[object], salt: str, prefix: str = "", length: int = 12) -> dict[str, str]:
    """{id: pseudonym} for every distinct id; refuses a collision (two ids, one pseudonym)."""
    mapping: dict[str, str] = {}
    seen: dict[str, str] = {}
    for identifier in identifiers:
        key = str(identifier).strip()
        if key in mapping:
            continue
        value = pseudonym(key, salt, prefix, length)
        if value in seen:
            raise InputError(f"two ids share the pseudonym {value}; use a longer length than {length}")
        mapping[key], seen[value] = value, key
    return mapping


def _home() -> str | None:
    home = os.path.expanduser("~")
    return home if home not in ("~", "/", "") else None


def scrub_paths(text: str, roots: Mapping[str | os.PathLike, str] | None = None) -> str:
    """``text`` with absolute paths of this machine replaced.

    roots: ``{folder: label}``; a path inside ``folder`` becomes ``label/rest`` (e.g. the run
    folder → ``"."``, the data root → ``"<data>"``); the real path of each folder is replaced too.
    The home folder becomes ``~``. Longer folders are replaced first.
    """
    pairs: dict[str, str] = {}
    for folder, label in (roots or {}).items():
        for form in {os.path.abspath(folder), os.path.realpath(folder)}:
            pairs[form.rstrip("/")] = label
    home = _home()
    if home:
        for form in {home, os.path.realpath(home)}:
            pairs.setdefault(form.rstrip("/"), "~")
    for folder in sorted(pairs, key=len, reverse=True):
        # the folder itself or followed by '/', not a longer name that starts the same way
        text = re.sub(re.escape(folder) + r"(?![\w.-])", lambda _m, lab=pairs[folder]: lab, text)
    return text


def display_path(path: str | os.PathLike, run_dir: str | os.PathLike | None = None) -> str:
    """A path as it may appear in an output: relative to ``run_dir`` when inside it, ``~/...``
    under the home folder, otherwise unchanged (a relative path stays relative)."""
    p = Path(path)
    if run_dir is not None and p.is_absolute():
        try:
            return str(Path(os.path.realpath(p)).relative_to(os.path.realpath(run_dir))) or "."
        except ValueError:
            pass
    return scrub_paths(str(p))

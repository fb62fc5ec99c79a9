"""Pseudonyms and path scrubbing for a shareable report, on top of :mod:`rn_classifier.privacy`.

Ids become keyed hashes (:func:`rn_classifier.privacy.pseudonym`, HMAC-SHA256 with a secret
salt): the same id gets the same pseudonym everywhere in one report and, with the same salt
(``RN_PSEUDONYM_SALT`` or a salt file), in every report of the study. Without a salt a random
one is drawn for this report only (pseudonyms then differ between reports). The salt is never
written anywhere.

Paths: the run folder becomes ``.`` and the home folder ``~`` (:func:`rn_classifier.privacy.scrub_paths`);
any other absolute path left (a data disk, a mount) is reduced to ``…/<last component>``.
"""

from __future__ import annotations

import os
import re

from ..privacy import SALT_ENV, new_salt, pseudonym, read_salt
from ..privacy import scrub_paths as scrub_known_paths

_ABSOLUTE_PATH = re.compile(r"(?<![\w.])(?:/|~/|[A-Za-z]:[\\/])[^\s'\",;:\]\)}]*")


class Pseudonymizer:
    """``case(id)`` / ``patient(id)`` → stable pseudonyms; identity when ``enabled`` is False."""

    def __init__(self, enabled: bool, salt: str | None = None, salt_file: str | os.PathLike | None = None):
        self.enabled = enabled
        self._salt = ""
        self.salt_source = None
        if not enabled:
            return
        if salt is not None:
            self._salt, self.salt_source = salt, "given by the caller"
        elif salt_file is not None or os.environ.get(SALT_ENV):
            self._salt = read_salt(salt_file)
            self.salt_source = ("salt file (stable across reports)" if salt_file is not None
                                else f"${SALT_ENV} (stable across reports)")
        else:
            self._salt, self.salt_source = new_salt(), "random for this report (pseudonyms differ between reports)"

    def case(self, case_id) -> str:
        return pseudonym(case_id, self._salt, prefix="case-") if self.enabled else str(case_id)

    def patient(self, patient_id) -> str:
        return pseudonym(patient_id, self._salt, prefix="pt-") if self.enabled else str(patient_id)


def scrub_paths(text: str, run_dir: str | os.PathLike | None = None) -> str:
    """``text`` with no absolute path of this machine: the run folder → ``.``, home → ``~``,
    any other absolute path → ``…/<last component>``."""
    text = scrub_known_paths(text, {run_dir: "."} if run_dir is not None else None)

    def short(match: re.Match) -> str:
        path = match.group(0).rstrip("/\\")
        name = re.split(r"[\\/]", path)[-1]
        return f"…/{name}" if name else "…"
    return _ABSOLUTE_PATH.sub(lambda m: m.group(0) if m.group(0).startswith("~/") else short(m), text)

"""Pseudonyms for case and patient ids, and scrubbing of machine paths, for shareable reports.

Ids become keyed hashes (HMAC-SHA256 with a secret salt, first 10 hex digits): the same id gets
the same pseudonym everywhere in one report, and with the same salt in every report
(``RN_PSEUDONYM_SALT`` in the environment; otherwise a random salt per report). The salt is
never written anywhere. Absolute paths are reduced to their last component.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets

SALT_ENV = "RN_PSEUDONYM_SALT"
_ABSOLUTE_PATH = re.compile(r"(?<![\w.])(?:/|~/|[A-Za-z]:[\\/])[^\s'\",;:\]\)}]*")


class Pseudonymizer:
    """``case(id)`` / ``patient(id)`` → stable pseudonyms; identity when ``enabled`` is False."""

    def __init__(self, enabled: bool, salt: str | None = None):
        self.enabled = enabled
        self._salt = (salt or os.environ.get(SALT_ENV) or secrets.token_hex(16)).encode()

    def _hash(self, prefix: str, value) -> str:
        digest = hmac.new(self._salt, str(value).encode(), hashlib.sha256).hexdigest()
        return f"{prefix}-{digest[:10]}"

    def case(self, case_id) -> str:
        return self._hash("case", case_id) if self.enabled else str(case_id)

    def patient(self, patient_id) -> str:
        return self._hash("pt", patient_id) if self.enabled else str(patient_id)

    @property
    def salt_source(self) -> str:
        return (f"${SALT_ENV} (stable across reports)" if os.environ.get(SALT_ENV)
                else "random per report (pseudonyms differ between reports)")


def scrub_paths(text: str) -> str:
    """Replace every absolute path in ``text`` by ``…/<last component>``."""
    def short(match: re.Match) -> str:
        path = match.group(0).rstrip("/\\")
        name = re.split(r"[\\/]", path)[-1]
        return f"…/{name}" if name else "…"
    return _ABSOLUTE_PATH.sub(short, text)

"""Errors that reach the user.

Every problem caused by the user's input (a file, a case, a config key) raises
:class:`InputError` (or a subclass) with one message that names the thing and says what was
expected. The CLI turns these into one line on stderr and a non-zero exit code; anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Sequence


class InputError(ValueError):
    """Bad user input: the message names the file / case / key and what was expected."""


class ConfigError(InputError):
    """A config file or override that the stage's schema rejects."""


class DataIntegrityError(InputError):
    """One or more cases of a cohort failed the integrity check.

    ``problems`` holds every failure found (case id, what was expected, what was found), so a
    user fixes the whole dataset in one pass (nnU-Net's verify_dataset_integrity style).
    """

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s) found:\n{lines}")


class OutputError(InputError):
    """An output that cannot be written: folder not writable, disk full, file size limit.

    The message names the output; nothing is left under its final name (rn_classifier.atomic).
    """


def check_choice(value, name: str, choices: Sequence, error: type[InputError] = InputError):
    """``value`` if it is one of ``choices``; else one ``error`` naming the key and the choices
    (``ConfigError`` for a config key). The one check of a string choice in the package."""
    if value not in choices:
        raise error(f"{name} must be one of {list(choices)}, got {value!r}")
    return value

"""Errors that reach the user.

Every problem caused by the user's input (a file, a case, a config key) raises
:class:`InputError` (or a subclass) with one message that names the thing and says what was
expected. The CLI turns these into one line on stderr and a non-zero exit code; anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations


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

"""``rn-classifier report``: one self-contained HTML report (figures inlined) and report.json.

:func:`build_report` is the entry point (the study runner calls it); :mod:`.sources` finds the
inputs, :mod:`.build` assembles the numbers and renders ``templates/report.html``,
:mod:`.figures` draws the plots, :mod:`.gallery` the attention maps, :mod:`.pseudonym` hides ids.
:func:`build_report` is imported on first use (PEP 562), so that ``rn-classifier`` registering
its ``report`` command (``report.commands``) imports no pandas: every other command, ``predict``
above all, starts without it.
"""

from __future__ import annotations

import importlib

__all__ = ["build_report"]


def __getattr__(name: str):
    if name == "build_report":
        return importlib.import_module(".build", __name__).build_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

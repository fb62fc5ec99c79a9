"""``rn-classifier report``: one self-contained HTML report (figures inlined) and report.json.

:func:`build_report` is the entry point (the study runner calls it); :mod:`.sources` finds the
inputs, :mod:`.build` assembles the numbers and renders ``templates/report.html``,
:mod:`.figures` draws the plots, :mod:`.gallery` the attention maps, :mod:`.pseudonym` hides ids.
"""

from .build import build_report

__all__ = ["build_report"]

"""``rn-classifier predict``: a fine-tuned model (its model bundle) on one new patient's case.

:func:`predict_case` (outputs in :mod:`.case`), :func:`load_model` (the bundle of ``--model``)
and the frozen threshold in :mod:`.model`, input checks and preprocessing in :mod:`.inputs`.
The names are imported on first use (PEP 562), so that ``rn-classifier`` registering its
``predict`` command (``predict.commands``) imports no torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {"predict_case": ".case", "frozen_threshold": ".model", "load_model": ".model"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

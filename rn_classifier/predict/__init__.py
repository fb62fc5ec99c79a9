"""``rn-classifier predict``: a fine-tuned model (its model bundle) on one new patient's case.

:func:`predict_case` (outputs in :mod:`.case`), :func:`load_model` (the bundle of ``--model``)
and the frozen threshold in :mod:`.model`, input checks and preprocessing in :mod:`.inputs`.
"""

from .case import predict_case
from .model import frozen_threshold, load_model

__all__ = ["frozen_threshold", "load_model", "predict_case"]

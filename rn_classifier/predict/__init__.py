"""``rn-classifier predict``: a trained fine-tuning run on one new patient's case.

:func:`predict_case` (outputs in :mod:`.case`), :class:`TrainedRun` (the fold models of a run
folder, :mod:`.trained_run`), input checks and preprocessing in :mod:`.inputs`.
"""

from .case import predict_case
from .trained_run import TrainedRun, frozen_threshold

__all__ = ["TrainedRun", "frozen_threshold", "predict_case"]

"""The model ``predict`` serves: a model bundle (seam 5), and the threshold it decides with.

``--model`` names a bundle folder (``bundle.json`` + fold weights, :mod:`rn_classifier.models.bundle`)
or a fine-tuning run folder, whose ``bundle/`` is used; a run folder made before bundles existed
gets its bundle written once (the only path that imports fine-tuning code).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError
from ..models.bundle import META_NAME, ModelBundle, threshold_from_stats

RUN_BUNDLE = "bundle"     # = rn_classifier.finetune.bundle.BUNDLE_DIR


def load_model(path: str | os.PathLike) -> ModelBundle:
    """The model bundle at ``path``, or the bundle of the fine-tuning run folder ``path``."""
    path = Path(path)
    if (path / META_NAME).is_file():
        return ModelBundle(path)
    if (path / RUN_BUNDLE / META_NAME).is_file():
        return ModelBundle(path / RUN_BUNDLE)
    if (path / "config.yaml").is_file():          # a run folder from before model bundles
        from ..finetune.bundle import export_bundle

        return ModelBundle(export_bundle(path))
    if not path.is_dir():
        raise InputError(f"--model {path}: folder does not exist")
    raise InputError(f"--model {path} is neither a model bundle ({META_NAME}) nor a fine-tuning run "
                     "folder (config.yaml); pass RUN/finetune/<model> or its bundle/ folder")


def frozen_threshold(model: ModelBundle, stats_path: str | os.PathLike | None = None) -> dict:
    """The model's decision threshold, frozen on internal out-of-fold predictions.

    ``stats_path``: a ``stats.json`` of ``rn-classifier compare`` whose threshold for this model
    to use; default: the one the bundle records (the study's compare, or the same function on the
    run's own out-of-fold predictions).
    """
    if stats_path is None:
        if model.threshold is None:
            raise InputError(f"model bundle {model.folder} records no threshold (its run had no oof or "
                             "internal_test predictions); pass --stats with a compare stats.json")
        return dict(model.threshold)
    path = Path(stats_path)
    if not path.is_file():
        raise InputError(f"--stats {path}: file does not exist")
    chosen = threshold_from_stats(path, model.name)
    if chosen is None:
        import json

        known = sorted((json.loads(path.read_text()).get("thresholds") or {}))
        raise InputError(f"--stats {path} holds no threshold for model {model.name!r}; models with "
                         f"thresholds: {known}")
    return chosen

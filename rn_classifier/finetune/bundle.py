"""A finished fine-tuning run folder → its model bundle (seam 5, :mod:`rn_classifier.models.bundle`).

What the run folder (:mod:`.run`) provides: ``config.yaml`` (name, family, clinical columns),
``provenance.json`` (git SHA, date, synthetic flag, for late fusion the image run),
``predictions.csv`` (out-of-fold predictions → the frozen threshold) and one model per fold in
``folds/fold_k/``:

=================  ==========================================================================
family             fold files
=================  ==========================================================================
``image``          ``model.safetensors`` + ``model.json`` (encoder, crop, spacing, norm.)
``intermediate``   the same + ``clinical_preprocessor.json``
``late``           ``late_fusion.json`` (stacker on the image run's fold-k logit; the image
                   run's fold networks go into the bundle too)
``clinical``       ``clinical_model.json``
=================  ==========================================================================

The threshold is the one ``rn-classifier compare`` froze for the model when the run sits in a
study folder (``RUN/finetune/<model>``, ``RUN/compare/stats.json``), else the same function on
the run's own predictions (:func:`rn_classifier.stats.compare.choose_thresholds`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from ..config import load_config
from ..errors import InputError
from ..models.bundle import (META_NAME, Preprocessing, read_bundle_meta, set_threshold,
                             threshold_from_stats, write_bundle)
from ..family import ModelFamily, family_of
from .config import FinetuneConfig
from .cv import fold_dir, read_fold

BUNDLE_DIR = "bundle"
DEFAULT_NORMALISATION = {"method": "zscore_foreground", "clip_percentiles": [0.5, 99.5]}
# the fold file holding the logistic model of each family that has one
LOGISTIC_FILES = {ModelFamily.LATE: "late_fusion.json", ModelFamily.CLINICAL: "clinical_model.json"}


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"{path} is missing; the run folder is incomplete (finish the run first)")
    return json.loads(path.read_text())


def study_stats(run_dir: Path) -> Path:
    """Where the study's ``compare`` writes its stats.json for a run in ``RUN/finetune/<model>``."""
    return run_dir.parent.parent / "compare" / "stats.json"


class RunFolder:
    """The files of a finished fine-tuning run (complete folds checked)."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        if not (self.run_dir / "config.yaml").is_file():
            raise InputError(f"{self.run_dir} is not a fine-tuning run folder: config.yaml is missing "
                             "(pass the --out folder of `rn-classifier finetune`, e.g. RUN/finetune/ssl_vit)")
        self.cfg = load_config(FinetuneConfig, self.run_dir / "config.yaml")
        self.name = self.cfg.name
        self.family = family_of(self.cfg)
        self.provenance = _read_json(self.run_dir / "provenance.json")
        self.n_folds = int(self.cfg.cv.n_folds)
        self.fold_dirs = [fold_dir(self.run_dir, k) for k in range(self.n_folds)]
        incomplete = [str(d) for d in self.fold_dirs if read_fold(d) is None]
        if incomplete:
            raise InputError(f"{self.run_dir}: fold(s) {incomplete} are not complete; a model can only "
                             "predict once every fold is trained")

    def image_run(self) -> "RunFolder":
        """The run whose fold networks this model uses: itself, or late fusion's image run."""
        if self.family.trains_a_network:
            return self
        recorded = Path(self.provenance.get("image_run") or self.run_dir / "image_model")
        # relative to this run folder (how runs record it) or absolute; as an older run recorded it
        # (the working directory); else, for a moved study folder, inside this run or beside it by name
        candidates = [self.run_dir / recorded, recorded, self.run_dir / "image_model",
                      self.run_dir.parent / recorded.name]
        image_dir = next((c for c in candidates if (c / "config.yaml").is_file()), None)
        if image_dir is None:
            raise InputError(f"late-fusion run {self.run_dir}: its image run {recorded.name} was not "
                             f"found (looked at {recorded} and beside the run folder)")
        image = RunFolder(image_dir)
        if image.n_folds != self.n_folds:
            raise InputError(f"late-fusion run {self.run_dir} has {self.n_folds} folds but its image "
                             f"run {image_dir} has {image.n_folds}")
        return image

    def threshold(self) -> dict | None:
        """The frozen threshold: the study's (compare/stats.json) if any, else from predictions.csv."""
        stats = study_stats(self.run_dir)
        if stats.is_file() and (chosen := threshold_from_stats(stats, self.name)) is not None:
            return chosen
        # imported here: statsmodels and scikit-learn start-up is only needed for this
        from ..stats.compare import THRESHOLD_RULE, choose_thresholds
        from ..stats.predictions import read_predictions

        predictions = self.run_dir / "predictions.csv"
        if not predictions.is_file():
            raise InputError(f"{predictions} is missing: no out-of-fold predictions to freeze a threshold on")
        table = read_predictions([predictions])
        chosen = choose_thresholds(table[table["model"] == self.name], [self.name])[self.name]
        if chosen["threshold"] is None:
            return None
        return {"value": float(chosen["threshold"]), "chosen_on": chosen["threshold_cohort"],
                "source": "the run's own predictions.csv (rn_classifier.stats.compare.choose_thresholds, "
                          "the function `rn-classifier compare` uses)",
                "rule": THRESHOLD_RULE}


def _network_part(image: RunFolder, fusion_dropout: float) -> tuple[dict, dict, list]:
    """(architecture, preprocessing, fold state dicts) from the image run's fold files."""
    from safetensors.torch import load_file

    metas = [_read_json(d / "model.json") for d in image.fold_dirs]
    first = metas[0]
    arch = {"network": first["network"], "arch": first.get("arch"), "encoder": first["encoder"],
            "head_dropout": first.get("head_dropout", 0.0), "pool": first.get("pool", "cls"),
            "fusion": {**first.get("fusion", {}), "dropout": float(fusion_dropout)}}
    for k, meta in enumerate(metas[1:], start=1):
        if meta["encoder"] != first["encoder"] or meta["network"] != first["network"]:
            raise InputError(f"{image.fold_dirs[k] / 'model.json'}: fold {k}'s network differs from fold 0's")
    prep = Preprocessing(tuple(float(s) for s in first["spacing"]), tuple(int(c) for c in first["crop_size"]),
                         dict(first.get("normalisation") or DEFAULT_NORMALISATION))
    states = []
    for d in image.fold_dirs:
        try:
            states.append(load_file(str(d / "model.safetensors")))
        except Exception as exc:
            raise InputError(f"{d / 'model.safetensors'} is not a readable safetensors file: {exc}") from None
    return arch, prep.to_json(), states


def _fold_entry(run: RunFolder, k: int) -> dict:
    folder = run.fold_dirs[k]
    entry = {"fold": k, "clinical_transform": None, "logistic": None,
             "selected": {key: value for key, value in _read_json(folder / "fold.json").items()
                          if key not in ("fold", "files")}}
    if run.family is ModelFamily.INTERMEDIATE:
        entry["clinical_transform"] = _read_json(folder / "clinical_preprocessor.json")
        # Each fold's one-hot levels come from its own training cases, so the clinical vector's
        # width can differ between folds; the network of each fold is built with its own.
        entry["n_clinical"] = int(_read_json(folder / "model.json")["fusion"]["n_clinical"])
    if run.family in LOGISTIC_FILES:
        entry["logistic"] = _read_json(folder / LOGISTIC_FILES[run.family])
    return entry


def _portable(provenance: dict, run_name: str, image_run: RunFolder | None) -> dict:
    """The run's provenance with folder names instead of this machine's paths."""
    out = {**provenance, "run": run_name}
    if out.get("pretrained"):
        out["pretrained"] = Path(out["pretrained"]).name
    if image_run is not None:
        out["image_run"] = image_run.run_dir.name
    return out


def export_bundle(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the model bundle of the finished run in ``run_dir`` to ``out`` (default
    ``run_dir/bundle``); returns the bundle folder."""
    run = RunFolder(run_dir)
    arch = prep = states = None
    if run.family.uses_images:
        arch, prep, states = _network_part(run.image_run(), run.cfg.fusion.dropout)
    image_run = run.image_run() if run.family is ModelFamily.LATE else None
    meta = {
        "name": run.name, "family": run.family.value, "n_folds": run.n_folds,
        "architecture": arch, "preprocessing": prep,
        "clinical_columns": dict(run.cfg.clinical) if run.family.uses_clinical else None,
        "folds": [_fold_entry(run, k) for k in range(run.n_folds)],
        "threshold": run.threshold(),
        "provenance": _portable(run.provenance, run.run_dir.name, image_run),
    }
    return write_bundle(Path(out) if out is not None else run.run_dir / BUNDLE_DIR, meta, states)


def record_thresholds(stats_path: str | os.PathLike, run_dirs: Iterable[str | os.PathLike]) -> None:
    """Write the thresholds ``compare`` froze (``stats_path``) into the bundles of ``run_dirs``
    (the study does this after its compare stage)."""
    for run_dir in run_dirs:
        bundle = Path(run_dir) / BUNDLE_DIR
        if not (bundle / META_NAME).is_file():
            continue
        chosen = threshold_from_stats(stats_path, read_bundle_meta(bundle)["name"])
        if chosen is not None:
            set_threshold(bundle, chosen)

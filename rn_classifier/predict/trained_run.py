"""A finished fine-tuning run folder, loaded for prediction on new cases.

What a run folder (:mod:`rn_classifier.finetune.run`) provides: ``config.yaml`` (model name,
kind, clinical columns), ``provenance.json`` (git SHA, date, synthetic flag, for late fusion the
image run), ``predictions.csv`` (out-of-fold predictions → the frozen threshold) and one model per
cross-validation fold in ``folds/fold_k/``:

=======================  ====================================================================
kind                     fold files
=======================  ====================================================================
``image``                ``model.safetensors`` + ``model.json`` (encoder, crop, spacing, norm.)
``intermediate``         the same + ``clinical_preprocessor.json``
``late``                 ``late_fusion.json`` (stacker on the image run's fold-k logit)
``clinical``             ``clinical_model.json``
=======================  ====================================================================

A new case is predicted by every fold model; the probability is their mean and the fold spread
their standard deviation, exactly as the run's internal test and external predictions
(:func:`rn_classifier.finetune.cv.ensemble`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError

KINDS = ("image", "intermediate", "late", "clinical")


@dataclass(frozen=True)
class Preprocessing:
    """The training setting a new image is brought to (from the fold's ``model.json``)."""

    spacing: tuple[float, float, float]
    crop_size: tuple[int, int, int]
    normalisation: dict

    @property
    def crop_setting(self):
        from ..data.crop import CropSetting

        return CropSetting.from_dict(self.spacing, self.crop_size, self.normalisation)


@dataclass
class FoldOutput:
    """Per fold model k: logit and probability of radiation necrosis, attention maps (or None)."""

    logits: np.ndarray
    probs: np.ndarray
    maps: list = field(default_factory=list)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"{path} is missing; the run folder is incomplete (finish the run first)")
    return json.loads(path.read_text())


class TrainedRun:
    """Fold models and settings of one fine-tuning run folder (loaded lazily, on CPU)."""

    def __init__(self, run_dir: str | os.PathLike):
        from ..config import load_config
        from ..finetune.config import FinetuneConfig
        from ..finetune.cv import fold_dir, read_fold

        self.run_dir = Path(run_dir)
        if not (self.run_dir / "config.yaml").is_file():
            raise InputError(f"{self.run_dir} is not a fine-tuning run folder: config.yaml is missing "
                             "(pass the --out folder of `rn-classifier finetune`, e.g. RUN/finetune/ssl_vit)")
        self.cfg = load_config(FinetuneConfig, self.run_dir / "config.yaml")
        self.name = self.cfg.name
        self.provenance = _read_json(self.run_dir / "provenance.json")
        self.synthetic = bool(self.provenance.get("synthetic", False))
        self.n_folds = int(self.cfg.cv.n_folds)
        if self.cfg.model.kind == "clinical":
            self.kind = "clinical"
        elif self.cfg.fusion.kind == "late":
            self.kind = "late"
        elif self.cfg.fusion.kind == "intermediate":
            self.kind = "intermediate"
        else:
            self.kind = "image"
        self.clinical_spec = dict(self.cfg.clinical) if self.kind != "image" else {}
        self.fold_dirs = [fold_dir(self.run_dir, k) for k in range(self.n_folds)]
        incomplete = [str(d) for d in self.fold_dirs if read_fold(d) is None]
        if incomplete:
            raise InputError(f"{self.run_dir}: fold(s) {incomplete} are not complete; a model can only "
                             "predict once every fold is trained")
        self.image_run: TrainedRun | None = None
        if self.kind == "late":
            recorded = Path(self.provenance.get("image_run") or self.run_dir / "image_model")
            # as recorded; else, for a moved study folder, inside this run or beside it by name
            candidates = [recorded, self.run_dir / recorded, self.run_dir / "image_model",
                          self.run_dir.parent / recorded.name]
            image_dir = next((c for c in candidates if (c / "config.yaml").is_file()), None)
            if image_dir is None:
                raise InputError(f"late-fusion run {self.run_dir}: its image run {recorded.name} was not "
                                 f"found (looked at {recorded} and beside the run folder)")
            self.image_run = TrainedRun(image_dir)
            if self.image_run.n_folds != self.n_folds:
                raise InputError(f"late-fusion run {self.run_dir} has {self.n_folds} folds but its image "
                                 f"run {image_dir} has {self.image_run.n_folds}")
        self._networks: list | None = None
        self._clinical_models: list | None = None

    # -- settings -------------------------------------------------------------------------
    @property
    def uses_images(self) -> bool:
        return self.kind != "clinical"

    def fold_meta(self, k: int) -> dict:
        return _read_json(self.fold_dirs[k] / "model.json")

    @property
    def preprocessing(self) -> Preprocessing | None:
        """Spacing, crop size and intensity normalisation the image models were trained with."""
        if self.kind == "late":
            return self.image_run.preprocessing
        if self.kind == "clinical":
            return None
        meta = self.fold_meta(0)
        norm = meta.get("normalisation") or {"method": "zscore_foreground",
                                             "clip_percentiles": [0.5, 99.5]}
        return Preprocessing(tuple(float(s) for s in meta["spacing"]),
                             tuple(int(c) for c in meta["crop_size"]), dict(norm))

    def clinical_categories(self) -> dict[str, list[str]]:
        """Accepted values of each categorical clinical column (the categories seen in training,
        union over the fold models; "missing" is the imputation fill, not a value to pass)."""
        payloads = []
        for d in self.fold_dirs:
            for name in ("clinical_preprocessor.json", "clinical_model.json", "late_fusion.json"):
                if (d / name).is_file():
                    payload = json.loads((d / name).read_text())
                    payloads.append(payload.get("preprocessor", payload))
        accepted: dict[str, set] = {}
        for payload in payloads:
            cat = payload.get("categorical") or {}
            for col, cats in zip(cat.get("columns", []), cat.get("categories", [])):
                accepted.setdefault(col, set()).update(c for c in cats if c != cat.get("fill"))
        return {col: sorted(values) for col, values in accepted.items()}

    # -- models ---------------------------------------------------------------------------
    def networks(self) -> list:
        """The fold classifier networks (image / intermediate kinds), weights loaded, eval mode."""
        if self._networks is None:
            self._networks = [self._load_network(k) for k in range(self.n_folds)]
        return self._networks

    def _load_network(self, k: int):
        from safetensors.torch import load_file

        from ..finetune.clinical import ClinicalTransformJSON
        from ..finetune.fusion import IntermediateFusionClassifier
        from ..finetune.networks import ImageClassifier
        from ..models.vit3d import VisionTransformer3D

        meta = self.fold_meta(k)
        encoder = VisionTransformer3D(**meta["encoder"])
        if meta["network"] == "intermediate_fusion":
            fusion = meta["fusion"]
            network = IntermediateFusionClassifier(encoder, int(fusion["n_clinical"]),
                                                   int(fusion["clinical_embed_dim"]),
                                                   bool(fusion["cross_attention"]),
                                                   int(fusion["attention_heads"]),
                                                   float(self.cfg.fusion.dropout),
                                                   meta.get("pool", "cls"))
            network.clinical_transform = ClinicalTransformJSON(
                _read_json(self.fold_dirs[k] / "clinical_preprocessor.json"))
        else:
            network = ImageClassifier(encoder, float(meta.get("head_dropout", 0.0)),
                                      meta.get("pool", "cls"))
        weights = self.fold_dirs[k] / "model.safetensors"
        try:
            state = load_file(str(weights))
        except Exception as exc:
            raise InputError(f"{weights} is not a readable safetensors file: {exc}") from None
        try:
            network.load_state_dict(state)
        except RuntimeError as exc:
            raise InputError(f"{weights} does not match the network in {weights.parent / 'model.json'}: "
                             f"{str(exc).splitlines()[0]}") from None
        return network.eval()

    def _logistic(self, k: int):
        from ..finetune.clinical_model import LogisticModelJSON

        name = "late_fusion.json" if self.kind == "late" else "clinical_model.json"
        return LogisticModelJSON.load(self.fold_dirs[k] / name)

    def predict(self, crop: np.ndarray | None, clinical: pd.DataFrame | None,
                with_attention: bool = True) -> FoldOutput:
        """Every fold model on one case.

        crop: ``(2, X, Y, Z)`` float32 (T1CE, lesion mask) at the training setting, or None for
        the clinical-only model; clinical: a one-row frame of the clinical columns (or None).
        """
        import torch

        from ..explain.maps import logits_and_attention

        if self.kind == "clinical":
            logits = np.array([self._logistic(k).decision_function(clinical)[0]
                               for k in range(self.n_folds)])
            return FoldOutput(logits, 1.0 / (1.0 + np.exp(-logits)), [])
        if self.kind == "late":
            image = self.image_run.predict(crop, None, with_attention)
            logits = []
            for k in range(self.n_folds):
                frame = clinical.assign(image_logit=float(image.logits[k]))
                logits.append(self._logistic(k).decision_function(frame)[0])
            logits = np.asarray(logits)
            return FoldOutput(logits, 1.0 / (1.0 + np.exp(-logits)), image.maps)
        x = torch.as_tensor(np.asarray(crop, dtype=np.float32))[None]
        logits, maps = [], []
        for network in self.networks():
            c = None
            if self.kind == "intermediate":
                c = torch.as_tensor(network.clinical_transform.transform(clinical), dtype=torch.float32)
            if with_attention:
                logit, case_maps = logits_and_attention(network, x, c)
                maps.append(case_maps[0])
            else:
                with torch.no_grad():
                    logit = network(x, c).float().numpy().reshape(-1)
            logits.append(float(logit[0]))
        logits = np.asarray(logits)
        return FoldOutput(logits, 1.0 / (1.0 + np.exp(-logits)), maps)


def frozen_threshold(run: TrainedRun, stats_path: str | os.PathLike | None = None) -> dict:
    """The model's decision threshold, frozen on internal out-of-fold predictions.

    Preferred: the threshold ``rn-classifier compare`` froze for this model (``stats.json``:
    ``--stats``, or ``RUN/compare/stats.json`` when the run sits in a study folder
    ``RUN/finetune/<model>``). Otherwise it is computed from the run's own ``predictions.csv``
    with the same function (:func:`rn_classifier.stats.compare.choose_thresholds`: Youden's J on
    the oof predictions, frozen), so both give the same number for the same predictions.
    """
    candidates = [Path(stats_path)] if stats_path else [run.run_dir.parent.parent / "compare" / "stats.json"]
    for path in candidates:
        if not path.is_file():
            if stats_path:
                raise InputError(f"--stats {path}: file does not exist")
            continue
        stats = json.loads(path.read_text())
        chosen = (stats.get("thresholds") or {}).get(run.name)
        if chosen and chosen.get("threshold") is not None:
            return {"value": float(chosen["threshold"]), "chosen_on": chosen["threshold_cohort"],
                    "source": f"stats.json of `rn-classifier compare` ({path.parent.name}/{path.name})",
                    "rule": stats.get("threshold_rule")}
        if stats_path:
            raise InputError(f"--stats {path} holds no threshold for model {run.name!r}; models with "
                             f"thresholds: {sorted((stats.get('thresholds') or {}))}")
    # imported here: statsmodels and scikit-learn cost seconds of start-up a stats.json does not need
    from ..stats.compare import THRESHOLD_RULE, choose_thresholds
    from ..stats.predictions import read_predictions

    predictions = run.run_dir / "predictions.csv"
    if not predictions.is_file():
        raise InputError(f"{predictions} is missing: no out-of-fold predictions to freeze a threshold on")
    table = read_predictions([predictions])
    table = table[table["model"] == run.name]
    chosen = choose_thresholds(table, [run.name])[run.name]
    if chosen["threshold"] is None:
        raise InputError(f"{predictions} has no oof or internal_test rows for {run.name}: no threshold")
    return {"value": float(chosen["threshold"]), "chosen_on": chosen["threshold_cohort"],
            "source": "the run's own predictions.csv (rn_classifier.stats.compare.choose_thresholds, "
                      "the function `rn-classifier compare` uses)",
            "rule": THRESHOLD_RULE}

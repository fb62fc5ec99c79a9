"""Model bundle (seam 5): one fine-tuned model as a folder that ``predict`` needs alone.

The fine-tuned twin of the encoder export (:mod:`.export`)::

    bundle.json          format and version; name and family (:mod:`rn_classifier.family`);
                         the number of fold models; the architecture (network, encoder
                         constructor arguments, head, pooling, fusion head); the preprocessing
                         (voxel spacing, crop size, intensity normalisation); the clinical columns
                         and, per fold, the fitted clinical transform / logistic model as plain
                         numbers; the frozen decision threshold and where it came from;
                         provenance (git SHA, date, synthetic flag, the run it came from);
                         optionally ``shift_reference``: the internal range a new case's image
                         statistics are checked against (the study's shift check,
                         :func:`rn_classifier.shift.check.case_reference`)
    fold_k.safetensors   fold model k's classifier network (every family but clinical-only)

A new case is predicted by every fold model: the probability is their mean and the fold spread
their standard deviation, exactly as the run's internal test and external predictions.

Written by the fine-tuning run (:mod:`rn_classifier.finetune.bundle`); read here with torch,
numpy, pandas and safetensors only: no Lightning, scikit-learn or fine-tuning code, so a group
that deploys a model ships this folder, not the run folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from .. import atomic
from ..errors import InputError
from .clinical_json import ClinicalTransformJSON, LogisticModelJSON
from ..family import ModelFamily

FORMAT = "rn-classifier/model-bundle"
VERSION = 1
META_NAME = "bundle.json"
LATE_FUSION_INPUT = "image_logit"      # the stacker's extra numeric column (finetune.fusion)
SHIFT_REFERENCE = "shift_reference"    # optional: bundles written before the shift check lack it
_REQUIRED = ("format", "version", "name", "family", "n_folds", "architecture", "preprocessing",
             "clinical_columns", "folds", "threshold", "provenance")


def weights_name(k: int) -> str:
    return f"fold_{k}.safetensors"


@dataclass(frozen=True)
class Preprocessing:
    """The training setting a new image is brought to."""

    spacing: tuple[float, float, float]
    crop_size: tuple[int, int, int]
    normalisation: dict

    @property
    def crop_setting(self):
        from ..data.crop import CropSetting

        return CropSetting.from_dict(self.spacing, self.crop_size, self.normalisation)

    def to_json(self) -> dict:
        return {"spacing": list(self.spacing), "crop_size": list(self.crop_size),
                "normalisation": dict(self.normalisation)}

    @staticmethod
    def from_json(payload: dict) -> "Preprocessing":
        return Preprocessing(tuple(float(s) for s in payload["spacing"]),
                             tuple(int(c) for c in payload["crop_size"]), dict(payload["normalisation"]))


@dataclass
class FoldOutput:
    """Per fold model k: logit and probability of radiation necrosis, attention maps (or [])."""

    logits: np.ndarray
    probs: np.ndarray
    maps: list = field(default_factory=list)


def write_bundle(folder: str | os.PathLike, meta: dict[str, Any], fold_states: list | None) -> Path:
    """Write ``folder/fold_k.safetensors`` (one state dict per fold, or None for a model without
    a network) and then ``folder/bundle.json``: a folder with a readable ``bundle.json`` is
    complete. ``meta`` holds every key of :data:`_REQUIRED` except format and version."""
    from safetensors.torch import save_file

    folder = Path(folder)
    meta = {"format": FORMAT, "version": VERSION, **meta}
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise ValueError(f"bundle metadata lacks {missing}")
    json.dumps(meta)   # fail before writing anything if the metadata cannot be saved
    folder.mkdir(parents=True, exist_ok=True)
    for k, state in enumerate(fold_states or []):
        tensors = {n: t.detach().cpu().contiguous() for n, t in state.items()}
        with atomic.atomic_path(folder / weights_name(k), suffix=".safetensors") as tmp:
            save_file(tensors, str(tmp), metadata={"format": FORMAT, "model": meta["name"], "fold": str(k)})
    atomic.write_json(folder / META_NAME, meta)
    return folder


def read_bundle_meta(folder: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``folder/bundle.json`` (one InputError naming the file and the problem)."""
    path = Path(folder) / META_NAME
    if not path.is_file():
        raise InputError(f"{path} does not exist; a model bundle holds {META_NAME} and the fold "
                         "weights (written by `rn-classifier finetune` into RUN_DIR/bundle)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"{path} is not a model bundle (format {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise InputError(f"{path} has bundle version {meta.get('version')!r}; this rn-classifier "
                         f"reads version {VERSION}")
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise InputError(f"{path} lacks the key(s) {missing}")
    return meta


def threshold_from_stats(stats_path: str | os.PathLike, model: str) -> dict | None:
    """The threshold ``rn-classifier compare`` froze for ``model`` in its ``stats.json``, in the
    bundle's form, or None when that file holds none for the model."""
    path = Path(stats_path)
    stats = json.loads(path.read_text())
    chosen = (stats.get("thresholds") or {}).get(model)
    if not chosen or chosen.get("threshold") is None:
        return None
    return {"value": float(chosen["threshold"]), "chosen_on": chosen["threshold_cohort"],
            "source": f"stats.json of `rn-classifier compare` ({path.parent.name}/{path.name})",
            "rule": stats.get("threshold_rule")}


def _set_meta_key(folder: str | os.PathLike, key: str, value) -> None:
    """Replace one key of ``folder/bundle.json`` (atomically; untouched when it holds ``value``)."""
    meta = read_bundle_meta(folder)
    if meta.get(key) != value:
        atomic.write_json(Path(folder) / META_NAME, {**meta, key: value})


def set_threshold(folder: str | os.PathLike, threshold: dict) -> None:
    """Record the model's frozen threshold (e.g. the study's, once ``compare`` has chosen it)."""
    _set_meta_key(folder, "threshold", threshold)


def set_shift_reference(folder: str | os.PathLike, reference: dict) -> None:
    """Record the internal range ``predict`` checks a new case's image against (the study's shift
    check, :func:`rn_classifier.shift.check.case_reference`), so the bundle alone flags a case
    outside it. Checked first: a bad reference is refused and the bundle left as it was."""
    from ..shift.check import check_case_reference

    _set_meta_key(folder, SHIFT_REFERENCE, check_case_reference(reference, str(Path(folder) / META_NAME)))


def shift_reference(meta_or_folder: dict | str | os.PathLike) -> dict | None:
    """The shift reference a bundle records (its ``bundle.json`` content or its folder), or None."""
    meta = meta_or_folder if isinstance(meta_or_folder, dict) else read_bundle_meta(meta_or_folder)
    return meta.get(SHIFT_REFERENCE)


def _build_image(encoder, arch: dict):
    from .classifiers import ImageClassifier

    return ImageClassifier(encoder, float(arch.get("head_dropout", 0.0)), arch.get("pool", "cls"))


def _build_intermediate(encoder, arch: dict):
    from .classifiers import IntermediateFusionClassifier

    fusion = arch["fusion"]
    return IntermediateFusionClassifier(encoder, int(fusion["n_clinical"]), int(fusion["clinical_embed_dim"]),
                                        bool(fusion["cross_attention"]), int(fusion["attention_heads"]),
                                        float(fusion.get("dropout", 0.0)), arch.get("pool", "cls"))


# architecture["network"] → constructor of the classifier around the encoder
NETWORKS: dict[str, Callable] = {"image": _build_image, "intermediate_fusion": _build_intermediate}


class ModelBundle:
    """A model bundle folder: settings read at once, fold networks loaded lazily (CPU, eval)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.meta = read_bundle_meta(self.folder)
        self.name: str = self.meta["name"]
        self.family = ModelFamily(self.meta["family"])
        self.n_folds = int(self.meta["n_folds"])
        self.provenance: dict = self.meta["provenance"]
        self.synthetic = bool(self.provenance.get("synthetic", False))
        self.run_name: str = self.provenance.get("run") or self.name
        self.clinical_spec: dict[str, str] = dict(self.meta["clinical_columns"] or {})
        self.threshold: dict | None = self.meta["threshold"]
        self.folds: list[dict] = list(self.meta["folds"])
        if len(self.folds) != self.n_folds:
            raise InputError(f"{self.folder / META_NAME}: {len(self.folds)} fold entries for "
                             f"n_folds={self.n_folds}")
        self._networks: list | None = None
        self._logistic: list | None = None

    @property
    def kind(self) -> str:
        return self.family.value

    @property
    def uses_images(self) -> bool:
        return self.family.uses_images

    @property
    def preprocessing(self) -> Preprocessing | None:
        """Spacing, crop size and intensity normalisation the image networks were trained with."""
        payload = self.meta["preprocessing"]
        return Preprocessing.from_json(payload) if payload else None

    def clinical_categories(self) -> dict[str, list[str]]:
        """Accepted values of each categorical clinical column (the categories seen in training,
        union over the fold models; "missing" is the imputation fill, not a value to pass)."""
        accepted: dict[str, set] = {}
        for fold in self.folds:
            payload = fold.get("clinical_transform") or (fold.get("logistic") or {}).get("preprocessor")
            cat = (payload or {}).get("categorical") or {}
            for col, cats in zip(cat.get("columns", []), cat.get("categories", [])):
                accepted.setdefault(col, set()).update(c for c in cats if c != cat.get("fill"))
        return {col: sorted(values) for col, values in accepted.items()}

    # -- models ---------------------------------------------------------------------------
    def networks(self) -> list:
        """The fold classifier networks, weights loaded, eval mode ([] for clinical-only)."""
        if self._networks is None:
            self._networks = [self._load_network(k) for k in range(self.n_folds)] \
                if self.family.uses_images else []
        return self._networks

    def _load_network(self, k: int):
        from safetensors.torch import load_file

        from .vit3d import VisionTransformer3D

        arch = self.meta["architecture"]
        if arch.get("network") not in NETWORKS:
            raise InputError(f"{self.folder / META_NAME}: unknown network {arch.get('network')!r}; "
                             f"known: {sorted(NETWORKS)}")
        if self.folds[k].get("n_clinical") is not None:  # the fold's own clinical width
            arch = {**arch, "fusion": {**arch["fusion"], "n_clinical": int(self.folds[k]["n_clinical"])}}
        network = NETWORKS[arch["network"]](VisionTransformer3D(**arch["encoder"]), arch)
        transform = self.folds[k].get("clinical_transform")
        network.clinical_transform = ClinicalTransformJSON(transform) if transform else None
        weights = self.folder / weights_name(k)
        try:
            state = load_file(str(weights))
        except Exception as exc:
            raise InputError(f"{weights} is not a readable safetensors file: {exc}") from None
        try:
            network.load_state_dict(state)
        except RuntimeError as exc:
            raise InputError(f"{weights} does not match the network in {self.folder / META_NAME}: "
                             f"{str(exc).splitlines()[0]}") from None
        return network.eval()

    def logistic_models(self) -> list[LogisticModelJSON]:
        """The fold logistic models (clinical-only model, late-fusion stacker)."""
        if self._logistic is None:
            self._logistic = [LogisticModelJSON(fold["logistic"]) for fold in self.folds]
        return self._logistic

    def predict(self, crop: np.ndarray | None, clinical: pd.DataFrame | None,
                with_attention: bool = True) -> FoldOutput:
        """Every fold model on one case.

        crop: ``(2, X, Y, Z)`` float32 (T1CE, lesion mask) at the training setting, or None for
        the clinical-only model; clinical: a one-row frame of the clinical columns (or None).
        """
        logits, maps = _FOLD_LOGITS[self.family](self, crop, clinical, with_attention)
        logits = np.asarray(logits, dtype=float)
        return FoldOutput(logits, expit(logits), maps)

    def network_logits(self, crop: np.ndarray, clinical: pd.DataFrame | None,
                       with_attention: bool) -> tuple[list[float], list]:
        """Each fold network's logit on the crop (with its clinical vector for intermediate
        fusion), and its attention maps when asked."""
        import torch

        from ..explain.maps import logits_and_attention

        x = torch.as_tensor(np.asarray(crop, dtype=np.float32))[None]
        logits, maps = [], []
        for network in self.networks():
            c = None
            if network.clinical_transform is not None:
                c = torch.as_tensor(network.clinical_transform.transform(clinical), dtype=torch.float32)
            if with_attention:
                logit, case_maps = logits_and_attention(network, x, c)
                maps.append(case_maps[0])
            else:
                with torch.no_grad():
                    logit = network(x, c).float().numpy().reshape(-1)
            logits.append(float(logit[0]))
        return logits, maps


def _stacked_logits(bundle: ModelBundle, crop, clinical, with_attention):
    image_logits, maps = bundle.network_logits(crop, None, with_attention)
    return [model.decision_function(
                clinical.assign(**{LATE_FUSION_INPUT: model.standardised_image_logit(logit)}))[0]
            for model, logit in zip(bundle.logistic_models(), image_logits)], maps


def _clinical_logits(bundle: ModelBundle, crop, clinical, with_attention):
    return [model.decision_function(clinical)[0] for model in bundle.logistic_models()], []


# family → how the fold models turn (crop, clinical) into logits and attention maps
_FOLD_LOGITS: dict[ModelFamily, Callable] = {
    ModelFamily.IMAGE: ModelBundle.network_logits,
    ModelFamily.INTERMEDIATE: ModelBundle.network_logits,
    ModelFamily.LATE: _stacked_logits,
    ModelFamily.CLINICAL: _clinical_logits,
}

"""Config schema of ``rn-classifier radiomics`` (OmegaConf structured config).

``extraction.pyradiomics`` is a pyradiomics parameter block with pyradiomics' own three keys
(``setting``, ``imageType``, ``featureClass``), so a parameter file published with a dataset can
be pasted under it unchanged; pyradiomics' schema validates it (:func:`validate_config`).
A block in the config replaces the default as a whole. The default is the MOLAB settings
(``configs/radiomics/molab.yaml`` spells them out):
Original + LoG (sigma 1, 3, 5 mm) + Wavelet images; shape, first-order and the five texture
classes; intensities normalised (scale 100, shift 300) and binned by width 5 after resampling to
1 mm isotropic voxels with a B-spline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from ..errors import ConfigError, check_choice

ON_ERROR = ("fail", "skip")
SELECTION_METHODS = ("l1", "univariate")
CLASSIFIERS = ("logreg_l1", "logreg_l2", "random_forest", "svm")


def molab_pyradiomics_params() -> dict[str, Any]:
    """The MOLAB (OpenBTAI-radiomics) pyradiomics parameters, in pyradiomics' file layout."""
    return {
        "setting": {
            "normalize": True,
            "normalizeScale": 100,
            "voxelArrayShift": 300,
            "binWidth": 5,
            "preCrop": True,
            "minimumROISize": 10,
            "resampledPixelSpacing": [1.0, 1.0, 1.0],
            "interpolator": "sitkBSpline",
        },
        "imageType": {"Original": {}, "LoG": {"sigma": [1.0, 3.0, 5.0]}, "Wavelet": {}},
        # an empty list enables every feature of the class (pyradiomics convention)
        "featureClass": {name: [] for name in
                         ("shape", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm")},
    }


@dataclass
class ExtractionConfig:
    # replaces the MOLAB block as a whole (not merged key by key); null: MOLAB settings
    pyradiomics: Optional[dict[str, Any]] = None
    workers: int = 0                          # processes; 0 = one per CPU core
    threads_per_worker: int = 1               # SimpleITK / OpenMP threads inside each process
    cache_dir: Optional[str] = None           # per-case feature cache; null: RUN_DIR/feature_cache
    on_error: str = "fail"                    # fail: list every bad case, then stop | skip: go on without them


@dataclass
class CVConfig:
    """Used only when no split file is given (same rules as fine-tuning)."""

    n_folds: int = 5
    test_fraction: float = 0.2
    seed: int = 0


@dataclass
class SelectionConfig:
    method: str = "l1"                        # l1 (L1 logistic regression) | univariate (ANOVA F)
    max_features: int = 20                    # at most this many features reach the classifier
    l1_C: float = 1.0                         # inverse L1 strength of the selecting model


@dataclass
class ModelConfig:
    # drop a feature when one value is shared by more than this fraction of the training cases
    near_constant_fraction: float = 0.9
    correlation_threshold: float = 0.9        # of two features with |Pearson r| above this, keep the first
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    # candidates compared by inner (patient-grouped) cross-validation, AUC
    classifiers: list[str] = field(default_factory=lambda: list(CLASSIFIERS))
    C_grid: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0])  # logistic / SVM
    rf_n_estimators: int = 300
    rf_max_depth_grid: list[Optional[int]] = field(default_factory=lambda: [3, None])
    inner_folds: int = 3
    class_weight: Optional[str] = "balanced"  # balanced | null
    seed: int = 0
    n_jobs: int = 1                           # processes of the inner grid search


@dataclass
class RadiomicsConfig:
    name: str = "radiomics"                   # the model's name in predictions.csv
    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)
    cv: CVConfig = field(default_factory=CVConfig)
    model: ModelConfig = field(default_factory=ModelConfig)


def check_pyradiomics_params(params: dict[str, Any], source: str = "extraction.pyradiomics"):
    """Validate a parameter block against pyradiomics' own schema; pass its message on.

    Returns the ``RadiomicsFeatureExtractor`` that pyradiomics built from it.
    """
    import logging

    import pykwalify.errors
    from radiomics import featureextractor

    # pykwalify also logs the failure on stderr; the ConfigError below carries the same message
    schema_log = logging.getLogger("pykwalify")
    level = schema_log.level
    schema_log.setLevel(logging.CRITICAL)
    try:
        return featureextractor.RadiomicsFeatureExtractor(dict(params))
    except (pykwalify.errors.PyKwalifyException, ValueError, TypeError) as exc:
        message = getattr(exc, "msg", None) or str(exc)
        raise ConfigError(f"{source}: rejected by pyradiomics' parameter schema: {message}") from exc
    finally:
        schema_log.setLevel(level)


def validate_config(cfg: RadiomicsConfig) -> RadiomicsConfig:
    """Checks the schema cannot express: choices, ranges and pyradiomics' parameter schema.

    Fills ``extraction.pyradiomics`` with the MOLAB settings when the config leaves it out, so
    the saved config shows the parameters actually used.
    """
    check_choice(cfg.extraction.on_error, "extraction.on_error", ON_ERROR, ConfigError)
    check_choice(cfg.model.selection.method, "model.selection.method", SELECTION_METHODS, ConfigError)
    for name in cfg.model.classifiers:
        check_choice(name, "model.classifiers[]", CLASSIFIERS, ConfigError)
    if not cfg.model.classifiers:
        raise ConfigError(f"model.classifiers must name at least one of {list(CLASSIFIERS)}")
    if cfg.model.class_weight not in (None, "balanced"):
        raise ConfigError(f"model.class_weight must be 'balanced' or null, got {cfg.model.class_weight!r}")
    if not 0.0 < cfg.model.near_constant_fraction <= 1.0:
        raise ConfigError("model.near_constant_fraction must be in (0, 1], got "
                          f"{cfg.model.near_constant_fraction}")
    if not 0.0 < cfg.model.correlation_threshold <= 1.0:
        raise ConfigError("model.correlation_threshold must be in (0, 1], got "
                          f"{cfg.model.correlation_threshold}")
    if cfg.model.selection.max_features < 1:
        raise ConfigError(f"model.selection.max_features must be >= 1, got {cfg.model.selection.max_features}")
    if cfg.model.inner_folds < 2:
        raise ConfigError(f"model.inner_folds must be at least 2, got {cfg.model.inner_folds}")
    if cfg.extraction.workers < 0 or cfg.extraction.threads_per_worker < 1:
        raise ConfigError("extraction.workers must be >= 0 (0 = one per core) and "
                          "extraction.threads_per_worker >= 1, got "
                          f"{cfg.extraction.workers} and {cfg.extraction.threads_per_worker}")
    if cfg.extraction.pyradiomics is None:
        cfg.extraction.pyradiomics = molab_pyradiomics_params()
    params = cfg.extraction.pyradiomics
    unknown = sorted(set(params) - {"setting", "imageType", "featureClass", "voxelSetting"})
    if unknown:
        raise ConfigError(f"extraction.pyradiomics: unknown key(s) {unknown}; expected pyradiomics' "
                          "parameter-file keys setting, imageType, featureClass")
    check_pyradiomics_params(params)
    return cfg

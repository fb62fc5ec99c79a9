"""Config schema of ``rn-classifier finetune`` (OmegaConf structured config).

One schema serves the five models of the study; what a run trains is decided by two keys:

=====================================  ================  ===============
model in predictions.csv (``name``)    ``model.kind``    ``fusion.kind``
=====================================  ================  ===============
``ssl_vit``                            ``vit``           ``none``
``ssl_vit_clinical_late``              ``vit``           ``late``
``ssl_vit_clinical_intermediate``      ``vit``           ``intermediate``
``supervised_vit``                     ``vit``           ``none`` (``model.pretrained: null``)
``clinical``                           ``clinical``      ``none``
=====================================  ================  ===============

``model.pretrained: null`` trains the same architecture from random initialisation through the
same code path, split and budget: the supervised-ViT baseline.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

from ..data.clinical_audit import check_unseen_policy
from ..errors import ConfigError, InputError, check_choice
from ..family import ModelFamily, family_of

MODEL_KINDS = ("vit", "clinical")
FUSION_KINDS = ("none", "late", "intermediate")
BALANCE_MODES = ("sampler", "loss", "none")
CHECKPOINTS = ("best", "last")
HEAD_INITS = ("random", "logistic")
HEAD_SCORINGS = ("roc_auc", "neg_log_loss")  # = finetune.logistic_head.SCORINGS (no sklearn import)
POOLS = ("cls", "avg", "mask")               # = models.classifiers.POOLS (kept here: no torch import)
POS_EMBED_TYPES = ("learn", "sincos")        # = models.vit3d.POS_EMBED_TYPES (no torch import)
MASK_ENCODINGS = ("binary", "regions")        # = models.mask_regions.MASK_ENCODINGS
CLINICAL_TYPES = ("numeric", "categorical")


@dataclass
class DataConfig:
    internal_manifest: Optional[str] = None   # labelled internal cohort (MOLAB)
    external_manifest: Optional[str] = None   # second-centre cohort; predicted, never trained on
    internal_cache: Optional[str] = None      # `rn-classifier preprocess` output for the internal manifest
    external_cache: Optional[str] = None
    split: Optional[str] = None               # split.csv to reuse; null: make one, save RUN_DIR/split.csv


@dataclass
class CVConfig:
    n_folds: int = 5
    test_fraction: float = 0.2                # share of patients held out as the internal test
    seed: int = 0                             # seed of the split (used only when a split is made)


@dataclass
class ModelConfig:
    kind: str = "vit"                         # vit | clinical
    arch: str = "vit3d_tiny_p8"               # registry name; must match the encoder's when pretrained
    pretrained: Optional[str] = None          # encoder export folder (or pretraining run folder); null: random init
    in_chans: int = 2                         # T1CE + lesion mask
    crop_size: list[int] = field(default_factory=lambda: [32, 32, 32])  # model input (voxels)
    patch_size: Optional[int] = None          # if set, checked against the encoder export
    drop_path_rate: float = 0.1
    head_dropout: float = 0.0
    # how the encoder's tokens become one embedding: cls (class token) | avg (mean of patch
    # tokens) | mask (patch tokens weighted by their share inside the lesion mask)
    pool: str = "cls"
    # positional embedding: learn | sincos; null: the encoder export's (pretrained) or "learn"
    # (random init). The supervised baseline must set the one of the encoder the SSL model starts
    # from (MAE: sincos), else the comparison measures the embedding, not the pretraining
    pos_embed_type: Optional[str] = None
    # how the mask channel reaches the encoder: binary (as it is) | regions (models.mask_regions:
    # the T1CE of the lesion's core, rim and two shells as extra channels); null: the arch's
    # default. A pretrained one-channel encoder gets its region channels added at fine-tuning
    mask_encoding: Optional[str] = None


@dataclass
class FusionConfig:
    kind: str = "none"                        # none | late | intermediate
    # late: a finished image run (ssl_vit) to stack on; null: train the image model inside this run
    image_run: Optional[str] = None           # (stacker: `logistic.class_weight`, `max_iter`; its
                                              # clinical L2 strength is chosen by inner CV, finetune.fusion)
    clinical_embed_dim: int = 32              # intermediate: width of the clinical embedding
    cross_attention: bool = False             # intermediate: clinical query attends over image tokens
    attention_heads: int = 4
    dropout: float = 0.1


@dataclass
class LogisticConfig:
    """Regularised logistic regression: the clinical-only model and the late-fusion stacker."""

    C: float = 1.0                            # inverse L2 strength (scikit-learn convention)
    class_weight: Optional[str] = "balanced"  # balanced | null
    max_iter: int = 5000


@dataclass
class OptimConfig:
    lr: float = 5e-4                          # peak lr of the top layer (head); lower layers get lr * decay^depth
    min_lr_ratio: float = 0.01                # cosine ends at lr * min_lr_ratio
    weight_decay: float = 0.05
    layer_decay: float = 0.75                 # layer-wise lr decay (BEiT); 1.0 switches it off
    warmup_epochs: float = 1.0


@dataclass
class TrainConfig:
    epochs: int = 50
    batch_size: int = 8
    predict_batch_size: int = 16
    num_workers: int = 0
    balance: str = "sampler"                  # sampler (class-balanced sampling) | loss (pos_weight) | none
    # epochs at the start of each fold during which only the head trains, the encoder frozen
    # (linear probing then fine-tuning, LP-FT: finetune.linear_probe). 0: off, the whole network
    # fine-tunes from the start; = epochs: a pure linear probe. The lr schedule spans all epochs
    linear_probe_epochs: int = 0
    # how the head starts: random | logistic (an L2 logistic regression fitted on the frozen
    # embeddings of the fold's training cases, C by patient-grouped inner CV: finetune.logistic_head,
    # the LP of LP-FT as Kumar et al. fit it). With logistic, epochs may be 0: the probe is the model
    head_init: str = "random"
    # what ranks the logistic head's C on the inner folds: roc_auc | neg_log_loss (log-loss also
    # judges the logits' scale, which the fold ensemble and the frozen threshold depend on)
    head_scoring: str = "roc_auc"
    # epochs without a better validation AUC; null: off. With a linear probe it counts only the
    # epochs after it (the probe's plateau must not stop a fold before its encoder trains)
    early_stopping_patience: Optional[int] = 15
    # which epoch's weights a fold keeps: best (highest validation AUC of the fold) | last.
    # `best` picks the epoch on the same cases whose out-of-fold AUC is then reported, which
    # flatters the oof AUC on a small fold; `last` keeps that AUC honest
    checkpoint: str = "best"
    accelerator: str = "auto"
    devices: int = 1
    precision: str = "32-true"
    seed: int = 0
    deterministic: bool = False
    progress_bar: bool = False


@dataclass
class AcquisitionAugmentConfig:
    """Simulated acquisitions of other scanners (rn_classifier.finetune.acquisition), T1CE only.

    Every probability is 0 (off) by default: switch one on only where internal oof AUC shows it
    harmless; never choose on the external cohort."""

    slice_prob: float = 0.0                   # thicker slices (box profile), thickness in slice_mm
    slice_mm: list[float] = field(default_factory=lambda: [3.0, 6.0])
    slice_axis: int = 2                       # RAS axis of the slices (2 = axial)
    bias_prob: float = 0.0                    # smooth multiplicative coil shading (MONAI RandBiasField)
    bias_coeff: float = 0.1
    bias_degree: int = 3
    rician_prob: float = 0.0                  # magnitude-image noise (MONAI RandRicianNoise)
    rician_std: float = 0.05                  # times the crop's SD
    contrast_prob: float = 0.0                # gamma (MONAI RandAdjustContrast); moderate range
    contrast_gamma: list[float] = field(default_factory=lambda: [0.85, 1.15])


def without_default_acquisition(d: dict) -> dict:
    """``d`` (a FinetuneConfig as a dict) without ``augment.acquisition`` when it is the all-off
    default, so runs from before these options keep their resume / stage keys."""
    acquisition = (d.get("augment") or {}).get("acquisition")
    if acquisition is not None and acquisition == asdict(AcquisitionAugmentConfig()):
        d = {**d, "augment": {k: v for k, v in d["augment"].items() if k != "acquisition"}}
    return d


@dataclass
class AugmentConfig:
    """MONAI dictionary transforms applied to the image and its mask together."""

    enabled: bool = True
    flip_prob: float = 0.5                    # per axis
    rotate90_prob: float = 0.25
    affine_prob: float = 0.3
    rotate_deg: float = 15.0
    scale: float = 0.1
    intensity_prob: float = 0.5               # T1CE only: scale / shift / noise
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1
    noise_std: float = 0.05
    acquisition: AcquisitionAugmentConfig = field(default_factory=AcquisitionAugmentConfig)


@dataclass
class FinetuneConfig:
    name: str = "ssl_vit"                     # the model's name in predictions.csv
    data: DataConfig = field(default_factory=DataConfig)
    cv: CVConfig = field(default_factory=CVConfig)
    # clinical columns of the manifest and their type: {age: numeric, sex: categorical, ...}
    clinical: dict[str, str] = field(default_factory=dict)
    # a categorical level of the external cohort that the internal one lacks: impute (treated as
    # missing) | error (rn_classifier.data.clinical_audit)
    unseen_levels: str = "impute"
    model: ModelConfig = field(default_factory=ModelConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    logistic: LogisticConfig = field(default_factory=LogisticConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


# Settings that do not change what a run computes (how fast, how it shows progress): a resumed run
# and the study's stage key may differ in these.
RESULT_NEUTRAL = {"train": ("num_workers", "progress_bar")}


def result_settings(cfg: FinetuneConfig) -> dict:
    """The config as a dict without the :data:`RESULT_NEUTRAL` settings, and without keys at the
    default that older runs lack (``unseen_levels``, ``augment.acquisition``,
    ``train.linear_probe_epochs``, ``train.head_init``, ``train.head_scoring``), so their resume
    hash and stage key stay valid."""
    from ..config import to_dict

    d = without_default_acquisition(to_dict(cfg))
    for section, keys in RESULT_NEUTRAL.items():
        for key in keys:
            d[section].pop(key, None)
    if d.get("unseen_levels") == "impute":   # the default: keys of runs made before the key stay valid
        d.pop("unseen_levels")
    if d["train"].get("linear_probe_epochs") == 0:   # the same for the linear probe when off
        d["train"].pop("linear_probe_epochs")
    if d["train"].get("head_init") == "random":
        d["train"].pop("head_init")
    if d["train"].get("head_scoring") == "roc_auc":
        d["train"].pop("head_scoring")
    return d


def _check_choices(cfg: FinetuneConfig) -> None:
    """Settings picked from a listed set."""
    check_choice(cfg.model.kind, "model.kind", MODEL_KINDS, ConfigError)
    check_choice(cfg.fusion.kind, "fusion.kind", FUSION_KINDS, ConfigError)
    check_choice(cfg.train.balance, "train.balance", BALANCE_MODES, ConfigError)
    check_choice(cfg.model.pool, "model.pool", POOLS, ConfigError)
    if cfg.model.pos_embed_type is not None:
        check_choice(cfg.model.pos_embed_type, "model.pos_embed_type", POS_EMBED_TYPES, ConfigError)
    if cfg.model.mask_encoding is not None:
        check_choice(cfg.model.mask_encoding, "model.mask_encoding", MASK_ENCODINGS, ConfigError)
    check_choice(cfg.train.checkpoint, "train.checkpoint", CHECKPOINTS, ConfigError)
    check_choice(cfg.train.head_init, "train.head_init", HEAD_INITS, ConfigError)
    check_choice(cfg.train.head_scoring, "train.head_scoring", HEAD_SCORINGS, ConfigError)


def _check_checkpoint_rule(cfg: FinetuneConfig) -> None:
    if cfg.train.checkpoint == "last" and cfg.train.early_stopping_patience:
        raise ConfigError("train.checkpoint='last' with early stopping would keep the weights of an "
                          "epoch chosen on the validation fold; set train.early_stopping_patience=null")


def _check_clinical_settings(cfg: FinetuneConfig) -> None:
    """The logistic model's class weight, the clinical column types and the unseen-level policy."""
    if cfg.logistic.class_weight not in (None, "balanced"):
        raise ConfigError(f"logistic.class_weight must be 'balanced' or null, got {cfg.logistic.class_weight!r}")
    bad = {k: v for k, v in cfg.clinical.items() if v not in CLINICAL_TYPES}
    if bad:
        raise ConfigError(f"clinical: column types must be one of {list(CLINICAL_TYPES)}, got {bad}")
    check_unseen_policy(cfg.unseen_levels, "unseen_levels")


def _check_family_inputs(cfg: FinetuneConfig) -> None:
    """The model family exists and has what it reads: clinical columns, an image run for late only."""
    try:
        family = family_of(cfg)
    except InputError:
        # each kind is a known choice here (_check_choices ran first), so the one pair without a
        # family is a clinical model with a fusion
        raise ConfigError("fusion.kind must be 'none' for model.kind='clinical' (fusion combines the "
                          "image model with clinical data)") from None
    if family.uses_clinical and not cfg.clinical:
        raise ConfigError(f"model.kind={cfg.model.kind!r} with fusion.kind={cfg.fusion.kind!r} needs "
                          "clinical columns: set `clinical: {age: numeric, sex: categorical, ...}`")
    if cfg.fusion.image_run is not None and family is not ModelFamily.LATE:
        raise ConfigError("fusion.image_run is used only by fusion.kind='late'")


def _check_manifests(cfg: FinetuneConfig) -> None:
    if not cfg.data.internal_manifest:
        raise ConfigError("data.internal_manifest is required (the labelled internal cohort); "
                          "set it in the config or with --set data.internal_manifest=PATH")
    if cfg.data.external_cache and not cfg.data.external_manifest:
        raise ConfigError("data.external_cache is set but data.external_manifest is not")


def _check_image_inputs(cfg: FinetuneConfig) -> None:
    """Caches and crop of a run that trains a ViT (late fusion trains its image model itself
    unless it stacks on an existing image run)."""
    family = family_of(cfg)
    if not (family.trains_a_network or (family is ModelFamily.LATE and not cfg.fusion.image_run)):
        return
    if not cfg.data.internal_cache:
        raise ConfigError("data.internal_cache is required for an image model (the `rn-classifier "
                          "preprocess` output of data.internal_manifest)")
    if cfg.data.external_manifest and not cfg.data.external_cache:
        raise ConfigError("data.external_cache is required when data.external_manifest is set "
                          "and an image model is trained")
    if len(cfg.model.crop_size) != 3 or min(cfg.model.crop_size) < 1:
        raise ConfigError(f"model.crop_size must be 3 positive voxel counts, got {cfg.model.crop_size}")
    if cfg.model.in_chans != 2:
        raise ConfigError(f"model.in_chans must be 2 (T1CE + lesion mask), got {cfg.model.in_chans}")


def _check_cv(cfg: FinetuneConfig) -> None:
    if cfg.cv.n_folds < 2:
        raise ConfigError(f"cv.n_folds must be at least 2, got {cfg.cv.n_folds}")
    if not 0.0 < cfg.cv.test_fraction < 1.0:
        raise ConfigError(f"cv.test_fraction must be in (0, 1), got {cfg.cv.test_fraction}")


def _check_training(cfg: FinetuneConfig) -> None:
    if cfg.train.devices != 1:
        raise ConfigError(f"train.devices must be 1, got {cfg.train.devices}: a fold trains on one "
                          "device; run folds in parallel instead (finetune/train.py --fold K)")
    if cfg.train.batch_size < 1:
        raise ConfigError(f"train.batch_size must be >= 1, got {cfg.train.batch_size}")
    if cfg.train.epochs < (0 if cfg.train.head_init == "logistic" else 1):
        raise ConfigError(f"train.epochs must be >= 1 (or 0 with train.head_init=logistic: the fitted "
                          f"head is the model), got {cfg.train.epochs} with train.head_init={cfg.train.head_init!r}")
    if cfg.train.head_init == "logistic" and cfg.fusion.kind == "intermediate":
        raise ConfigError("train.head_init=logistic fits the image classifier's linear head; intermediate "
                          "fusion has a fusion head instead (set train.head_init=random)")
    if not 0 <= cfg.train.linear_probe_epochs <= cfg.train.epochs:
        raise ConfigError(f"train.linear_probe_epochs must be between 0 (off) and train.epochs "
                          f"(a pure linear probe), got {cfg.train.linear_probe_epochs} with "
                          f"train.epochs={cfg.train.epochs}")
    if not 0.0 < cfg.optim.layer_decay <= 1.0:
        raise ConfigError(f"optim.layer_decay must be in (0, 1], got {cfg.optim.layer_decay}")


def validate_config(cfg: FinetuneConfig) -> FinetuneConfig:
    """Checks the schema cannot express: choices, combinations, required paths (in this order:
    the first problem found is the one reported)."""
    _check_choices(cfg)
    _check_checkpoint_rule(cfg)
    _check_clinical_settings(cfg)
    _check_family_inputs(cfg)
    _check_manifests(cfg)
    _check_image_inputs(cfg)
    from .acquisition import check_acquisition   # imports torch: only once the cheaper checks pass

    check_acquisition(cfg.augment.acquisition)
    _check_cv(cfg)
    _check_training(cfg)
    return cfg

"""Config schema of ``rn-classifier pretrain`` (OmegaConf structured config).

The sections every self-supervised method shares (data, model, augmentation, optimiser,
trainer, monitor). ``method`` names a registered method (:mod:`rn_classifier.pretrain.methods`:
DINO, Caron et al. 2021; MAE, He et al. 2022; statistics, the lesion's crop statistics as
regression targets), whose own section (``dino`` / ``mae`` / ``statistics``) and checks come with
its registry entry; :func:`rn_classifier.pretrain.methods.pretrain_schema` is the
schema of a whole run. Crop sizes are in voxels of the cache (its spacing is checked against
``data.spacing``); crop scales are fractions of the cached sub-volume's side length.

:func:`check_shared_sections` refuses, before anything is built, every shared setting that
cannot train (an internal cache without a split, unknown choices, probabilities outside [0, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..errors import ConfigError, InputError, check_choice
from ..finetune.config import POOLS   # no torch import

PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed")
MONITOR_METHODS = ("knn", "logistic")
AUGMENT_PLACES = ("auto", "loader", "device")


@dataclass
class DataConfig:
    pool_cache: str = "demo_run/cache/pool"   # unlabeled pool (1 channel: t1ce)
    internal_cache: Optional[str] = None      # labelled internal cohort cache (t1ce, mask)
    split: Optional[str] = None               # split.csv: needed when internal_cache is set
    include_internal_train: bool = False      # add the split's TRAINING cases (labels unused)
    exclude_centers: list[str] = field(default_factory=list)  # e.g. the external centre
    spacing: list[float] = field(default_factory=lambda: [2.0, 2.0, 2.0])  # mm; cache must match
    batch_size: int = 8                       # sub-volumes per device and step
    num_workers: int = 2                      # DataLoader worker processes per device
    pin_memory: bool = True                   # only used on GPU
    # where views are made: loader (MONAI, per sample, in the workers), device (batched on the
    # training device, pretrain/batch_augment.py), auto (device on GPU, loader on CPU)
    augment_on: str = "auto"


@dataclass
class ModelConfig:
    name: str = "vit3d_tiny_p8"               # registry name (rn_classifier.models.list_models())
    drop_path_rate: Optional[float] = None    # null: the variant's default
    pos_embed_type: Optional[str] = None      # learn | sincos; null: the variant's default
    grad_checkpointing: bool = False          # recompute blocks in backward (memory for speed)
    compile_blocks: bool = False              # torch.compile each transformer block (GPU speed)


@dataclass
class AugmentConfig:
    """MONAI dictionary transforms applied to every view (probabilities per view)."""

    flip_prob: float = 0.5                    # per axis
    rotate90_prob: float = 0.5                # one random plane, k ∈ {1, 2, 3}
    intensity_scale: float = 0.1              # x·(1 + f), f ~ U(-s, s)
    intensity_scale_prob: float = 0.8
    intensity_shift: float = 0.1              # x + o, o ~ U(-s, s)
    intensity_shift_prob: float = 0.8
    gamma: list[float] = field(default_factory=lambda: [0.7, 1.5])
    gamma_prob: float = 0.3
    noise_std: float = 0.05
    noise_prob: float = 0.2
    blur_sigma: list[float] = field(default_factory=lambda: [0.5, 1.0])  # voxels
    bias_field_coeff: list[float] = field(default_factory=lambda: [0.0, 0.1])
    bias_field_prob: float = 0.3


# the sections of the shipped methods (their registry entries: pretrain/methods/dino.py, mae.py)
@dataclass
class DinoConfig:
    global_crop_size: int = 32                # voxels, each axis
    local_crop_size: int = 16
    n_local_crops: int = 6
    global_crop_scale: list[float] = field(default_factory=lambda: [0.7, 1.0])  # side fraction
    local_crop_scale: list[float] = field(default_factory=lambda: [0.3, 0.55])
    # blur probability of global view 1, global view 2 and every local view (DINO: 1.0, 0.1, 0.5)
    blur_prob: list[float] = field(default_factory=lambda: [1.0, 0.1, 0.5])
    out_dim: int = 65536                      # prototypes of the DINO head
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    norm_last_layer: bool = True
    freeze_last_layer_epochs: int = 1
    teacher_temp: float = 0.07
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: float = 30
    student_temp: float = 0.1
    center_momentum: float = 0.9
    teacher_momentum: float = 0.996           # cosine to teacher_momentum_end
    teacher_momentum_end: float = 1.0


@dataclass
class MaeConfig:
    crop_size: int = 32                       # voxels, each axis
    crop_scale: list[float] = field(default_factory=lambda: [0.6, 1.0])  # side fraction
    mask_ratio: float = 0.75
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    norm_pix_loss: bool = True


@dataclass
class StatisticsConfig:
    """Regress the lesion's crop statistics from its two-channel view (pretrain/methods/statistics.py)."""

    crop_size: int = 32                       # voxels, each axis: the fine-tuning crop
    pool: str = "mask"                        # cls | avg | mask: the embedding the regression head reads


@dataclass
class OptimConfig:
    """AdamW; ``lr`` is for a total batch of 256 and scaled linearly (DINO / MAE rule)."""

    lr: float = 5e-4
    min_lr: float = 1e-6
    warmup_epochs: float = 10
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    clip_grad: float = 3.0                    # max global gradient norm; 0 = no clipping


@dataclass
class TrainerConfig:
    epochs: int = 100
    max_steps: Optional[int] = None           # stop after this many optimizer steps (schedules span it)
    seed: int = 0
    deterministic: bool = False               # torch deterministic algorithms (tests, audits)
    precision: str = "auto"                   # auto: run.fastest_precision (bf16-mixed on GPU; AMX CPU: DINO)
    checkpoint_every_n_steps: int = 500
    keep_checkpoints: int = 2                 # newest step checkpoints kept besides last.ckpt
    log_every_n_steps: int = 10
    record_samples: bool = False              # each rank writes the cache rows it trained on


@dataclass
class MonitorConfig:
    """Label-efficiency monitor: CV AUC of teacher embeddings of the TRAINING cases only."""

    every_n_epochs: int = 0                   # 0 = off; runs only when data.internal_cache is set
    method: str = "knn"                       # knn | logistic
    k: int = 20                               # neighbours (knn)
    batch_size: int = 16
    pool: str = "mask"                        # cls | avg | mask: how tokens become one embedding


@dataclass
class PretrainConfig:
    """The sections every method shares. A run's config also has its method's section
    (``dino:``, ``mae:``, ...): :func:`rn_classifier.pretrain.methods.pretrain_schema`."""

    name: str = "pretrain"
    method: str = "dino"                      # a registered method: rn_classifier.pretrain.methods
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)


def check_range(key: str, values, low: float, high: float) -> None:
    if len(values) != 2 or not (low < values[0] <= values[1] <= high):
        raise InputError(f"{key} must be [min, max] with {low} < min <= max <= {high}, got {list(values)}")


def check_probability(key: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise InputError(f"{key} must be a probability in [0, 1], got {p}")


def check_shared_sections(cfg: PretrainConfig) -> None:
    """Raise ``InputError`` for a shared setting that cannot train (the method's own section is
    checked by its registry entry, :func:`rn_classifier.pretrain.methods.check_config`)."""
    check_choice(cfg.trainer.precision, "trainer.precision", PRECISIONS, ConfigError)
    check_choice(cfg.monitor.method, "monitor.method", MONITOR_METHODS, ConfigError)
    check_choice(cfg.monitor.pool, "monitor.pool", POOLS, ConfigError)
    check_choice(cfg.data.augment_on, "data.augment_on", AUGMENT_PLACES, ConfigError)
    a = cfg.augment
    for key in ("flip_prob", "rotate90_prob", "intensity_scale_prob", "intensity_shift_prob",
                "gamma_prob", "noise_prob", "bias_field_prob"):
        check_probability(f"augment.{key}", getattr(a, key))
    check_range("augment.gamma", a.gamma, 0.0, float("inf"))
    check_range("augment.blur_sigma", a.blur_sigma, 0.0, float("inf"))
    if len(cfg.data.spacing) != 3 or min(cfg.data.spacing) <= 0:
        raise InputError(f"data.spacing must be 3 positive voxel sizes in mm, got {list(cfg.data.spacing)}")
    if cfg.data.batch_size < 1:
        raise InputError(f"data.batch_size must be >= 1, got {cfg.data.batch_size}")
    if cfg.data.num_workers < 0:
        raise InputError(f"data.num_workers must be >= 0, got {cfg.data.num_workers}")
    if cfg.data.include_internal_train and not cfg.data.internal_cache:
        raise InputError("data.include_internal_train needs data.internal_cache (the labelled "
                         "cohort's preprocess cache) and data.split")
    if cfg.data.internal_cache and not cfg.data.split:
        raise InputError("data.internal_cache is set but data.split is not: the split decides which "
                         "internal cases are training cases (the internal test is never used)")
    if cfg.trainer.epochs < 1:
        raise InputError(f"trainer.epochs must be >= 1, got {cfg.trainer.epochs}")
    if cfg.trainer.max_steps is not None and cfg.trainer.max_steps < 1:
        raise InputError(f"trainer.max_steps must be >= 1 or null, got {cfg.trainer.max_steps}")
    if cfg.trainer.checkpoint_every_n_steps < 1:
        raise InputError(f"trainer.checkpoint_every_n_steps must be >= 1, got {cfg.trainer.checkpoint_every_n_steps}")
    if cfg.optim.lr <= 0 or cfg.optim.min_lr < 0:
        raise InputError(f"optim.lr must be > 0 and optim.min_lr >= 0, got {cfg.optim.lr}, {cfg.optim.min_lr}")
    if cfg.monitor.every_n_epochs < 0 or cfg.monitor.k < 1:
        raise InputError("monitor.every_n_epochs must be >= 0 and monitor.k >= 1")

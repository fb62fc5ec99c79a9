"""Config schema of ``rn-classifier study`` (OmegaConf structured config).

A study config names, for every stage, the stage's own YAML config (the same files the stage
commands take, ``configs/<stage>/...``) plus dotted overrides; the study runner fills in the
paths between stages (caches, split, encoder), so a stage config never needs editing to be
used inside a study. Relative paths are read from the current directory first, then from the
repository (``configs/...`` works from anywhere inside a checkout).

=====================  ===================================================================
``data``               where the cohorts come from: ``source: synth`` (the SYNTHETIC cohort,
                       ``data.synth``), ``manifests`` (ready manifest CSVs) or ``molab`` (a
                       MOLAB-layout tree + labels file, imported by ``import-molab``)
``clinical``           ``unseen_levels``: impute (default) | error, for categorical levels the
                       internal cohort lacks (rn_classifier.data.clinical_audit), decided at
                       check-data, before any training
``split``              the patient-level split every model shares (internal test + CV folds)
``preprocess``         ``configs/preprocess/*.yaml``
``pretrain``           ``configs/pretrain/*.yaml`` and the devices to run it on
``finetune``           one entry per model (``configs/finetune/*.yaml``); ``set`` applies to all
``radiomics``          ``configs/radiomics/*.yaml`` (the radiomics baseline)
``baselines``          further registered baselines (:mod:`rn_classifier.baselines.registry`)
``label_efficiency``   training-patient fractions for the SSL and supervised models
``compare``            the reference model of the DeLong comparisons, bootstrap settings
``report``             ``rn-classifier report`` of the finished run
=====================  ===================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..config import REPO_ROOT
from ..errors import ConfigError

DATA_SOURCES = ("synth", "manifests", "molab")


@dataclass
class SynthConfig:
    preset: str = "demo"                      # demo | paper | tiny (rn_classifier.data.synth.presets)
    seed: int = 0
    pool_size: Optional[int] = None           # null: the preset's unlabeled pool size
    separation: Optional[float] = None        # null: the preset's class separation
    workers: int = 2
    format: str = "nifti"                     # nifti | dicom-rt (centres as MR series + RTSTRUCT)


@dataclass
class CohortSource:
    """One cohort on disk: a ready manifest, or a MOLAB-layout tree to import."""

    manifest: Optional[str] = None            # data.source=manifests: a manifest CSV (seam 1)
    root: Optional[str] = None                # data.source=molab: ROOT/<patient>/<patient>/NIFTI/...
    labels: Optional[str] = None              # CSV patient,timepoint,lesion,label (1 = RN)
    clinical: Optional[str] = None            # clinical spreadsheet (.xlsx)
    center: str = "MOLAB"                     # centre name written into the manifest
    columns: Optional[str] = None             # column map YAML (default configs/data/molab_columns.yaml)


@dataclass
class DataConfig:
    source: str = "synth"                     # synth | manifests | molab
    synth: SynthConfig = field(default_factory=SynthConfig)
    internal: CohortSource = field(default_factory=CohortSource)
    external: CohortSource = field(default_factory=CohortSource)    # second centre; optional
    unlabeled: CohortSource = field(default_factory=CohortSource)   # pretraining pool (manifest)


@dataclass
class ClinicalPolicy:
    # a categorical level of the external cohort that the internal one never holds:
    # impute = treated as missing (imputed as in training, listed); error = stop at check-data
    unseen_levels: str = "impute"


@dataclass
class SplitConfig:
    n_folds: int = 5
    test_fraction: float = 0.2
    seed: int = 0


@dataclass
class StageConfig:
    config: Optional[str] = None              # the stage's YAML
    set: list[str] = field(default_factory=list)  # dotted overrides of that YAML


@dataclass
class PretrainStage:
    enabled: bool = True                      # false: fine-tune from data.encoder instead
    config: Optional[str] = "configs/pretrain/dino_demo.yaml"
    set: list[str] = field(default_factory=list)
    encoder: Optional[str] = None             # enabled=false: an encoder export to fine-tune
    accelerator: str = "auto"                 # cpu | gpu | auto
    devices: str = "1"                        # per node: a number or "auto" (several → DDP)
    num_nodes: int = 1
    max_steps: Optional[int] = None
    exclude_external_center: bool = True      # no external-centre case can enter pretraining


@dataclass
class FinetuneModel:
    config: Optional[str] = None              # configs/finetune/<model>_*.yaml
    set: list[str] = field(default_factory=list)
    enabled: bool = True


@dataclass
class FinetuneStage:
    # model name (= `name` in its config = `model` column of predictions.csv) -> its config
    models: dict[str, FinetuneModel] = field(default_factory=dict)
    set: list[str] = field(default_factory=list)   # overrides applied to every model


@dataclass
class BaselineStage:
    """A registered baseline (rn_classifier.baselines.registry) run by the study."""
    enabled: bool = True
    config: Optional[str] = None              # its config file, if it takes one
    set: list[str] = field(default_factory=list)


@dataclass
class RadiomicsStage(BaselineStage):
    config: Optional[str] = "configs/radiomics/demo.yaml"


@dataclass
class LabelEfficiencyStage:
    fractions: list[float] = field(default_factory=list)   # e.g. [0.1, 0.25, 0.5, 1.0]; [] = off
    models: list[str] = field(default_factory=lambda: ["ssl_vit", "supervised_vit"])
    seed: int = 0                             # which patients a fraction keeps (nested subsets)
    n_boot: int = 500                         # bootstrap replicates of the curve's CIs


@dataclass
class CompareStage:
    reference: str = "ssl_vit"                # every other model is compared against this one
    n_boot: int = 2000
    seed: int = 0
    conf_level: float = 0.95
    n_bins: int = 10
    recalibrate: Optional[str] = None         # platt | isotonic


@dataclass
class ContourStage:
    """Predictions under alternative contours (rn_classifier.study.contour); the fields after
    ``enabled`` are those of rn_classifier.data.contour_variants.ContourVariantConfig."""

    enabled: bool = True
    margin_mm: float = 1.0                    # erode / dilate radius (at least one voxel)
    n_jitter: int = 2                         # boundary-jitter draws per case
    jitter_mm: float = 1.0                    # SD of the boundary displacement
    jitter_smooth_mm: float = 4.0             # its correlation length
    seed: int = 0
    morphology: bool = True
    raters: bool = True                       # other raters' masks (manifest columns mask_<rater>)


@dataclass
class ShiftStage:
    """The label-free shift check (rn_classifier.shift): each cohort against internal oof."""

    enabled: bool = True
    level: float = 0.99                       # quantile of the held-out internal spread that flags
    n_draws: int = 200                        # random internal held-out subsets per verdict
    seed: int = 0


@dataclass
class ReportStage:
    enabled: bool = True
    pseudonymize: bool = False


@dataclass
class StudyConfig:
    name: str = "study"
    data: DataConfig = field(default_factory=DataConfig)
    clinical: ClinicalPolicy = field(default_factory=ClinicalPolicy)
    split: SplitConfig = field(default_factory=SplitConfig)
    preprocess: StageConfig = field(default_factory=lambda: StageConfig("configs/preprocess/demo.yaml"))
    pretrain: PretrainStage = field(default_factory=PretrainStage)
    finetune: FinetuneStage = field(default_factory=FinetuneStage)
    radiomics: RadiomicsStage = field(default_factory=RadiomicsStage)
    # further registered baselines by name: {name: {enabled, config, set}}
    baselines: dict[str, BaselineStage] = field(default_factory=dict)
    label_efficiency: LabelEfficiencyStage = field(default_factory=LabelEfficiencyStage)
    contour: ContourStage = field(default_factory=ContourStage)
    compare: CompareStage = field(default_factory=CompareStage)
    shift: ShiftStage = field(default_factory=ShiftStage)
    report: ReportStage = field(default_factory=ReportStage)


def resolve_path(path: str | None) -> Path | None:
    """A config-named file: as given if it exists (cwd), else relative to the repository."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    in_repo = REPO_ROOT / p
    return in_repo if in_repo.exists() else p


def _need_file(path: str | None, key: str) -> None:
    if not path:
        raise ConfigError(f"{key} is required")
    p = resolve_path(path)
    if not p.exists():
        raise ConfigError(f"{key}: {path} does not exist (looked in the current directory and in "
                          f"{REPO_ROOT})")


def enabled_baselines(cfg: StudyConfig) -> dict[str, tuple[str, BaselineStage]]:
    """The baselines the study runs: name → (its config section, its entry); the radiomics
    baseline has a section of its own, the others sit under ``baselines``."""
    entries = {"radiomics": ("radiomics", cfg.radiomics),
               **{name: (f"baselines.{name}", entry) for name, entry in cfg.baselines.items()}}
    return {name: pair for name, pair in entries.items() if pair[1].enabled}


def validate_study(cfg: StudyConfig) -> StudyConfig:
    """Checks the schema cannot express, before any stage runs."""
    from ..data.clinical_audit import check_unseen_policy

    check_unseen_policy(cfg.clinical.unseen_levels)
    if cfg.data.source not in DATA_SOURCES:
        raise ConfigError(f"data.source must be one of {list(DATA_SOURCES)}, got {cfg.data.source!r}")
    if cfg.data.source == "synth":
        from ..data.synth.cohort import FORMATS

        if cfg.data.synth.format not in FORMATS:
            raise ConfigError(f"data.synth.format must be one of {list(FORMATS)}, got {cfg.data.synth.format!r}")
    if cfg.data.source == "manifests":
        _need_file(cfg.data.internal.manifest, "data.internal.manifest")
        for name in ("external", "unlabeled"):
            if getattr(cfg.data, name).manifest:
                _need_file(getattr(cfg.data, name).manifest, f"data.{name}.manifest")
    if cfg.data.source == "molab":
        _need_file(cfg.data.internal.root, "data.internal.root")
        _need_file(cfg.data.internal.labels, "data.internal.labels")
        ext = cfg.data.external
        if ext.root or ext.manifest:
            if ext.root:
                _need_file(ext.labels, "data.external.labels")
        if cfg.data.unlabeled.manifest:
            _need_file(cfg.data.unlabeled.manifest, "data.unlabeled.manifest")
    _need_file(cfg.preprocess.config, "preprocess.config")
    if cfg.pretrain.enabled:
        _need_file(cfg.pretrain.config, "pretrain.config")
    elif cfg.pretrain.encoder:
        _need_file(cfg.pretrain.encoder, "pretrain.encoder")
    models = {k: m for k, m in cfg.finetune.models.items() if m.enabled}
    baselines = enabled_baselines(cfg)
    if not models and not baselines:
        raise ConfigError("the study has no model: set finetune.models, radiomics.enabled or baselines")
    for name, model in models.items():
        _need_file(model.config, f"finetune.models.{name}.config")
    from ..baselines.registry import get_baseline

    for name, (section, entry) in baselines.items():
        get_baseline(name)
        if entry.config is not None:
            _need_file(entry.config, f"{section}.config")
    for f in cfg.label_efficiency.fractions:
        if not 0.0 < f <= 1.0:
            raise ConfigError(f"label_efficiency.fractions must lie in (0, 1], got {f}")
    unknown = [m for m in cfg.label_efficiency.models if m not in models]
    if cfg.label_efficiency.fractions and unknown:
        raise ConfigError(f"label_efficiency.models {unknown} are not among finetune.models "
                          f"{sorted(models)}")
    if cfg.split.n_folds < 2:
        raise ConfigError(f"split.n_folds must be at least 2, got {cfg.split.n_folds}")
    if not 0.0 < cfg.split.test_fraction < 1.0:
        raise ConfigError(f"split.test_fraction must be in (0, 1), got {cfg.split.test_fraction}")
    return cfg

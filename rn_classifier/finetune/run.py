"""``run_finetune``: one model of the study, cross-validated on the internal cohort.

Run folder (``RUN_DIR``)::

    config.yaml        the resolved config; its paths are relative to RUN_DIR (run_relative_config)
    provenance.json    git SHA, package versions, date
    run.json           hash of the settings that change results (a resume must match it)
    split.csv          the patient-level split (made here, or copied from data.split / fusion.image_run)
    folds/fold_k/      the fold's model files, training logs, and its predictions (see cv.py)
    image_model/       late fusion without fusion.image_run: the image run it stacks on
    predictions.csv    seam 2: out-of-fold, internal test and external predictions of the model
    summary.json       case counts and a quick-look AUC per cohort (the statistics come from
                       `rn-classifier compare`)
    bundle/            seam 5: the model bundle `rn-classifier predict` loads alone (.bundle)
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .. import atomic
from ..config import config_hash, save_config
from ..data.clinical_audit import apply_unseen_policy, clinical_audit
from ..data.manifest import check_disjoint_ids, load_manifest
from ..data.split import load_split, make_split, save_split
from ..errors import InputError
from ..family import ModelFamily, family_of
from ..predictions import write_predictions
from ..provenance import run_provenance
from .bundle import export_bundle
from .config import FinetuneConfig, result_settings, validate_config
from .cv import (FoldTrainer, clinical_trainer, ensemble, fold_dir, image_trainer,
                 late_fusion_trainer, read_fold, run_folds)

# The config's paths to other files and runs: stored relative to the run folder (seam 4), so the
# folder works from any working directory and after the study folder is moved.
RUN_PATHS = (("data", "internal_manifest"), ("data", "external_manifest"), ("data", "internal_cache"),
             ("data", "external_cache"), ("data", "split"), ("model", "pretrained"), ("fusion", "image_run"))


def relative_to(path: str | os.PathLike, folder: Path) -> str:
    """``path`` (absolute or relative to the working directory) as seen from ``folder``."""
    return os.path.relpath(Path(path).resolve(), Path(folder).resolve())


def run_relative_config(cfg: FinetuneConfig, out: Path) -> FinetuneConfig:
    """A copy of ``cfg`` whose :data:`RUN_PATHS` are relative to the run folder ``out``."""
    cfg = copy.deepcopy(cfg)
    for section, key in RUN_PATHS:
        value = getattr(getattr(cfg, section), key)
        if value:
            setattr(getattr(cfg, section), key, relative_to(value, out))
    return cfg


def _result_hash(cfg: FinetuneConfig) -> str:
    """What a resumed run must match: the settings that change results (a resumed run may differ
    in the :data:`~rn_classifier.finetune.config.RESULT_NEUTRAL` ones)."""
    return config_hash(result_settings(cfg))


def find_encoder_dir(path: str | os.PathLike) -> Path:
    """An encoder export folder, or a pretraining run folder holding exactly one export."""
    path = Path(path)
    if (path / "encoder.json").is_file():
        return path
    if not path.is_dir():
        raise InputError(f"encoder folder {path} does not exist")
    found = sorted(p.parent for p in path.rglob("encoder.json"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise InputError(f"{path} holds no encoder export (encoder.json + encoder.safetensors); "
                         "pass the folder `rn-classifier pretrain` exported")
    raise InputError(f"{path} holds {len(found)} encoder exports ({[str(f) for f in found]}); "
                     "pass the one to fine-tune")


def encoder_builder(cfg: FinetuneConfig, internal_cache) -> tuple[Callable, dict]:
    """A function returning a fresh 2-channel encoder, and a description of its origin.

    Pretrained: the export is checked against the config and the cache (architecture, patch
    size, crop size, spacing, normalisation), rebuilt with the fine-tuning drop-path rate and
    its patch embedding inflated to 2 channels (the mask channel's weights start at zero), or to
    the region channels when ``model.mask_encoding`` is ``regions`` (``inflate.use_mask_encoding``).
    ``model.pretrained: null``: the same architecture, randomly initialised (supervised ViT).
    """
    from ..models import create_model
    from ..models.export import load_encoder
    from .inflate import use_mask_encoding

    m = cfg.model
    if m.pretrained is None:
        def build():
            return create_model(m.arch, in_chans=m.in_chans, img_size=list(m.crop_size),
                                patch_size=m.patch_size, drop_path_rate=m.drop_path_rate,
                                pos_embed_type=m.pos_embed_type, mask_encoding=m.mask_encoding)
        probe = build()
        return build, {"pretrained": None, "arch": m.arch, "patch_size": list(probe.patch_size),
                       "pos_embed_type": probe.init_kwargs["pos_embed_type"],
                       "mask_encoding": probe.mask_encoding}

    folder = find_encoder_dir(m.pretrained)
    pretrained, meta = load_encoder(folder)
    where = f"encoder export {folder}"
    problems = []
    if meta["architecture"] != m.arch:
        problems.append(f"architecture is {meta['architecture']!r} but model.arch is {m.arch!r}")
    patch = [int(p) for p in meta["patch_size"]]
    if m.patch_size is not None and any(p != m.patch_size for p in patch):
        problems.append(f"patch size is {patch} but model.patch_size is {m.patch_size}")
    if [int(c) for c in meta["crop_size"]] != [int(c) for c in m.crop_size]:
        problems.append(f"crop size is {meta['crop_size']} voxels but model.crop_size is "
                        f"{list(m.crop_size)}")
    exported_pos_embed = meta["model_kwargs"].get("pos_embed_type", "learn")
    if m.pos_embed_type is not None and m.pos_embed_type != exported_pos_embed:
        problems.append(f"its positional embedding is {exported_pos_embed!r} but "
                        f"model.pos_embed_type is {m.pos_embed_type!r}")
    if int(meta["in_chans"]) > m.in_chans:
        problems.append(f"it has {meta['in_chans']} input channels, more than model.in_chans={m.in_chans}")
    cache_norm = internal_cache.meta.get("normalisation")
    if cache_norm is not None and meta.get("normalisation") and \
            dict(meta["normalisation"]).get("method") != dict(cache_norm).get("method"):
        problems.append(f"intensity normalisation is {meta['normalisation']} but the cache "
                        f"{internal_cache.folder} used {cache_norm}")
    if problems:
        raise InputError(f"{where} does not fit the fine-tuning config: " + "; ".join(problems))
    internal_cache.check_spacing(meta["spacing"], what=where)
    kwargs = dict(meta["model_kwargs"], drop_path_rate=m.drop_path_rate)
    state = pretrained.state_dict()
    mask_encoding = m.mask_encoding or meta["model_kwargs"].get("mask_encoding", "binary")

    def build():
        model = create_model(meta["architecture"], **kwargs)
        model.load_state_dict(state)
        return use_mask_encoding(model, mask_encoding, m.in_chans)

    return build, {"pretrained": str(folder), "arch": meta["architecture"], "patch_size": patch,
                   "pos_embed_type": exported_pos_embed, "mask_encoding": mask_encoding,
                   "pretrained_in_chans": int(meta["in_chans"]), "encoder_git_sha": meta.get("git_sha")}


def _same_split(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    key = ["case_id", "part", "fold"]
    sa = a[key].astype(str).sort_values("case_id").reset_index(drop=True)
    sb = b[key].astype(str).sort_values("case_id").reset_index(drop=True)
    return sa.equals(sb)


def resolve_split(cfg: FinetuneConfig, out: Path, internal: pd.DataFrame,
                  echo: Callable[[str], None]) -> pd.DataFrame:
    """Reuse the run's split, ``data.split`` or the image run's; else make one. Saved in ``out``."""
    own = out / "split.csv"
    source = cfg.data.split
    if (source is None and not own.is_file() and family_of(cfg) is ModelFamily.LATE
            and cfg.fusion.image_run):
        source = str(Path(cfg.fusion.image_run) / "split.csv")
    if source is not None:
        split = load_split(source, internal)
        if own.is_file() and Path(source).resolve() != own.resolve():
            if not _same_split(split, load_split(own, internal)):
                raise InputError(f"{out} was run with its own split.csv, which differs from "
                                 f"{source}; use another --out, or the same split")
        echo(f"split: reusing {source}")
    elif own.is_file():
        split = load_split(own, internal)
        echo(f"split: reusing {own}")
    else:
        split = make_split(internal, test_fraction=cfg.cv.test_fraction, n_folds=cfg.cv.n_folds,
                           seed=cfg.cv.seed)
        echo(f"split: made a new patient-level split ({cfg.cv.n_folds} folds, "
             f"{cfg.cv.test_fraction:.0%} internal test)")
    n_folds = int(split.loc[split["part"] == "train", "fold"].max()) + 1
    if n_folds != cfg.cv.n_folds:
        raise InputError(f"the split {source or own} has {n_folds} folds but cv.n_folds is "
                         f"{cfg.cv.n_folds}; set cv.n_folds={n_folds} or make a new split")
    if not own.is_file() or (source is not None and Path(source).resolve() != own.resolve()):
        save_split(split, own)
    return split


def load_cases(cfg: FinetuneConfig, out: Path, echo: Callable[[str], None]
               ) -> tuple[pd.DataFrame, pd.DataFrame, dict | None]:
    """(cases, split, audit): one row per case (index ``case_id``) with ``patient_id, label,
    synthetic, part`` (train | internal_test | external), ``fold`` and the clinical columns.

    audit: the clinical values the model imputes (:func:`clinical_audit`), None without
    clinical columns; external levels the internal cohort lacks are made missing in ``cases``
    under ``unseen_levels=impute`` and refused under ``error``.
    """
    spec = dict(cfg.clinical) if family_of(cfg).uses_clinical else {}
    internal = load_manifest(cfg.data.internal_manifest, clinical=spec)
    unlabelled = internal["label"].isna()
    if unlabelled.any():
        echo(f"internal manifest: {int(unlabelled.sum())} unlabelled case(s) left out of fine-tuning")
        internal = internal[~unlabelled].reset_index(drop=True)
    cohorts = {"internal": internal}
    external = None
    if cfg.data.external_manifest:
        external = load_manifest(cfg.data.external_manifest, clinical=spec, require_labels=True)
        check_disjoint_ids(internal, external)
        cohorts["external"] = external
        external, unseen = apply_unseen_policy(internal, external, spec, cfg.unseen_levels,
                                               source=str(cfg.data.external_manifest))
        for col, levels in unseen.items():
            echo(f"external: clinical column '{col}' level(s) {sorted(levels)} never seen in the "
                 "internal cohort: treated as missing (unseen_levels=impute)")
    audit = clinical_audit(cohorts, spec, cfg.unseen_levels) if spec else None
    split = resolve_split(cfg, out, internal, echo)
    keep = ["case_id", "patient_id", "label", "synthetic", *spec]
    cases = internal[keep].merge(split[["case_id", "part", "fold"]], on="case_id", how="left")
    if external is not None:
        cases = pd.concat([cases, external[keep].assign(part="external", fold=-1)], ignore_index=True)
    cases["fold"] = cases["fold"].astype(int)
    return cases.set_index("case_id", drop=False).rename_axis(None), split, audit


def _open_caches(cfg: FinetuneConfig, cases: pd.DataFrame):
    from ..data.cache import CropCache
    from .datamodule import check_finetune_cache

    internal = CropCache(cfg.data.internal_cache)
    check_finetune_cache(internal, cfg.model.crop_size)
    internal.rows_for(cases.index[cases["part"] != "external"].tolist())
    external = None
    ext_ids = cases.index[cases["part"] == "external"].tolist()
    if ext_ids:
        external = CropCache(cfg.data.external_cache)
        check_finetune_cache(external, cfg.model.crop_size)
        external.check_spacing(internal.spacing, what=f"the internal cache {internal.folder}")
        external.rows_for(ext_ids)
    return internal, external


def _image_fold_predictions(run_dir: Path, n_folds: int) -> pd.DataFrame:
    tables = []
    for k in range(n_folds):
        table = read_fold(fold_dir(run_dir, k))
        if table is None:
            raise InputError(f"image run {run_dir} is incomplete: fold {k} has no model and "
                             f"predictions in {fold_dir(run_dir, k)}; finish that run first")
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def quick_aucs(preds: pd.DataFrame) -> dict:
    """Per cohort: n, positives and ROC AUC (sklearn) where both classes occur."""
    from ..stats.validation import auc_or_none

    out = {}
    for cohort, g in preds.groupby("cohort", sort=False):
        y = g["y_true"].to_numpy()
        out[cohort] = {"n": int(len(g)), "n_radiation_necrosis": int(y.sum()),
                       "auc": auc_or_none(y, g["y_prob"])}
    return out


@dataclass
class FoldPlan:
    """What a family's step hands :func:`run_finetune`: how a fold trains, and what it starts from
    (the encoder export, or the image run late fusion stacks on) for provenance.json."""
    trainer: FoldTrainer
    origin: dict = field(default_factory=dict)


# A family's step: (cfg, out, cases, split, folds, echo) → its FoldPlan; None while late fusion
# waits for folds of the image model it trains itself.
TrainerStep = Callable[..., "FoldPlan | None"]


def _clinical_step(cfg: FinetuneConfig, out: Path, cases: pd.DataFrame, split: pd.DataFrame,
                   folds: Sequence[int] | None, echo: Callable[[str], None]) -> FoldPlan:
    """A logistic model on the clinical vector: it needs no images and no other run."""
    return FoldPlan(clinical_trainer(cfg, cases))


def _late_image_run(cfg: FinetuneConfig, out: Path, split: pd.DataFrame, folds: Sequence[int] | None,
                    echo: Callable[[str], None]) -> Path | None:
    """The image run late fusion stacks on: ``fusion.image_run`` (checked to share the split),
    or one trained here in ``out/image_model`` on this run's split; None while its folds are missing."""
    image_dir = Path(cfg.fusion.image_run) if cfg.fusion.image_run else out / "image_model"
    if cfg.fusion.image_run is not None:
        if not _same_split(split, load_split(image_dir / "split.csv")):
            raise InputError(f"fusion.image_run {image_dir} used another split than this run; "
                             f"stacking needs the same folds (pass --set data.split={image_dir / 'split.csv'})")
        return image_dir
    image_cfg = copy.deepcopy(cfg)
    image_cfg.name = f"{cfg.name}_image"
    image_cfg.fusion.kind = "none"
    image_cfg.data.split = str(out / "split.csv")
    echo(f"late fusion: training the image model in {image_dir}")
    if not run_finetune(image_cfg, image_dir, folds=folds, echo=echo)["complete"]:
        echo("late fusion waits for every fold of its image model")
        return None
    return image_dir


def _late_fusion_step(cfg: FinetuneConfig, out: Path, cases: pd.DataFrame, split: pd.DataFrame,
                      folds: Sequence[int] | None, echo: Callable[[str], None]) -> FoldPlan | None:
    """A logistic stacker on the out-of-fold logits of an image run and the clinical vector."""
    image_dir = _late_image_run(cfg, out, split, folds, echo)
    if image_dir is None:
        return None
    trainer = late_fusion_trainer(cfg, cases, split, _image_fold_predictions(image_dir, cfg.cv.n_folds))
    return FoldPlan(trainer, {"image_run": relative_to(image_dir, out)})


def _image_step(cfg: FinetuneConfig, out: Path, cases: pd.DataFrame, split: pd.DataFrame,
                folds: Sequence[int] | None, echo: Callable[[str], None]) -> FoldPlan:
    """A ViT fine-tuned on the crop caches (with a clinical branch for intermediate fusion)."""
    internal_cache, external_cache = _open_caches(cfg, cases)
    build, origin = encoder_builder(cfg, internal_cache)
    return FoldPlan(image_trainer(cfg, cases, internal_cache, external_cache, build, echo=echo), origin)


# family → the step that makes its fold trainer
TRAINER_STEPS: dict[ModelFamily, TrainerStep] = {
    ModelFamily.IMAGE: _image_step,
    ModelFamily.INTERMEDIATE: _image_step,
    ModelFamily.LATE: _late_fusion_step,
    ModelFamily.CLINICAL: _clinical_step,
}


def trainer_step(family: ModelFamily) -> TrainerStep:
    """The :data:`TRAINER_STEPS` entry of ``family``; a family without one is an error naming the known."""
    try:
        return TRAINER_STEPS[family]
    except KeyError:
        raise InputError(f"fine-tuning has no step for the model family {family.value!r}; known: "
                         + ", ".join(f.value for f in TRAINER_STEPS)) from None


def _check_resume(cfg: FinetuneConfig, out: Path) -> None:
    """A run folder that already holds a run must have been made with the same result settings."""
    run_meta = out / "run.json"
    if run_meta.is_file():
        import json

        previous = json.loads(run_meta.read_text()).get("result_hash")
        if previous != _result_hash(cfg):
            raise InputError(f"{out} holds a run made with different settings (see "
                             f"{out / 'config.yaml'}); use another --out or delete that folder")


def _echo_cases(cfg: FinetuneConfig, cases: pd.DataFrame, echo: Callable[[str], None]) -> None:
    echo(f"{cfg.name}: {int((cases['part'] == 'train').sum())} training cases in {cfg.cv.n_folds} folds, "
         f"{int((cases['part'] == 'internal_test').sum())} internal test, "
         f"{int((cases['part'] == 'external').sum())} external")


def _write_run_record(cfg: FinetuneConfig, out: Path, cases: pd.DataFrame, origin: dict) -> None:
    """config.yaml, provenance.json and run.json: what made the run, before any fold trains."""
    save_config(run_relative_config(cfg, out), out / "config.yaml")
    atomic.write_json(out / "provenance.json", {**run_provenance(), **origin,
                                                "synthetic": bool(cases["synthetic"].any())})
    atomic.write_json(out / "run.json", {"result_hash": _result_hash(cfg), "name": cfg.name})


def _write_results(cfg: FinetuneConfig, out: Path, cases: pd.DataFrame, audit: dict | None,
                   tables: dict[int, pd.DataFrame]) -> dict:
    """predictions.csv (the fold ensemble), summary.json and the model bundle; returns the summary."""
    preds = ensemble(tables, cases, cfg.name, cfg.cv.n_folds)
    write_predictions(preds, out / "predictions.csv")
    summary = {"complete": True, "model": cfg.name, "synthetic": bool(cases["synthetic"].any()),
               "cohorts": quick_aucs(preds)}
    if audit is not None:
        summary["clinical_data"] = audit
    atomic.write_json(out / "summary.json", summary)
    export_bundle(out)
    return summary


def run_finetune(cfg: FinetuneConfig, out: str | os.PathLike, encoder_dir: str | os.PathLike | None = None,
                 folds: Sequence[int] | None = None,
                 echo: Callable[[str], None] = print) -> dict:
    """Cross-validate one model and write ``out/predictions.csv`` (seam 2).

    encoder_dir: encoder export or pretraining run folder; overrides ``model.pretrained``.
    folds: train only these folds (cluster array jobs); predictions.csv is written once every
        fold of the split is complete. Complete folds are never retrained (resume).
    Returns the summary (also written to ``out/summary.json``); ``{"complete": False}`` while
    folds are missing.
    """
    cfg = copy.deepcopy(cfg)
    if encoder_dir is not None:
        cfg.model.pretrained = str(encoder_dir)
    validate_config(cfg)
    out = atomic.make_output_dir(out)
    _check_resume(cfg, out)
    cases, split, audit = load_cases(cfg, out, echo)
    _echo_cases(cfg, cases, echo)
    plan = trainer_step(family_of(cfg))(cfg, out, cases, split, folds, echo)
    if plan is None:
        return {"complete": False, "folds_complete": []}
    _write_run_record(cfg, out, cases, plan.origin)
    n_folds = cfg.cv.n_folds
    run_folds(out, n_folds, plan.trainer, folds=folds, echo=echo)
    tables = {k: t for k in range(n_folds) if (t := read_fold(fold_dir(out, k))) is not None}
    if len(tables) < n_folds:
        echo(f"{len(tables)}/{n_folds} folds complete; predictions.csv is written when all are")
        return {"complete": False, "folds_complete": sorted(tables)}
    return _write_results(cfg, out, cases, audit, tables)

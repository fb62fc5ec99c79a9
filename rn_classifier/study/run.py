"""``run_study``: the whole study from one config, stage by stage, resumable.

Run folder (``RUN``)::

    study.yaml             the resolved study config
    provenance.json        git SHA, package versions, date, synthetic: true|false
    stages.json            per stage: key (settings + upstream keys), status, seconds
    cohort/                synth or import output: cohort/manifests/{internal,external,unlabeled}.csv
    cache/<cohort>/        preprocess caches
    split.csv              the patient-level split every model uses (internal test + CV folds)
    pretrain/              pretraining run (encoder.json + encoder.safetensors inside)
    finetune/<model>/      one fine-tuning run per model (<model> = model column of predictions.csv),
                           with its model bundle (seam 5) in bundle/
    radiomics/             radiomics run; every other registered baseline in RUN/<name>/ likewise
    label_efficiency/      with label fractions: runs per model and fraction, curve.csv + curve.json
    check/clinical.json    missing clinical values and unseen levels per cohort (what the models impute)
    contour/               image models' held-out predictions under alternative contours
                           (contour_predictions.csv; rn_classifier.study.contour)
    compare/stats.json     every predictions.csv compared with the reference model (+ clinical.json)
    shift/                 label-free shift check: shift.json, cases.csv (rn_classifier.shift)
    report/                report.html, report.json (rn_classifier.report)

Stages run in that order. A stage is skipped when stages.json records it ``done`` with the
same key; a stage whose key changed has its folder replaced; an interrupted stage resumes
(pretraining from its last checkpoint, fine-tuning at fold granularity).
"""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from .. import atomic
from ..config import load_config, save_config, to_dict
from ..errors import ConfigError, InputError
from ..family import ModelFamily, family_of
from .config import StudyConfig, enabled_baselines, resolve_path, validate_study
from .stages import StageBook, file_fingerprint, stage_key

COHORTS = ("internal", "external", "unlabeled")
SPLIT_FILE = "split.csv"


def load_study_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> StudyConfig:
    """The study YAML (``configs/study/*.yaml``) with dotted overrides, validated."""
    p = resolve_path(str(path)) if path is not None else None
    return validate_study(load_config(StudyConfig, p, overrides))


def _absolute_paths(manifest: Path, out: Path) -> pd.DataFrame:
    """Copy a manifest with image / mask paths made absolute (they are relative to the file)."""
    from ..data.manifest import with_absolute_paths

    df = with_absolute_paths(manifest)
    atomic.write_csv(out, df)
    return df


def _files_fingerprint(manifest: Path) -> dict:
    """What a real-data manifest points at: the manifest's content and each file's size/mtime."""
    import hashlib

    from ..data.manifest import read_csv_table

    df = read_csv_table(Path(manifest), "manifest", dtype=str, keep_default_na=False)
    h = hashlib.sha256()
    for column in ("image", "mask"):
        for p in df.get(column, []):
            if not p:
                continue
            f = Path(p) if Path(p).is_absolute() else manifest.parent / p
            try:
                st = f.stat()
                h.update(f"{p}:{st.st_size}:{int(st.st_mtime)}".encode())
            except OSError:
                h.update(f"{p}:missing".encode())   # check-data lists it
    return {**file_fingerprint(manifest), "files": h.hexdigest()[:16]}


class Study:
    """One study run: its config, its folder, its stage book. ``run()`` does everything."""

    def __init__(self, cfg: StudyConfig, out: str | os.PathLike, echo: Callable[[str], None] = print,
                 progress: bool = False):
        self.cfg = validate_study(copy.deepcopy(cfg))
        self.out = Path(out)
        self.echo = echo
        self.progress = progress
        self.book: StageBook | None = None
        self.keys: dict[str, str] = {}
        self.stage_of: dict[str, str] = {}       # model name → the stage that writes its predictions

    # -- paths -----------------------------------------------------------------------------
    def manifest(self, cohort: str) -> Path:
        return self.out / "cohort" / "manifests" / f"{cohort}.csv"

    def cache(self, cohort: str) -> Path:
        return self.out / "cache" / cohort

    def has(self, cohort: str) -> bool:
        return self.manifest(cohort).is_file()

    @property
    def split_path(self) -> Path:
        return self.out / SPLIT_FILE

    def finetune_models(self) -> dict:
        """Enabled models, image models before the late-fusion models that stack on them."""
        from ..finetune.config import FinetuneConfig, validate_config

        models = {}
        for name, entry in self.cfg.finetune.models.items():
            if not entry.enabled:
                continue
            cfg = load_config(FinetuneConfig, resolve_path(entry.config),
                              [*self.cfg.finetune.set, *entry.set])
            cfg.name = name
            cfg.cv.n_folds, cfg.cv.test_fraction, cfg.cv.seed = (
                self.cfg.split.n_folds, self.cfg.split.test_fraction, self.cfg.split.seed)
            models[name] = cfg
        late = [n for n, c in models.items() if family_of(c) is ModelFamily.LATE]
        ordered = {n: c for n, c in models.items() if n not in late}
        ordered.update({n: models[n] for n in late})
        return ordered

    # -- stages ----------------------------------------------------------------------------
    def stage_cohort(self) -> None:
        d = self.cfg.data
        if d.source == "synth":
            settings = {"source": "synth", **to_dict(d.synth)}
            settings.pop("workers")
            if settings.get("format") == "nifti":   # the default: keys of earlier runs stay valid
                settings.pop("format")
        else:
            settings = {"source": d.source}
            for name in COHORTS:
                src = getattr(d, name)
                if d.source == "molab" and src.root:
                    settings[name] = {"root": str(Path(src.root).resolve()),
                                      "labels": file_fingerprint(resolve_path(src.labels)),
                                      "clinical": (file_fingerprint(resolve_path(src.clinical))
                                                   if src.clinical else None),
                                      "center": src.center, "columns": src.columns}
                elif src.manifest:
                    settings[name] = _files_fingerprint(resolve_path(src.manifest))
        key = stage_key(settings)

        def work(stale: bool):
            if d.source == "synth":
                from ..data.synth import make_synthetic_cohort

                self.echo(f"  writing the SYNTHETIC {d.synth.preset} cohort (seed {d.synth.seed})")
                info = make_synthetic_cohort(self.out / "cohort", preset=d.synth.preset,
                                             seed=d.synth.seed, pool_size=d.synth.pool_size,
                                             workers=d.synth.workers, separation=d.synth.separation,
                                             fmt=d.synth.format)
                return {"synthetic": True, "counts": info["counts"]}
            folder = self.out / "cohort" / "manifests"
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            counts = {}
            for name in COHORTS:
                src = getattr(d, name)
                if d.source == "molab" and src.root:
                    from ..data.molab import import_molab, import_warnings

                    df = import_molab(resolve_path(src.root), resolve_path(src.labels),
                                      resolve_path(src.clinical) if src.clinical else None,
                                      center=src.center, out=folder / f"{name}.molab.csv",
                                      column_map=str(resolve_path(src.columns)) if src.columns else None)
                    for line in import_warnings(df):
                        self.echo(f"  warning: {name}: {line}")
                    df = _absolute_paths(folder / f"{name}.molab.csv", self.manifest(name))
                    (folder / f"{name}.molab.csv").unlink()
                elif src.manifest:
                    df = _absolute_paths(resolve_path(src.manifest), self.manifest(name))
                else:
                    continue
                counts[name] = len(df)
            return {"synthetic": False, "counts": counts}

        self.book.run("cohort", key, work)
        self.keys["cohort"] = self.book.token("cohort")

    def _clinical_spec(self) -> dict:
        spec = {}
        for cfg in self.finetune_models().values():
            if family_of(cfg).uses_clinical:
                spec.update(dict(cfg.clinical))
        return spec

    @property
    def clinical_audit_path(self) -> Path:
        return self.out / "check" / "clinical.json"

    def stage_check(self) -> None:
        from ..data.check import check_manifest
        from ..errors import DataIntegrityError

        clinical = self._clinical_spec()
        policy = self.cfg.clinical.unseen_levels
        settings = {"clinical": clinical} if policy == "impute" else {"clinical": clinical, "unseen": policy}
        key = stage_key(settings, [self.keys["cohort"]])

        def work(stale: bool):
            counts, frames = {}, {}
            for name in COHORTS:
                if not self.has(name):
                    continue
                df, problems = check_manifest(self.manifest(name),
                                              clinical=clinical if name != "unlabeled" else None)
                if problems:
                    raise DataIntegrityError(str(self.manifest(name)), problems)
                counts[name] = len(df)
                if name != "unlabeled":
                    frames[name] = df[df["label"].notna()]
                self.echo(f"  {name}: {len(df)} cases OK")
            return {"cases": counts, "clinical": self._audit_clinical(frames, clinical, policy)}

        self.book.run("check-data", key, work)
        self.keys["check-data"] = self.book.token("check-data")

    def _audit_clinical(self, frames: dict, clinical: dict, policy: str) -> dict | None:
        """Unseen levels (refused under ``error``) and missing values, listed and written to
        check/clinical.json, which compare copies into stats.json for the report."""
        from ..data.clinical_audit import apply_unseen_policy, audit_lines, clinical_audit

        if not clinical:
            return None
        if "external" in frames:
            apply_unseen_policy(frames["internal"], frames["external"], clinical, policy,
                                source=str(self.manifest("external")))
        audit = clinical_audit(frames, clinical, policy)
        for line in audit_lines(audit):
            self.echo(f"  {line}")
        atomic.write_json(self.clinical_audit_path, audit)
        return {name: {"imputed": sum(len(v) for v in info["imputed"].values()),
                       "unseen_levels": {c: sorted(levels) for c, levels in info["unseen_levels"].items()}}
                for name, info in audit["cohorts"].items()}

    def stage_preprocess(self) -> None:
        from ..data.preprocess import PreprocessConfig, preprocess

        cfg = load_config(PreprocessConfig, resolve_path(self.cfg.preprocess.config), self.cfg.preprocess.set)
        settings = to_dict(cfg)
        if settings.get("lesion_view") is None:   # the default: keys of earlier runs stay valid
            settings.pop("lesion_view", None)
        key = stage_key(settings, [self.keys["cohort"]])

        def work(stale: bool):
            detail = {}
            for name in COHORTS:
                if not self.has(name):
                    continue
                meta = preprocess(self.manifest(name), self.cache(name), cfg, progress=self.progress)
                detail[name] = {"n": meta["n"], "crop_size": meta["crop_size"]}
                self.echo(f"  {name}: {meta['n']} crops {meta['crop_size']} at {meta['spacing']} mm")
            return detail

        self.book.run("preprocess", key, work)
        self.keys["preprocess"] = self.book.token("preprocess")

    def stage_split(self) -> None:
        from ..data.manifest import load_manifest
        from ..data.split import make_split, save_split

        s = self.cfg.split
        key = stage_key(to_dict(s), [self.keys["cohort"]])

        def work(stale: bool):
            internal = load_manifest(self.manifest("internal"))
            split = make_split(internal, test_fraction=s.test_fraction, n_folds=s.n_folds, seed=s.seed,
                               keys=("split.test_fraction", "split.n_folds"))
            save_split(split, self.split_path)
            counts = split.groupby("part")["patient_id"].nunique().to_dict()
            self.echo(f"  patients per part {counts}, {s.n_folds} folds")
            return {"patients": {k: int(v) for k, v in counts.items()}}

        self.book.run("split", key, work)
        self.keys["split"] = self.book.token("split")

    def external_centers(self) -> list[str]:
        if not self.has("external"):
            return []
        df = pd.read_csv(self.manifest("external"), dtype=str, keep_default_na=False)
        return sorted(set(df["center"]))

    def pretrain_config_file(self):
        """The pretraining YAML with the study's overrides, before the paths are filled in."""
        from ..pretrain.methods import load_pretrain_config

        p = self.cfg.pretrain
        return load_pretrain_config(resolve_path(p.config), p.set)

    def pretrain_config(self):
        p = self.cfg.pretrain
        cfg = self.pretrain_config_file()
        cfg.data.pool_cache = str(self.cache("unlabeled"))
        if p.exclude_external_center:
            cfg.data.exclude_centers = sorted(set(cfg.data.exclude_centers) | set(self.external_centers()))
        # this run's internal cache and split wherever the stage YAML names one (dino_vitb.yaml:
        # paper_run/..., another run folder) or the run uses them; the split also keeps the
        # internal-test patients out of the pool
        uses_internal = cfg.data.include_internal_train or cfg.monitor.every_n_epochs > 0
        if uses_internal or cfg.data.internal_cache:
            cfg.data.internal_cache = str(self.cache("internal"))
        if uses_internal or cfg.data.split:
            cfg.data.split = str(self.split_path)
        if p.max_steps is not None:
            cfg.trainer.max_steps = p.max_steps
        return cfg

    def _pretrain_settings(self, cfg) -> dict:
        d = to_dict(cfg)
        for k in ("pool_cache", "internal_cache", "split", "num_workers", "pin_memory"):
            d["data"].pop(k, None)
        return d

    def stage_pretrain(self) -> None:
        p = self.cfg.pretrain
        run_dir = self.out / "pretrain"
        if not p.enabled:
            if p.encoder:
                self.keys["pretrain"] = stage_key(file_fingerprint(
                    Path(resolve_path(p.encoder)) / "encoder.json"
                    if Path(resolve_path(p.encoder), "encoder.json").is_file() else resolve_path(p.encoder)))
            else:
                self.keys["pretrain"] = stage_key("none")
            return
        if not self.has("unlabeled"):
            raise ConfigError("pretrain.enabled is true but the study has no unlabeled pool "
                              "(data.unlabeled.manifest); give one or set pretrain.enabled=false "
                              "with pretrain.encoder=PATH")
        cfg = self.pretrain_config()
        upstream = [self.keys["preprocess"]] + ([self.keys["split"]] if cfg.data.split else [])
        key = stage_key(self._pretrain_settings(cfg), upstream)

        def work(stale: bool):
            from ..pretrain.run import CONFIG_NAME, LAST_CHECKPOINT, run_pretraining

            if stale and run_dir.exists():
                self.echo(f"  settings changed: replacing {run_dir}")
                shutil.rmtree(run_dir)
            resume = None
            if (run_dir / CONFIG_NAME).is_file():
                if (run_dir / LAST_CHECKPOINT).is_file() and not (run_dir / "encoder.json").is_file():
                    resume = run_dir
                    self.echo(f"  resuming from {run_dir / LAST_CHECKPOINT}")
                elif not (run_dir / "encoder.json").is_file():
                    shutil.rmtree(run_dir)   # started, no checkpoint yet: start again
            if not (run_dir / "encoder.json").is_file():
                devices: int | str = p.devices if p.devices == "auto" else int(p.devices)
                run_pretraining(cfg if resume is None else None, out=None if resume else run_dir,
                                devices=devices, accelerator=p.accelerator, resume=resume,
                                num_nodes=p.num_nodes)
            if not (run_dir / "encoder.json").is_file():
                raise InputError(f"pretraining in {run_dir} stopped before exporting the encoder; "
                                 "run the study again to resume it")
            import json

            summary = json.loads((run_dir / "summary.json").read_text())
            return {k: summary.get(k) for k in ("method", "architecture", "global_step", "epochs")}

        self.book.run("pretrain", key, work)
        self.keys["pretrain"] = self.book.token("pretrain")

    def encoder_dir(self) -> Path | None:
        p = self.cfg.pretrain
        if p.enabled:
            return self.out / "pretrain"
        return resolve_path(p.encoder) if p.encoder else None

    def _finetune_settings(self, cfg) -> dict:
        from ..finetune.config import result_settings

        d = result_settings(cfg)
        # paths the study fills in; what they hold enters the key through the upstream stages
        for k in ("internal_manifest", "external_manifest", "internal_cache", "external_cache", "split"):
            d["data"].pop(k, None)
        d["model"].pop("pretrained", None)
        d["fusion"].pop("image_run", None)
        return d

    def fill_finetune_paths(self, cfg, manifest: Path | None = None, split: Path | None = None):
        cfg = copy.deepcopy(cfg)
        cfg.data.internal_manifest = str(manifest or self.manifest("internal"))
        cfg.data.internal_cache = str(self.cache("internal"))
        if self.has("external"):
            cfg.data.external_manifest = str(self.manifest("external"))
            cfg.data.external_cache = str(self.cache("external"))
        else:
            cfg.data.external_manifest = cfg.data.external_cache = None
        cfg.data.split = str(split or self.split_path)
        cfg.unseen_levels = self.cfg.clinical.unseen_levels
        return cfg

    def _uses_encoder(self, cfg) -> bool:
        return family_of(cfg).uses_images and cfg.model.pretrained is not None

    def stage_finetune(self) -> dict[str, Path]:
        """Every fine-tuned model; returns {model: predictions.csv}."""
        from ..finetune.run import run_finetune

        models = self.finetune_models()
        self._warn_unlike_baselines(models)
        image_model = next((n for n, c in models.items() if family_of(c) is ModelFamily.IMAGE
                            and c.model.pretrained is not None), None)
        outputs = {}
        for name, base in models.items():
            cfg = self.fill_finetune_paths(base)
            upstream = [self.keys["preprocess"], self.keys["split"]]
            encoder = None
            if self._uses_encoder(cfg):
                encoder = self.encoder_dir()
                if encoder is None:
                    raise ConfigError(f"finetune.models.{name} needs an encoder: enable pretrain or "
                                      "set pretrain.encoder")
                upstream.append(self.keys["pretrain"])
            if family_of(cfg) is ModelFamily.LATE and cfg.fusion.image_run is None and image_model:
                cfg.fusion.image_run = str(self.out / "finetune" / image_model)
                upstream.append(self.keys[f"finetune:{image_model}"])
            key = stage_key(self._finetune_settings(cfg), upstream)
            run_dir = self.out / "finetune" / name

            def work(stale: bool, cfg=cfg, run_dir=run_dir, encoder=encoder):
                if stale and run_dir.exists():
                    self.echo(f"  settings changed: replacing {run_dir}")
                    shutil.rmtree(run_dir)
                summary = run_finetune(cfg, run_dir, encoder_dir=encoder, echo=lambda m: self.echo("  " + m))
                if not summary.get("complete"):
                    raise InputError(f"fine-tuning {run_dir} did not complete every fold")
                return {"auc": {c: v["auc"] for c, v in summary["cohorts"].items()}}

            detail = self.book.run(f"finetune:{name}", key, work)
            self.keys[f"finetune:{name}"] = self.book.token(f"finetune:{name}")
            if detail and detail.get("auc"):
                self.echo("  AUC " + ", ".join(f"{c} {a:.3f}" for c, a in detail["auc"].items()
                                               if a is not None))
            self.stage_of[name] = f"finetune:{name}"
            outputs[name] = run_dir / "predictions.csv"
        return outputs

    def _warn_unlike_baselines(self, models: dict) -> None:
        """A ViT trained from scratch is the baseline of the pretrained one only if nothing but
        the initialisation differs; a fixed sin-cos vs a learned positional embedding alone moved
        the demo's out-of-fold AUC by ~0.045 (benchmarks/RESULTS.md)."""
        from ..models.registry import model_setting

        if not self.cfg.pretrain.enabled:
            return
        encoder = self.pretrain_config_file().model
        encoder_pos = model_setting(encoder.name, "pos_embed_type", encoder.pos_embed_type)
        for name, cfg in models.items():
            if family_of(cfg).uses_images and cfg.model.pretrained is None:
                own = model_setting(cfg.model.arch, "pos_embed_type", cfg.model.pos_embed_type)
                if own != encoder_pos:
                    self.echo(f"  warning: {name} (no pretraining) has a {own!r} positional "
                              f"embedding, the pretrained encoder a {encoder_pos!r} one: the "
                              f"comparison mixes the two; set model.pos_embed_type={encoder_pos}")

    def stage_baselines(self) -> dict[str, Path]:
        """Every enabled baseline (:mod:`rn_classifier.baselines.registry`), each a stage of its
        own named after it, in ``RUN/<name>/``; returns {model: predictions.csv}."""
        from ..baselines.registry import BaselineRun, get_baseline, run_baseline

        outputs = {}
        for name, (_, entry) in enabled_baselines(self.cfg).items():
            baseline = get_baseline(name)
            config, overrides = (resolve_path(entry.config) if entry.config else None), list(entry.set)
            key = stage_key(baseline.settings(config, overrides), [self.keys["cohort"], self.keys["split"]])
            run = BaselineRun(config, overrides, self.manifest("internal"),
                              self.manifest("external") if self.has("external") else None,
                              self.split_path, self.out / name, self.progress)

            def work(stale: bool, name=name, run=run):
                summary = run_baseline(name, run)
                return {"auc": summary.get("auc"), "skipped": summary.get("skipped", 0)}

            detail = self.book.run(name, key, work)
            self.keys[name] = self.book.token(name)
            if detail and detail.get("auc"):
                self.echo("  AUC " + ", ".join(f"{c} {a:.3f}" for c, a in detail["auc"].items() if a is not None))
            model = baseline.model_name(config, overrides)
            self.stage_of[model] = name
            outputs[model] = run.out / "predictions.csv"
        return outputs

    def stage_label_efficiency(self, outputs: dict[str, Path]) -> None:
        le = self.cfg.label_efficiency
        if not le.fractions:
            return
        from .label_efficiency import LabelEfficiencyInputs, run_label_efficiency

        models = self.finetune_models()
        chosen = {m: models[m] for m in le.models}
        upstream = [self.keys[f"finetune:{m}"] for m in chosen]
        if any(self._uses_encoder(c) for c in chosen.values()):
            upstream.append(self.keys["pretrain"])
        settings = {"fractions": sorted(le.fractions), "models": list(le.models), "seed": le.seed,
                    "n_boot": le.n_boot, "conf_level": self.cfg.compare.conf_level}
        key = stage_key(settings, upstream)

        inputs = LabelEfficiencyInputs(
            out=self.out, internal_manifest=self.manifest("internal"), split=self.split_path,
            settings=le, compare=self.cfg.compare,
            fill_paths=lambda cfg, manifest, split: self.fill_finetune_paths(cfg, manifest=manifest, split=split),
            encoder=lambda cfg: self.encoder_dir() if self._uses_encoder(cfg) else None, echo=self.echo)

        def work(stale: bool):
            return run_label_efficiency(inputs, chosen, outputs, stale=stale)

        self.book.run("label_efficiency", key, work)
        self.keys["label_efficiency"] = self.book.token("label_efficiency")

    def stage_contour(self, predictions: dict[str, Path]) -> Path | None:
        """Every image model's internal-test and external predictions under alternative contours."""
        from ..data.contour_variants import ContourVariantConfig
        from ..data.manifest import load_manifest
        from ..data.split import load_split
        from ..predict.model import load_model
        from .contour import CONTOUR_FILE, predict_contours

        c = self.cfg.contour
        if not c.enabled:
            return None
        variants = ContourVariantConfig(**{k: v for k, v in to_dict(c).items() if k != "enabled"}).check()
        images = [m for m, cfg in self.finetune_models().items() if family_of(cfg).uses_images]
        if not images:
            return None
        upstream = [self.keys[f"finetune:{m}"] for m in images] + [self.keys["split"]]
        key = stage_key(to_dict(c), upstream)
        out = self.out / "contour" / CONTOUR_FILE

        def work(stale: bool):
            runs = {m: load_model(predictions[m].parent) for m in images}
            internal = load_manifest(self.manifest("internal"))
            split = load_split(self.split_path)
            test_ids = set(split.loc[split["part"] == "internal_test", "case_id"])
            cohorts = {"internal_test": (internal[internal["case_id"].isin(test_ids)],
                                         self.manifest("internal").parent)}
            if self.has("external"):
                cohorts["external"] = (load_manifest(self.manifest("external")),
                                       self.manifest("external").parent)
            rows = predict_contours(runs, cohorts, variants, echo=self.echo)
            atomic.write_csv(out, rows)
            return {"rows": len(rows), "variants": sorted(set(rows["variant"]))}

        self.book.run("contour", key, work)
        self.keys["contour"] = self.book.token("contour")
        return out

    def stage_compare(self, predictions: dict[str, Path], contour: Path | None = None) -> dict:
        from ..finetune.bundle import record_thresholds
        from ..stats.compare import CompareSettings, run_compare

        c = self.cfg.compare
        if c.reference not in predictions:
            raise ConfigError(f"compare.reference {c.reference!r} is not one of the study's models "
                              f"{sorted(predictions)}")
        settings = CompareSettings(n_boot=c.n_boot, seed=c.seed, conf_level=c.conf_level,
                                   n_bins=c.n_bins, recalibrate=c.recalibrate)
        upstream = [self.keys[self.stage_of[m]] for m in predictions]
        if contour is not None:
            upstream.append(self.keys["contour"])
        audit = self.clinical_audit_path
        if audit.is_file():
            upstream.append(self.keys["check-data"])
        key = stage_key({**to_dict(c), "models": sorted(predictions)}, upstream)
        out = self.out / "compare" / "stats.json"

        def work(stale: bool):
            import json

            out.parent.mkdir(parents=True, exist_ok=True)
            run_compare([predictions[m] for m in predictions], out, c.reference, settings,
                        clinical_data=json.loads(audit.read_text()) if audit.is_file() else None,
                        contour=contour)
            # the bundles decide with the threshold compare froze (the same Youden rule on the same
            # oof predictions as the one they were written with)
            record_thresholds(out, [path.parent for path in predictions.values()])
            return {"stats": str(out.relative_to(self.out))}

        self.book.run("compare", key, work)
        self.keys["compare"] = self.book.token("compare")
        import json

        return json.loads(out.read_text())

    def stage_shift(self, predictions: dict[str, Path]) -> None:
        """Image statistics and score distributions of each cohort against internal oof."""
        from ..finetune.bundle import BUNDLE_DIR
        from ..models.bundle import META_NAME
        from ..shift.run import record_case_reference, run_shift_check

        s = self.cfg.shift
        if not s.enabled:
            return
        upstream = [self.keys["preprocess"], self.keys["compare"]]
        key = stage_key(to_dict(s), upstream)
        caches = [self.cache(c) for c in ("internal", "external") if self.has(c)]

        def work(stale: bool):
            result = run_shift_check(caches, [predictions[m] for m in predictions], self.out / "shift",
                                     level=s.level, n_draws=s.n_draws, seed=s.seed)
            flagged = {c: v["flagged"] for c, v in result["image"]["cohorts"].items()}
            self.echo(f"  image statistics outside the internal range: {flagged}")
            # as compare's threshold: the bundles check a new case with the study's reference, so a
            # bundle shipped alone still flags an image outside the internal range
            bundles = [p.parent / BUNDLE_DIR for p in predictions.values()
                       if (p.parent / BUNDLE_DIR / META_NAME).is_file()]
            recorded = record_case_reference(result, bundles)
            return {"image_flagged": flagged, "reference_in_bundles": sorted(b.parent.name for b in recorded)}

        self.book.run("shift", key, work)
        self.keys["shift"] = self.book.token("shift")

    def stage_report(self) -> Path | None:
        if not self.cfg.report.enabled:
            return None
        try:
            from ..report import build_report
        except ImportError as exc:
            build_report = None
            missing = str(exc)
        key = stage_key({"available": build_report is not None,
                         "pseudonymize": self.cfg.report.pseudonymize}, sorted(self.keys.values()))

        def work(stale: bool):
            if build_report is None:
                self.echo(f"  the report module is missing (rn_classifier.report: {missing}); "
                          "no report.html this time — the study runs it when it is installed")
                return {"report": None}
            import json

            path = build_report(self.out, pseudonymize=self.cfg.report.pseudonymize)
            missing = json.loads(Path(path).with_name("report.json").read_text()).get("missing_sections", [])
            for section in missing:
                self.echo(f"  warning: the report lacks {section}")
            return {"report": str(Path(path)), "missing_sections": missing}

        detail = self.book.run("report", key, work) or {}
        return Path(detail["report"]) if detail.get("report") else None

    def model_names(self) -> list[str]:
        from ..baselines.registry import get_baseline

        names = list(self.finetune_models())
        for name, (_, entry) in enabled_baselines(self.cfg).items():
            config = resolve_path(entry.config) if entry.config else None
            names.append(get_baseline(name).model_name(config, list(entry.set)))
        return names

    def check_reference(self) -> None:
        names = self.model_names()
        if self.cfg.compare.reference not in names:
            raise ConfigError(f"compare.reference {self.cfg.compare.reference!r} is not one of the "
                              f"study's models {names}")

    # -- the whole study -------------------------------------------------------------------
    def write_header(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, self.out / "study.yaml")

    def write_provenance(self) -> None:
        from ..provenance import run_provenance

        detail = self.book.previous("cohort") or {}
        synthetic = bool((detail.get("detail") or {}).get("synthetic", self.cfg.data.source == "synth"))
        atomic.write_json(self.out / "provenance.json", {**run_provenance(), "study": self.cfg.name,
                                                         "synthetic": synthetic})

    def run(self) -> dict:
        from ..pretrain.run import is_rank_zero

        if not is_rank_zero():
            return self._run_as_worker_rank()
        self.write_header()
        self.check_reference()
        self.book = StageBook(self.out, echo=self.echo)
        self.stage_cohort()
        self.write_provenance()
        self.stage_check()
        self.stage_preprocess()
        self.stage_split()
        self.stage_pretrain()
        predictions = self.stage_finetune()
        predictions.update(self.stage_baselines())
        self.stage_label_efficiency(predictions)
        contour = self.stage_contour(predictions)
        stats = self.stage_compare(predictions, contour)
        self.stage_shift(predictions)
        report = self.stage_report()
        return {"run": self.out, "stats": stats, "report": report, "ran": self.book.ran,
                "skipped": self.book.skipped, "timings": self.book.timings()}

    def _run_as_worker_rank(self) -> dict:
        """A DDP worker rank re-running the command (Lightning's launcher): join pretraining only."""
        from ..pretrain.run import LAST_CHECKPOINT, run_pretraining

        p = self.cfg.pretrain
        run_dir = self.out / "pretrain"
        devices: int | str = p.devices if p.devices == "auto" else int(p.devices)
        if (run_dir / LAST_CHECKPOINT).is_file() and not (run_dir / "encoder.json").is_file():
            run_pretraining(None, resume=run_dir, devices=devices, accelerator=p.accelerator,
                            num_nodes=p.num_nodes)
        else:
            run_pretraining(self.pretrain_config(), out=run_dir, devices=devices,
                            accelerator=p.accelerator, num_nodes=p.num_nodes)
        return {"run": self.out, "worker_rank": True}


def run_study(cfg: StudyConfig, out: str | os.PathLike, echo: Callable[[str], None] = print,
              progress: bool = False) -> dict:
    """Run (or resume) the study of ``cfg`` in ``out``; returns ``{"run", "stats", "report",
    "ran", "skipped", "timings"}`` (stage names that did work / were up to date; seconds per stage)."""
    return Study(cfg, out, echo=echo, progress=progress).run()

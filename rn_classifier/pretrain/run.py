"""``run_pretraining``: the one function the CLI, ``pretrain/train.py`` (torchrun) and SLURM call.

A run folder (``RUN_DIR``) holds everything a run made and everything needed to resume it:

==============================  =============================================================
``config.yaml``                 the resolved config (a resumed run reads it back)
``provenance.json``             git SHA, package versions, date, platform; one entry per resume
``pretrain_samples.csv``        every sub-volume pretraining may see (source, case, patient, centre)
``checkpoints/last.ckpt``       the newest checkpoint (every ``trainer.checkpoint_every_n_steps``
                                steps and at the end); ``step*.ckpt`` the newest few before it
``logs/tensorboard``, ``logs/csv/metrics.csv``  loss, schedules, throughput, monitor AUC
``encoder.safetensors`` + ``encoder.json``      the exported encoder (seam 3): DINO teacher
                                backbone / MAE encoder, crop size, spacing, normalisation
``summary.json``                steps, epochs, devices, sub-volume counts, final loss, throughput
``audit/rank<r>.json``          with ``trainer.record_samples``: what each rank trained on
==============================  =============================================================

Every bad input (config, caches, split, resume folder) is an ``InputError`` raised before a
model is built or a file is written. On several GPUs Lightning's DDP runs one process per GPU
(it launches them itself, or joins those started by ``torchrun`` / SLURM); precision is the
faster one for the method on the device (:func:`fastest_precision`: bf16-mixed on GPU, on AMX CPUs
for DINO; fp32 otherwise) unless ``trainer.precision`` says otherwise.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import atomic
from ..config import save_config, to_dict
from ..errors import InputError
from .config import PretrainConfig
from .methods import check_config, encoder_crop_size, get_method, load_pretrain_config, method_section

CONFIG_NAME = "config.yaml"
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


def is_rank_zero() -> bool:
    """Rank 0 of a (possibly not yet started) distributed job: Lightning reads the rank from the
    launcher's environment (torchrun, SLURM, its own DDP launcher) when it is imported."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return rank_zero_only.rank == 0


def _config_differences(a: PretrainConfig, b: PretrainConfig) -> list[str]:
    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    fa, fb = flat(to_dict(a)), flat(to_dict(b))
    return [f"{k}: {fa.get(k)!r} → {fb.get(k)!r}" for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def resolve_run(cfg: PretrainConfig | None, out: str | os.PathLike | None, max_steps: int | None,
                resume: str | os.PathLike | None) -> tuple[PretrainConfig, Path, Path | None]:
    """``(config, run folder, checkpoint to resume from or None)``; checks the folder first."""
    if resume is not None:
        run = Path(resume)
        ckpt = run / LAST_CHECKPOINT
        if not (run / CONFIG_NAME).is_file() or not ckpt.is_file():
            raise InputError(f"--resume {run}: this folder holds no pretraining run to resume "
                             f"(expected {CONFIG_NAME} and {LAST_CHECKPOINT} written by "
                             "`rn-classifier pretrain`)")
        if out is not None and Path(out).resolve() != run.resolve():
            raise InputError(f"--resume {run} continues in its own folder; drop --out {out}")
        saved = load_pretrain_config(run / CONFIG_NAME)
        if is_rank_zero():  # a checkpoint the killed run was writing: never complete, never used
            atomic.remove_leftovers(ckpt.parent)
        if max_steps is not None and max_steps != saved.trainer.max_steps:
            raise InputError(f"--max-steps {max_steps} differs from the resumed run's trainer.max_steps "
                             f"({saved.trainer.max_steps}); a resumed run keeps its schedule")
        if cfg is not None:
            diff = _config_differences(saved, cfg)
            if diff:
                raise InputError(f"--resume {run}: a resumed run keeps the config it started with "
                                 f"({run / CONFIG_NAME}); these settings differ: {'; '.join(diff)}")
        return saved, run, ckpt
    if cfg is None:
        raise InputError("a config is needed to start a pretraining run (--config FILE)")
    if max_steps is not None:
        cfg.trainer.max_steps = int(max_steps)
    run = Path(out) if out is not None else Path("runs") / cfg.name
    if is_rank_zero() and (run / CONFIG_NAME).exists():
        raise InputError(f"{run} already holds a pretraining run; continue it with --resume {run} "
                         "or choose another --out")
    return cfg, run, None


def _precision(cfg: PretrainConfig, accelerator: str) -> str:
    if cfg.trainer.precision != "auto":
        return cfg.trainer.precision
    import torch

    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return fastest_precision(on_gpu, get_method(cfg.method).bf16_on_cpu)


def fastest_precision(on_gpu: bool, bf16_on_cpu: bool = True) -> str:
    """The faster of bf16 mixed precision and fp32 for a step on this device; both keep fp32
    master weights (bf16-mixed is autocast).

    GPU: bf16-mixed where the GPU supports bf16, else fp32. CPU: bf16-mixed on a CPU with AMX
    tiles (Sapphire Rapids and later) for a method whose step ``benchmarks/pretrain_throughput.py``
    measured faster in bf16 (``SSLMethod.bf16_on_cpu``), else fp32: without AMX, or for small
    matmuls, the casts cost more than bf16 saves.
    """
    import torch

    if on_gpu:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return "bf16-mixed" if amx and bf16_on_cpu else "32-true"


@dataclass
class RunInputs:
    """What a run trains on, built (and checked) before the trainer: the data, where views are
    made, the optional label-efficiency monitor, the pool cache's meta."""

    datamodule: object
    device_views: object | None
    augment_on_device: bool
    monitor: object | None
    pool_meta: dict


def prepare_inputs(cfg: PretrainConfig, accelerator: str) -> RunInputs:
    """The data module with the method's view transform (in the loader, or a batched one on the
    device: ``data.augment_on``), and the monitor; every cache and split is opened here."""
    import torch
    from lightning.pytorch.utilities import rank_zero_info

    from ..data.cache import CropCache
    from .augment import RawSubVolume
    from .datamodule import PretrainDataModule, labelled_training_cases
    from .monitor import LabelEfficiencyMonitor

    method = get_method(cfg.method)
    section = method_section(cfg)
    on_gpu = accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available())
    on_device = method.device_views is not None and (
        cfg.data.augment_on == "device" or (cfg.data.augment_on == "auto" and on_gpu))
    pool = CropCache(cfg.data.pool_cache)
    if on_device:
        transform, device_views = RawSubVolume(pool.crop_size), method.device_views(section, cfg.augment)
    else:
        transform, device_views = method.loader_views(section, cfg.augment), None
    datamodule = PretrainDataModule(cfg.data, transform, seed=cfg.trainer.seed, reads_mask=method.reads_mask)
    monitor = None
    if cfg.monitor.every_n_epochs > 0 and not cfg.data.internal_cache and is_rank_zero():
        rank_zero_info("label-efficiency monitor off: it needs data.internal_cache and data.split")
    if cfg.monitor.every_n_epochs > 0 and cfg.data.internal_cache:
        monitor = LabelEfficiencyMonitor(labelled_training_cases(cfg.data), encoder_crop_size(cfg),
                                         cfg.monitor.every_n_epochs, cfg.monitor.method,
                                         cfg.monitor.k, cfg.monitor.batch_size, cfg.monitor.pool)
    return RunInputs(datamodule, device_views, on_device, monitor, pool.meta)


def build_trainer(cfg: PretrainConfig, run: Path, resuming: bool, accelerator: str, devices: int | str,
                  num_nodes: int, callbacks: Sequence):
    """The Lightning trainer: DDP when several processes, periodic checkpoints, TensorBoard +
    CSV logs, weights-only checkpoint loading. Its step budget is set by :func:`plan_steps`."""
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
    from lightning.pytorch.strategies import DDPStrategy

    from ..checkpoints import WeightsOnlyCheckpointIO

    if accelerator != "cpu" and torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")  # TF32 for the fp32 parts on GPU
    n_devices = devices if isinstance(devices, int) else None
    distributed = (n_devices or 1) > 1 or num_nodes > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1
    checkpointing = ModelCheckpoint(dirpath=run / "checkpoints", filename="step{step:07d}",
                                    auto_insert_metric_name=False, monitor="step", mode="max",
                                    save_top_k=max(cfg.trainer.keep_checkpoints, 1), save_last=True,
                                    every_n_train_steps=cfg.trainer.checkpoint_every_n_steps)
    # Lightning internals that warn on every run with this torch version, and the expected
    # notices of a resume (its log and checkpoint folders are not empty): not the user's concern.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    if resuming:
        warnings.filterwarnings("ignore", message=r"(Experiment logs|Checkpoint) directory .* exists and is not empty")
    return pl.Trainer(
        accelerator=accelerator, devices=devices, num_nodes=num_nodes,
        strategy=DDPStrategy(find_unused_parameters=False) if distributed else "auto",
        precision=_precision(cfg, accelerator), max_steps=-1, max_epochs=1,  # set by plan_steps
        gradient_clip_val=cfg.optim.clip_grad or None, gradient_clip_algorithm="norm",
        deterministic=cfg.trainer.deterministic, use_distributed_sampler=False,
        log_every_n_steps=cfg.trainer.log_every_n_steps, callbacks=[checkpointing, *callbacks],
        logger=[TensorBoardLogger(run, name="logs", version="tensorboard"),
                CSVLogger(run, name="logs", version="csv")],
        plugins=[WeightsOnlyCheckpointIO()], default_root_dir=run, num_sanity_val_steps=0,
        enable_model_summary=is_rank_zero())


def plan_steps(trainer, cfg: PretrainConfig, n_subvolumes: int):
    """Steps per epoch and in all (from the world size, known once the trainer exists), set on
    the trainer; returns ``(schedules, steps per epoch)``: the per-step schedules are the
    learning rate scaled by the global batch, the weight decay, and the method's own (DINO's
    teacher momentum and temperature)."""
    from .datamodule import epochs_for, planned_steps
    from .schedules import build_schedules

    steps_per_epoch, total_steps = planned_steps(n_subvolumes, cfg.data.batch_size, trainer.world_size,
                                                 cfg.trainer.epochs, cfg.trainer.max_steps)
    trainer.fit_loop.epoch_loop.max_steps = total_steps
    trainer.fit_loop.max_epochs = epochs_for(total_steps, steps_per_epoch)
    global_batch = cfg.data.batch_size * trainer.world_size
    schedules = build_schedules(total_steps=total_steps, steps_per_epoch=steps_per_epoch,
                                peak_lr=cfg.optim.lr * global_batch / 256, min_lr=cfg.optim.min_lr,
                                warmup_epochs=cfg.optim.warmup_epochs, weight_decay=cfg.optim.weight_decay,
                                weight_decay_end=cfg.optim.weight_decay_end,
                                **get_method(cfg.method).schedules(method_section(cfg)))
    return schedules, steps_per_epoch


def write_run_header(cfg: PretrainConfig, run: Path, resuming: bool, samples) -> None:
    """Rank 0: the config, the sub-volume table and the provenance (one entry per resume)."""
    import json

    from ..provenance import run_provenance

    provenance = run_provenance()
    if not resuming:
        save_config(cfg, run / CONFIG_NAME)
        atomic.write_csv(run / "pretrain_samples.csv", samples)
        atomic.write_json(run / "provenance.json", {**provenance, "resumes": []})
        return
    previous = json.loads((run / "provenance.json").read_text()) if (run / "provenance.json").is_file() else {}
    previous.setdefault("resumes", []).append(provenance)
    atomic.write_json(run / "provenance.json", previous)


def export_and_summarise(trainer, module, cfg: PretrainConfig, run: Path, inputs: RunInputs,
                         steps_per_epoch: int, wall: float) -> None:
    """Rank 0, after training: the encoder export (seam 3) and ``summary.json``."""
    from ..models.export import save_encoder

    crop = encoder_crop_size(cfg)
    normalisation = inputs.pool_meta.get("normalisation") or {}
    save_encoder(module.export_encoder(), run, arch=cfg.model.name, crop_size=[crop] * 3,
                 spacing=[float(s) for s in inputs.pool_meta["spacing"]],
                 normalisation=normalisation if isinstance(normalisation, dict) else {"method": normalisation},
                 config=to_dict(cfg))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    steps_here = trainer.global_step - module.session_start_step
    global_batch = module.global_batch_size
    datamodule, monitor = inputs.datamodule, inputs.monitor
    atomic.write_json(run / "summary.json", {
        "method": cfg.method, "architecture": cfg.model.name, "global_step": trainer.global_step,
        "planned_steps": module.schedules.total_steps, "epochs": trainer.current_epoch,
        "steps_per_epoch": steps_per_epoch,
        "world_size": trainer.world_size, "global_batch_size": global_batch,
        "precision": trainer.precision,
        "augment_on": "device" if inputs.augment_on_device else "loader",
        "subvolumes": datamodule.table["source"].value_counts().to_dict(),
        "synthetic": bool(inputs.pool_meta.get("synthetic", False)),
        "final_loss": metrics.get("train/loss"), "wall_seconds_this_session": round(wall, 2),
        "subvolumes_per_second_this_session": round(steps_here * global_batch / max(wall, 1e-9), 3),
        "monitor": [{"epoch": e, "auc": a} for e, a in (monitor.history if monitor else [])],
        "encoder": ["encoder.safetensors", "encoder.json"]})


def run_pretraining(cfg: PretrainConfig | None = None, out: str | os.PathLike | None = None,
                    devices: int | str = 1, accelerator: str = "auto", max_steps: int | None = None,
                    resume: str | os.PathLike | None = None, num_nodes: int = 1,
                    callbacks: Sequence = ()) -> Path:
    """Pretrain an encoder with the registered method ``cfg.method`` and export it; returns the
    run folder.

    Args:
        cfg: the config (:func:`rn_classifier.pretrain.methods.load_pretrain_config`); may be
            None with ``resume``, whose folder holds the config.
        out: run folder (default ``runs/<cfg.name>``); must not hold a run already.
        devices: devices per node (int, or "auto"); several → DDP.
        accelerator: "cpu", "gpu" or "auto".
        max_steps: stop after this many optimizer steps (sets ``trainer.max_steps``; schedules
            span the shortened run).
        resume: a run folder to continue from its ``checkpoints/last.ckpt``, with its config.
        num_nodes: nodes (SLURM / torchrun multi-node).
        callbacks: extra Lightning callbacks (custom monitoring, tests).
    """
    cfg, run, ckpt = resolve_run(cfg, out, max_steps, resume)
    check_config(cfg)
    if accelerator not in ("cpu", "gpu", "cuda", "auto"):
        raise InputError(f"accelerator must be one of ['cpu', 'gpu', 'auto'], got {accelerator!r}")
    accelerator = "gpu" if accelerator == "cuda" else accelerator

    import lightning.pytorch as pl

    from .audit import SampleAudit
    from .base_module import NonFiniteLossError

    inputs = prepare_inputs(cfg, accelerator)          # every input checked before anything is built
    pl.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    extra = [c for c in (inputs.monitor,) if c is not None]
    if cfg.trainer.record_samples:
        extra.append(SampleAudit(run / "audit"))
    trainer = build_trainer(cfg, run, ckpt is not None, accelerator, devices, num_nodes, [*callbacks, *extra])
    schedules, steps_per_epoch = plan_steps(trainer, cfg, len(inputs.datamodule.dataset))
    module = get_method(cfg.method).module()(cfg, schedules, cfg.data.batch_size * trainer.world_size,
                                             device_augment=inputs.device_views)
    if trainer.is_global_zero:
        write_run_header(cfg, run, ckpt is not None, inputs.datamodule.table)

    started = time.perf_counter()
    try:
        trainer.fit(module, datamodule=inputs.datamodule, ckpt_path=str(ckpt) if ckpt else None)
    except NonFiniteLossError as exc:
        table = inputs.datamodule.table
        cases = table.iloc[exc.samples][["source", "case_id"]].astype(str).agg("/".join, axis=1)
        raise NonFiniteLossError(f"{exc} Sub-volumes of this rank's batch: {', '.join(cases) or 'see other ranks'}",
                                 exc.samples) from None
    if trainer.interrupted:
        return run  # Ctrl-C / SIGTERM: the last periodic checkpoint is kept for --resume
    wall = time.perf_counter() - started
    trainer.save_checkpoint(run / LAST_CHECKPOINT, weights_only=False)
    if trainer.is_global_zero:
        export_and_summarise(trainer, module, cfg, run, inputs, steps_per_epoch, wall)
    return run

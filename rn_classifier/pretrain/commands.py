"""Pretraining commands: ``rn-classifier pretrain``, ``audit-augment`` and ``probe-encoder``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    register_pretrain(app)
    register_audit(app)
    register_probe(app)


def parse_devices(devices: str) -> int | str:
    """``--devices``: a number of devices per node, or ``auto``."""
    from ..errors import InputError

    if devices == "auto":
        return devices
    try:
        return int(devices)
    except ValueError:
        raise InputError(f"--devices must be a number or 'auto', got {devices!r}") from None


def register_pretrain(app: typer.Typer) -> None:
    @app.command("pretrain")
    def pretrain_cmd(
        config: Annotated[Optional[Path], typer.Option(help="pretraining YAML (configs/pretrain/); "
                                                        "not needed with --resume")] = None,
        set_: Annotated[Optional[list[str]], typer.Option("--set", help="override key=value, e.g. "
                                                          "data.pool_cache=PATH (repeatable)")] = None,
        out: Annotated[Optional[Path], typer.Option(help="run folder (default runs/<name>)")] = None,
        devices: Annotated[str, typer.Option(help="devices per node: a number or 'auto'")] = "1",
        accelerator: Annotated[str, typer.Option(help="cpu | gpu | auto")] = "auto",
        max_steps: Annotated[Optional[int], typer.Option(help="stop after N optimizer steps")] = None,
        resume: Annotated[Optional[Path], typer.Option(help="continue the run in this folder from "
                                                       "its last checkpoint")] = None,
        num_nodes: Annotated[int, typer.Option(help="nodes (SLURM / torchrun)")] = 1,
    ):
        """Self-supervised pretraining (a registered method: DINO, MAE, crop statistics) of the 3D ViT on the preprocess cache;
        writes RUN_DIR/encoder.safetensors + encoder.json."""
        from ..errors import InputError
        from .base_module import NonFiniteLossError
        from .methods import load_pretrain_config
        from .run import is_rank_zero, run_pretraining

        if config is None and resume is None:
            raise InputError("give --config FILE (a new run) or --resume RUN_DIR")
        if resume is not None and config is None and set_:
            raise InputError("--set cannot change a resumed run: it keeps the config in "
                             f"{resume / 'config.yaml'}")
        cfg = load_pretrain_config(config, set_ or []) if config is not None else None
        n_devices = parse_devices(devices)
        try:
            run = run_pretraining(cfg, out=out, devices=n_devices, accelerator=accelerator,
                                  max_steps=max_steps, resume=resume, num_nodes=num_nodes)
        except NonFiniteLossError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None
        if is_rank_zero() and (run / "encoder.json").is_file():
            typer.echo(f"{run}: encoder exported to {run / 'encoder.safetensors'} (+ encoder.json)")


def register_audit(app: typer.Typer) -> None:
    @app.command("audit-augment")
    def audit_augment_cmd(
        config: Annotated[Path, typer.Option(help="pretraining YAML whose augmentations are audited")],
        internal_cache: Annotated[Path, typer.Option(help="preprocess cache of the internal cohort")],
        split: Annotated[Path, typer.Option(help="split.csv (only its part == train cases are read)")],
        cohort_json: Annotated[Optional[Path], typer.Option(help="cohort.json of a SYNTHETIC cohort: "
                                                           "adds the latent-trait R²")] = None,
        pool_crop: Annotated[int, typer.Option(help="side of the pool crops the views are cut from "
                                               "(voxels; preprocess pool_crop)")] = 48,
        repeats: Annotated[int, typer.Option(help="CV shuffles averaged per AUC")] = 3,
        out: Annotated[Optional[Path], typer.Option(help="write the audit as JSON here")] = None,
    ):
        """Which lesion traits each augmentation of a pretraining config erases: crop-statistics AUC
        and latent-trait R² on the internal TRAINING cases, each augmentation alone at its strongest."""
        from .. import atomic
        from ..errors import InputError
        from .augment_audit import audit_augmentations, format_audit, view_zooms
        from .methods import load_pretrain_config

        if repeats < 1 or pool_crop < 1:
            raise InputError(f"--repeats and --pool-crop must be at least 1, got {repeats} and {pool_crop}")
        cfg = load_pretrain_config(config, [])
        dino = getattr(cfg, "dino", None)
        zooms = view_zooms(dino, pool_crop) if dino is not None else {}
        report = audit_augmentations(internal_cache, split, cfg.augment, zooms, cohort_json, repeats)
        typer.echo(format_audit(report))
        if out is not None:
            atomic.write_json(out, report)
            typer.echo(f"audit written to {out}")


def register_probe(app: typer.Typer) -> None:
    @app.command("probe-encoder")
    def probe_encoder_cmd(
        encoder: Annotated[list[Path], typer.Option(help="encoder export folder (RUN_DIR of `pretrain`); "
                                                   "repeat to compare several")],
        internal_cache: Annotated[Path, typer.Option(help="preprocess cache of the internal cohort")],
        split: Annotated[Path, typer.Option(help="split.csv (only its part == train cases are read)")],
        cohort_json: Annotated[Optional[Path], typer.Option(help="cohort.json of a SYNTHETIC cohort: "
                                                           "adds the latent-trait read-out")] = None,
        repeats: Annotated[int, typer.Option(help="CV shuffles averaged per AUC")] = 10,
        out: Annotated[Optional[Path], typer.Option(help="write the report as JSON here")] = None,
    ):
        """Frozen-feature probe of pretrained encoders on the internal TRAINING cases: logistic
        read-out AUC per pooling, against a random-init encoder and crop intensity statistics."""
        from .. import atomic
        from ..errors import InputError
        from .probe import format_report, probe_encoders

        if repeats < 1:
            raise InputError(f"--repeats must be at least 1, got {repeats}")
        report = probe_encoders(encoder, internal_cache, split, cohort_json, repeats=repeats)
        typer.echo(format_report(report))
        if out is not None:
            atomic.write_json(out, report)
            typer.echo(f"report written to {out}")

"""Fine-tuning command: ``rn-classifier finetune``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("finetune")
    def finetune_cmd(
        config: Annotated[Path, typer.Option(help="fine-tuning YAML (configs/finetune/)")],
        set_: Annotated[Optional[list[str]], typer.Option("--set", help="override key=value (repeatable)")] = None,
        out: Annotated[Optional[Path], typer.Option(help="run folder (default runs/<name>)")] = None,
        encoder: Annotated[Optional[Path], typer.Option(help="encoder export or pretraining run folder; sets model.pretrained")] = None,
        fold: Annotated[Optional[list[int]], typer.Option(help="train only this fold (repeatable; cluster array jobs)")] = None,
    ):
        """Cross-validate one model (SSL ViT, +clinical, supervised ViT, clinical-only) on the
        internal cohort; write RUN_DIR/predictions.csv (out-of-fold, internal test, external)."""
        from ..config import load_config
        from .config import FinetuneConfig
        from .run import run_finetune

        cfg = load_config(FinetuneConfig, config, set_ or [])
        run_dir = out or Path("runs") / cfg.name
        summary = run_finetune(cfg, run_dir, encoder_dir=encoder, folds=fold, echo=typer.echo)
        if not summary.get("complete"):
            return
        typer.echo(f"wrote {run_dir / 'predictions.csv'}"
                   + (" (SYNTHETIC data)" if summary.get("synthetic") else ""))
        for cohort, s in summary["cohorts"].items():
            auc = "n/a (one class)" if s["auc"] is None else f"{s['auc']:.3f}"
            typer.echo(f"  {cohort:<14} n={s['n']:<4} AUC {auc}  (quick look; statistics: compare)")

"""The radiomics baseline as a command: ``rn-classifier radiomics`` (:mod:`.radiomics_run`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("radiomics")
    def radiomics_cmd(
        config: Annotated[Path, typer.Option(help="radiomics YAML (configs/radiomics/molab.yaml, demo.yaml)")],
        manifest: Annotated[Path, typer.Option(help="internal (labelled) manifest CSV")],
        out: Annotated[Path, typer.Option(help="run folder to write")],
        external: Annotated[Optional[Path], typer.Option(help="external-cohort manifest CSV")] = None,
        split: Annotated[Optional[Path], typer.Option(help="split.csv to reuse (e.g. the fine-tuning run's); "
                                                            "default: make one and save it in the run folder")] = None,
        set_: Annotated[Optional[list[str]], typer.Option("--set", help="override key=value")] = None,
        progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    ):
        """Radiomics baseline: pyradiomics features, cross-validated sklearn pipeline, predictions.csv."""
        from .registry import BaselineRun, run_baseline

        summary = run_baseline("radiomics", BaselineRun(config, list(set_ or []), manifest, external, split,
                                                        out, progress))
        tag = "SYNTHETIC data; " if summary["synthetic"] else ""
        aucs = ", ".join(f"{k} {v:.3f}" for k, v in summary["auc"].items() if v is not None)
        typer.echo(f"{out}: {tag}{sum(summary['cases'].values())} cases, {summary['skipped']} skipped, "
                   f"{summary['features_extracted']} features ({summary['extraction']['from_cache']} "
                   f"cases from cache, {summary['extraction']['seconds']} s); final classifier "
                   f"{summary['final_classifier']['classifier']}; AUC {aucs}")

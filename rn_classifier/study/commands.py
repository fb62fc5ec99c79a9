"""Study-level commands: demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        out: Annotated[Path, typer.Option(help="run folder")] = Path("demo_run"),
        seed: Annotated[int, typer.Option()] = 0,
    ):
        """Run the study on the SYNTHETIC demo cohort (CPU, minutes)."""
        from .demo import run_data_stages

        caches = run_data_stages(out, preset="demo", seed=seed, echo=typer.echo)
        typer.echo("\nData stages done on the SYNTHETIC cohort. Caches: "
                   + ", ".join(str(c) for c in caches.values()))
        typer.echo("Next: pretrain (rn-classifier pretrain --config configs/pretrain/dino_demo.yaml "
                   f"--set data.pool_cache={caches['unlabeled']}), then finetune, radiomics, compare, report.")

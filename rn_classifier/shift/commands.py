"""Command ``rn-classifier shift-check`` (caches + predictions -> shift.json, cases.csv)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("shift-check")
    def shift_check_cmd(
        predictions: Annotated[list[Path], typer.Argument(help="predictions CSV file(s) (seam 2)")],
        cache: Annotated[list[Path], typer.Option(
            help="preprocess cache(s) holding the cases (internal and external); repeat the option")],
        out: Annotated[Path, typer.Option(help="folder to write shift.json and cases.csv to")] = Path("shift"),
        level: Annotated[float, typer.Option(help="quantile of the held-out internal spread that flags")] = 0.99,
        n_draws: Annotated[int, typer.Option(help="random internal held-out subsets per verdict")] = 200,
        seed: Annotated[int, typer.Option(help="seed of those subsets")] = 0,
        model: Annotated[Optional[list[Path]], typer.Option(
            help="model bundle or fine-tuning run folder to record the internal range into, so that "
                 "`predict` with that bundle alone flags a case outside it; repeat the option")] = None,
    ):
        """Label-free shift check: is each cohort's image statistics / score distribution outside the
        spread seen between internal parts held out as if new? Flags cohorts, folds and cases."""
        from ..models.bundle import META_NAME
        from ..predict.model import load_model
        from .run import record_case_reference, run_shift_check

        # every model is resolved before the check runs: a wrong path is refused before minutes of work
        bundles = [load_model(m).folder for m in model or []]
        result = run_shift_check(cache, predictions, out, level=level, n_draws=n_draws, seed=seed)
        label = " (SYNTHETIC)" if result["synthetic"] else ""
        for cohort, v in result["image"]["cohorts"].items():
            typer.echo(f"{cohort}{label}: image distance {v['distance']:.2f} vs internal "
                       f"{v['threshold']:.2f} -> {'FLAGGED' if v['flagged'] else 'within range'}")
        for model, s in result["scores"].items():
            for cohort, v in s["cohorts"].items():
                typer.echo(f"{model} {cohort}: score distance {v['distance']:.3f} vs internal "
                           f"{v['threshold']:.3f} -> {'FLAGGED' if v['flagged'] else 'within range'}")
        typer.echo(f"wrote {out / 'shift.json'}")
        recorded = record_case_reference(result, bundles)
        for bundle in recorded:
            typer.echo(f"recorded the internal range into {bundle / META_NAME}")
        for bundle in sorted(set(bundles) - set(recorded)):
            typer.echo(f"{bundle}: a clinical-only model reads no image; no internal range recorded")

"""Statistics command: ``rn-classifier compare`` (predictions files -> stats.json + table)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

_COHORT_TITLES = {"oof": "Cross-validation (oof)", "internal_test": "Internal test",
                  "external": "External"}


def _fmt_p(p) -> str:
    if p is None:
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def render_table(stats: dict):
    """A rich Table laid out like the paper's: model × cohort, AUC [95 % CI], p vs reference."""
    from rich.table import Table

    reference = stats["reference"]
    cohorts = list(stats["cohorts"])
    level = round(100 * stats["settings"]["conf_level"])
    title = "AUC by model and cohort" + (" — SYNTHETIC DATA" if stats["synthetic"] else "")
    table = Table(title=title, caption=f"AUC [{level} % CI, DeLong]; p: paired DeLong vs "
                  f"{reference} (two-sided), Holm-adjusted in parentheses")
    table.add_column("Model")
    for cohort in cohorts:
        info = stats["cohorts"][cohort]
        head = (f"{_COHORT_TITLES.get(cohort, cohort)}\n"
                f"n={info['n_cases']} ({info['n_positive']} RN)")
        table.add_column(head, justify="center")
        table.add_column("p", justify="center")
    models = list(dict.fromkeys(m for c in cohorts for m in stats["cohorts"][c]["models"]))
    for model in models:
        row = [model + (" (reference)" if model == reference else "")]
        for cohort in cohorts:
            info = stats["cohorts"][cohort]
            entry = info["models"].get(model)
            if entry is None:
                row += ["—", ""]
                continue
            lo, hi = entry["auc_ci"]
            row.append(f"{entry['auc']:.3f} [{lo:.3f}–{hi:.3f}]")
            comparison = next((c for c in info["comparisons"] if c["model"] == model), None)
            row.append("" if comparison is None else
                       f"{_fmt_p(comparison['p_value'])} ({_fmt_p(comparison['p_holm'])})")
        table.add_row(*row)
    return table


def register(app: typer.Typer) -> None:
    @app.command("compare")
    def compare_cmd(
        predictions: Annotated[list[Path], typer.Argument(help="predictions.csv file(s) of finetune / radiomics runs (model, case_id, cohort, y_true, y_prob)")],
        reference: Annotated[str, typer.Option(help="model every other model is compared against")],
        out: Annotated[Path, typer.Option(help="stats JSON to write")] = Path("stats.json"),
        n_boot: Annotated[int, typer.Option(help="bootstrap replicates")] = 2000,
        seed: Annotated[int, typer.Option(help="bootstrap seed")] = 0,
        conf_level: Annotated[float, typer.Option(help="confidence level of all intervals")] = 0.95,
        n_bins: Annotated[int, typer.Option(help="bins of the reliability curves / ECE")] = 10,
        recalibrate: Annotated[Optional[str], typer.Option(
            help="platt | isotonic: also report calibration after a map fitted on oof only",
        )] = None,
        contour: Annotated[Optional[Path], typer.Option(
            help="contour predictions CSV (study stage contour): spread over alternative contours "
                 "and AUC under each")] = None,
        synthetic: Annotated[Optional[bool], typer.Option(
            "--synthetic/--not-synthetic",
            help="label the statistics as computed on synthetic data")] = None,
    ):
        """AUCs with DeLong and bootstrap CIs, paired DeLong tests vs the reference (Holm),
        frozen-threshold operating points, calibration and decision curves -> stats.json."""
        from rich.console import Console

        from .compare import CompareSettings, run_compare

        settings = CompareSettings(n_boot=n_boot, seed=seed, conf_level=conf_level,
                                   n_bins=n_bins, recalibrate=recalibrate)
        stats = run_compare(predictions, out, reference, settings, synthetic, contour=contour)
        console = Console()
        if not console.is_terminal:      # piped or logged: do not squeeze the table into 80 columns
            console = Console(width=160)
        console.print(render_table(stats))
        for cohort, info in stats["cohorts"].items():
            for note in info["notes"]:
                console.print(f"[yellow]note ({cohort}): {note}[/yellow]")
        console.print(f"wrote {out}")

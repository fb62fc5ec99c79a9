"""Study-level commands: ``rn-classifier study`` and ``rn-classifier demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

DEMO_CONFIG = "configs/study/demo.yaml"


def parse_fractions(text: str | None) -> list[float] | None:
    """``"0.1,0.25,0.5,1.0"`` -> ``[0.1, 0.25, 0.5, 1.0]``; each in (0, 1]."""
    from ..errors import InputError

    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--label-fractions must be comma-separated numbers like 0.1,0.25,0.5,1.0, "
                         f"got {text!r}") from None
    bad = [v for v in values if not 0.0 < v <= 1.0]
    if not values or bad:
        raise InputError(f"--label-fractions must be numbers in (0, 1], got {text!r}")
    return values


def print_result(result: dict, echo=typer.echo) -> None:
    """The paper-style table, the label-efficiency curve file, stage timings and the report path."""
    from rich.console import Console

    from ..stats.commands import render_table

    run = Path(result["run"])
    console = Console()
    if not console.is_terminal:          # piped or logged: keep the table's columns readable
        console = Console(width=160)
    console.print(render_table(result["stats"]))
    for cohort, info in result["stats"]["cohorts"].items():
        for note in info["notes"]:
            console.print(f"note ({cohort}): {note}")
    timings = ", ".join(f"{k} {v:.0f} s" for k, v in result["timings"].items())
    echo(f"stage seconds (as last run): {timings}")
    echo(f"ran now: {', '.join(result['ran']) or 'nothing (every stage up to date)'}")
    curve = run / "label_efficiency" / "curve.csv"
    if curve.is_file():
        echo(f"label-efficiency curve: {curve}")
    echo(f"statistics: {run / 'compare' / 'stats.json'}")
    if result["report"] is not None:
        echo(f"report: {Path(result['report']).resolve()}")
    else:
        echo("report: not written (rn_classifier.report is not available)")


def register(app: typer.Typer) -> None:
    @app.command("study")
    def study_cmd(
        config: Annotated[Path, typer.Option(help="study YAML (configs/study/demo.yaml, paper.yaml)")],
        set_: Annotated[Optional[list[str]], typer.Option("--set", help="override key=value, e.g. "
                                                          "pretrain.accelerator=gpu (repeatable)")] = None,
        out: Annotated[Optional[Path], typer.Option(help="run folder (default runs/<name>)")] = None,
        label_fractions: Annotated[Optional[str], typer.Option(
            help="also fine-tune the SSL and supervised models on these fractions of the training "
                 "patients, e.g. 0.1,0.25,0.5,1.0 (label-efficiency curve)")] = None,
        progress: Annotated[bool, typer.Option(help="progress bars")] = False,
    ):
        """The whole study from one config: cohort → check-data → preprocess → split → pretrain →
        finetune (every model) → baselines (radiomics, …) → label efficiency (optional) → compare →
        report.
        Stages whose settings and inputs are unchanged are skipped, so a stopped study resumes."""
        from .run import Study, load_study_config

        cfg = load_study_config(config, set_ or [])
        fractions = parse_fractions(label_fractions)
        if fractions is not None:
            cfg.label_efficiency.fractions = fractions
        run = out if out is not None else Path("runs") / cfg.name
        result = Study(cfg, run, echo=typer.echo, progress=progress).run()
        if not result.get("worker_rank"):
            print_result(result)

    @app.command("demo")
    def demo_cmd(
        out: Annotated[Path, typer.Option(help="run folder")] = Path("demo_run"),
        seed: Annotated[int, typer.Option(help="seed of the synthetic cohort")] = 0,
        set_: Annotated[Optional[list[str]], typer.Option("--set", help="override key=value of "
                                                          f"{DEMO_CONFIG}")] = None,
        label_fractions: Annotated[Optional[str], typer.Option(
            help="label-efficiency fractions, e.g. 0.1,0.25,0.5,1.0 (adds minutes)")] = None,
    ):
        """The study on the SYNTHETIC demo cohort (CPU, minutes): synth --preset demo + study
        --config configs/study/demo.yaml; prints the table and the report's path."""
        from .run import Study, load_study_config

        cfg = load_study_config(DEMO_CONFIG, [f"data.synth.seed={seed}", *(set_ or [])])
        fractions = parse_fractions(label_fractions)
        if fractions is not None:
            cfg.label_efficiency.fractions = fractions
        typer.echo(f"rn-classifier demo: the whole study on a SYNTHETIC cohort in {out} "
                   "(not patient data; figures show what the pipeline does, not clinical performance)")
        result = Study(cfg, out, echo=typer.echo).run()
        print_result(result)

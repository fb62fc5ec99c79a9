"""Command ``rn-classifier predict`` (one new case → prediction.json + attention maps)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def parse_labels(text: str | None) -> list[int]:
    """``"11,12"`` → ``[11, 12]``; empty → ``[]`` (every non-zero mask value)."""
    from ..errors import InputError

    if not text:
        return []
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise InputError(f"--mask-labels {text!r}: expected integers separated by commas, "
                         "e.g. 11,12") from None


def register(app: typer.Typer) -> None:
    @app.command("predict")
    def predict_cmd(
        model: Annotated[Path, typer.Option(help="fine-tuning run folder (e.g. RUN/finetune/ssl_vit)")],
        image: Annotated[Path, typer.Option(help="T1CE image: NIfTI, NRRD, MHA or a DICOM series folder")],
        mask: Annotated[Path, typer.Option(help="lesion mask on the image's voxel grid")],
        out: Annotated[Path, typer.Option(help="output folder")],
        mask_labels: Annotated[Optional[str], typer.Option(
            help="mask values forming the lesion, e.g. 11,12 (default: every non-zero value)")] = None,
        clinical: Annotated[Optional[list[str]], typer.Option(
            help="clinical values key=value, repeated or comma-separated (age=61,sex=F), for models "
                 "with clinical inputs; values left out are imputed as in training")] = None,
        stats: Annotated[Optional[Path], typer.Option(
            help="stats.json whose frozen threshold to use (default: the study's compare/stats.json, "
                 "else the run's own out-of-fold predictions)")] = None,
    ):
        """Probability of radiation necrosis for one new case, with fold spread, the frozen
        threshold's decision and attention maps (NIfTI on the image's grid + PNG)."""
        from .case import predict_case

        pairs = [p for item in clinical or [] for p in (item.split(",") if item.count("=") > 1 else [item])]
        result = predict_case(model, image, mask, out, parse_labels(mask_labels), pairs, stats)
        if result.get("warning"):
            typer.secho(result["warning"], fg=typer.colors.YELLOW, err=True)
        typer.echo(f"{result['model']['name']}: P(radiation necrosis) = {result['probability_rn']:.3f} "
                   f"(fold SD {result['fold_spread_sd']:.3f}); threshold {result['threshold']['value']:.3f} "
                   f"→ {result['decision']}")
        if result.get("clinical") and result["clinical"]["imputed_by_model"]:
            typer.secho("clinical values not given, imputed by the model as in training: "
                        + ", ".join(result["clinical"]["imputed_by_model"]), fg=typer.colors.YELLOW, err=True)
        for warning in result.get("warnings", []):
            typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
        typer.echo(f"wrote {out / 'prediction.json'}")

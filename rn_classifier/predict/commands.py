"""Command ``rn-classifier predict`` (one new case → prediction.json + attention maps; or a
manifest / folder of cases → one row per case in predictions.csv)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def parse_labels(text: str | None) -> list[int | str]:
    """``"11,12"`` → ``[11, 12]``; ``"GTV_1"`` → ``["GTV_1"]`` (an RTSTRUCT's ROI names, a SEG's
    segment labels); empty → ``[]`` (every non-zero mask value). Names are refused later for a
    label-image mask."""
    if not text:
        return []
    parts = [v.strip() for v in text.split(",") if v.strip()]
    return [int(v) if v.isdigit() else v for v in parts]


def register(app: typer.Typer) -> None:
    @app.command("predict")
    def predict_cmd(
        model: Annotated[Path, typer.Option(help="model bundle folder (RUN/finetune/ssl_vit/bundle, what a group "
                                                  "deploys) or the fine-tuning run folder holding it")],
        out: Annotated[Path, typer.Option(help="output folder")],
        image: Annotated[Optional[Path], typer.Option(
            help="T1CE image: NIfTI, NRRD, MHA or a DICOM series folder")] = None,
        mask: Annotated[Optional[Path], typer.Option(help="lesion mask on the image's voxel grid, or the RTSTRUCT / "
                                                          "DICOM-SEG drawn on the image's DICOM series")] = None,
        cases: Annotated[Optional[Path], typer.Option(
            help="instead of --image/--mask: a manifest CSV (case_id, image, mask[, mask_labels][, clinical "
                 "columns]) or a folder with images/<case>.nii.gz + masks/<case>.nii.gz; one row per case "
                 "in OUT/predictions.csv, each case's outputs in OUT/<case_id>/")] = None,
        mask_labels: Annotated[Optional[str], typer.Option(
            help="mask values forming the lesion, e.g. 11,12, or the ROI name(s) of an RTSTRUCT mask "
                 "(GTV_1) / segment numbers or labels of a DICOM-SEG (default: every non-zero value)")] = None,
        clinical: Annotated[Optional[list[str]], typer.Option(
            help="clinical values key=value, repeated or comma-separated (age=61,sex=1), coded as in "
                 "training (MOLAB: sex 1 = F, 2 = M), for models with clinical inputs; values left out "
                 "are imputed as in training")] = None,
        stats: Annotated[Optional[Path], typer.Option(
            help="stats.json whose frozen threshold to use (default: the bundle's: the study's "
                 "compare/stats.json, else the run's own out-of-fold predictions)")] = None,
        rater_mask: Annotated[Optional[list[Path]], typer.Option(
            help="another rater's mask of the same lesion (same labels); repeat for several: each is "
                 "predicted and reported next to the drawn mask")] = None,
        contour: Annotated[bool, typer.Option(
            "--contour/--no-contour", help="also predict under alternative contours (erode / dilate "
                                           "~1 mm, boundary jitter) and report the spread")] = True,
        shift: Annotated[Optional[Path], typer.Option(
            help="shift.json of `rn-classifier shift-check` to check the case's image against "
                 "(default: the internal range the bundle records, else the study's "
                 "shift/shift.json above the model)")] = None,
    ):
        """Probability of radiation necrosis for one new case, with fold spread, the frozen
        threshold's decision, the spread over alternative contours, a label-free check that the image
        is within the internal range, and attention maps (NIfTI on the image's grid + PNG)."""
        from ..errors import InputError
        from .case import predict_case

        if cases is not None:
            if image is not None or mask is not None or clinical or mask_labels:
                raise InputError("--cases takes each case's image, mask, labels and clinical values from "
                                 "the manifest; drop --image/--mask/--mask-labels/--clinical")
            _predict_many(model, cases, out, stats)
            return
        if image is None or mask is None:
            raise InputError("give --image and --mask (one case), or --cases MANIFEST_OR_FOLDER (many)")
        pairs = [p for item in clinical or [] for p in (item.split(",") if item.count("=") > 1 else [item])]
        result = predict_case(model, image, mask, out, parse_labels(mask_labels), pairs, stats,
                              rater_masks=list(rater_mask or []), contour=contour, shift=shift)
        if result.get("warning"):
            typer.secho(result["warning"], fg=typer.colors.YELLOW, err=True)
        typer.echo(f"{result['model']['name']}: P(radiation necrosis) = {result['probability_rn']:.3f} "
                   f"(fold SD {result['fold_spread_sd']:.3f}); threshold {result['threshold']['value']:.3f} "
                   f"→ {result['decision']}"
                   + (" — BORDERLINE: the threshold lies inside the fold models' spread (mean ± SD)"
                      if result["borderline"] else ""))
        if result.get("contour"):
            c = result["contour"]
            typer.echo(f"contour spread: SD {c['sd']:.3f} over {c['n_contours']} contours, P from "
                       f"{c['range'][0]:.3f} to {c['range'][1]:.3f}")
        if (result.get("shift") or {}).get("flagged"):
            typer.secho(f"warning: the image is outside the internal range (distance "
                        f"{result['shift']['distance']:.2f} > {result['shift']['threshold']:.2f}; furthest: "
                        + ", ".join(result["shift"]["furthest"]) + ")", fg=typer.colors.YELLOW, err=True)
        if result.get("clinical") and result["clinical"]["imputed_by_model"]:
            typer.secho("clinical values not given, imputed by the model as in training: "
                        + ", ".join(result["clinical"]["imputed_by_model"]), fg=typer.colors.YELLOW, err=True)
        for warning in result.get("warnings", []):
            typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
        typer.echo(f"wrote {out / 'prediction.json'}")


def _predict_many(model: Path, cases: Path, out: Path, stats: Path | None) -> None:
    from .batch import predict_cases

    table = predict_cases(model, cases, out, stats, echo=typer.echo)
    if table.attrs.get("warning"):
        typer.secho(table.attrs["warning"], fg=typer.colors.YELLOW, err=True)
    failed = table[table["error"].astype(str) != ""]
    typer.echo(f"wrote {out / 'predictions.csv'}: {len(table)} case(s), "
               f"{int(table['borderline'].fillna(False).astype(bool).sum())} borderline, {len(failed)} refused")
    for warning in table["warnings"].dropna():
        for line in filter(None, str(warning).split(" | ")):
            typer.secho(f"warning: {line}", fg=typer.colors.YELLOW, err=True)
    if len(failed):
        raise typer.Exit(1)

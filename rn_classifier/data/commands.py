"""Data-stage commands: synth, import-molab, import-dicom, build-pool, check-data, preprocess, split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("import-molab")
    def import_molab_cmd(
        root: Annotated[Path, typer.Argument(help="MOLAB root: ROOT/<patient>/<patient>/NIFTI/...")],
        labels: Annotated[Path, typer.Option(help="CSV with patient,timepoint,lesion,label (1 = RN, 0 = progression)")],
        out: Annotated[Path, typer.Option(help="manifest CSV to write")],
        center: Annotated[str, typer.Option(help="centre name written into the manifest")] = "MOLAB",
        clinical: Annotated[Optional[Path], typer.Option(help="clinical spreadsheet (.xlsx)")] = None,
        columns: Annotated[Optional[Path], typer.Option(help="column map YAML (default configs/data/molab_columns.yaml)")] = None,
    ):
        """Build a cohort manifest from a MOLAB-style tree, a labels CSV and the clinical spreadsheet."""
        from .molab import import_molab, import_warnings

        df = import_molab(root, labels, clinical, center=center, out=out, column_map=columns)
        typer.echo(f"wrote {out}: {len(df)} cases, {df['patient_id'].nunique()} patients, "
                   f"{int((df['label'] == 1).sum())} RN / {int((df['label'] == 0).sum())} progression"
                   + (f"; {df.attrs['unlabelled_lesions']} lesion(s) without a label left out"
                      if df.attrs.get("unlabelled_lesions") else ""))
        for line in import_warnings(df):
            typer.secho(f"warning: {line}", fg="yellow", err=True)

    @app.command("import-dicom")
    def import_dicom_cmd(
        root: Annotated[Path, typer.Argument(help="folder holding MR series and RTSTRUCT / DICOM-SEG files (any nesting)")],
        labels: Annotated[Path, typer.Option(help="CSV patient,roi,label[,study][,clinical columns] (1 = RN, 0 = progression)")],
        out: Annotated[Path, typer.Option(help="manifest CSV to write (and <name>.report.csv beside it)")],
        center: Annotated[str, typer.Option(help="centre name written into the manifest")] = "DICOM",
        roi_pattern: Annotated[Optional[str], typer.Option(
            help="regular expression an ROI name must match to be a lesion (default: names starting "
                 "with GTV, lesion, met or tumour, any case)")] = None,
    ):
        """Build a cohort manifest from a planning-system export: one case per lesion ROI of each
        structure set, paired with the MR series it references."""
        import pandas as pd

        from .dicom_import import DEFAULT_ROI_PATTERN, import_dicom

        df = import_dicom(root, labels, out, center=center, roi_pattern=roi_pattern or DEFAULT_ROI_PATTERN)
        report = df.attrs["report"]
        typer.echo(f"wrote {out}: {len(df)} cases, {df['patient_id'].nunique()} patients, "
                   f"{int((df['label'] == 1).sum())} RN / {int((df['label'] == 0).sum())} progression")
        if report:
            kinds = pd.Series([r["kind"] for r in report]).value_counts()
            typer.secho(f"not paired or not labelled ({len(report)}, listed in "
                        f"{out.with_name(out.stem + '.report.csv')}): "
                        + ", ".join(f"{n} {k}" for k, n in kinds.items()), fg="yellow", err=True)

    @app.command("build-pool")
    def build_pool_cmd(
        config: Annotated[Path, typer.Option(help="pool YAML: sources (brats-mets / pattern layouts), exclusions, sizes")],
        out: Annotated[Path, typer.Option(help="folder for unlabeled.csv, exclusions.csv, counts.csv")],
        set_: Annotated[Optional[list[str]], typer.Option("--set", help="override key=value")] = None,
    ):
        """Build the unlabeled pretraining pool (lesion-centred + random brain sub-volumes, with
        masks) from public collections; de-duplicate patients, exclude the labelled cohorts."""
        from ..config import load_config
        from .pool import PoolConfig, build_pool

        result = build_pool(load_config(PoolConfig, config, set_ or []), out)
        typer.echo(f"wrote {out / 'unlabeled.csv'}: {result['n']} sub-volumes; "
                   f"{len(result['exclusions'])} scan(s) excluded (listed in {out / 'exclusions.csv'})")
        typer.echo(result["counts"].to_string(index=False))

    @app.command("synth")
    def synth_cmd(
        out: Annotated[Path, typer.Option(help="folder to write the synthetic cohort into")],
        preset: Annotated[str, typer.Option(help="demo | paper | large (the demo ×8, for diagnostics)")] = "demo",
        seed: Annotated[int, typer.Option(help="random seed (the cohort is deterministic for a seed)")] = 0,
        pool_size: Annotated[Optional[int], typer.Option(help="unlabeled pool size (paper: up to 10167)")] = None,
        workers: Annotated[int, typer.Option(help="processes")] = 2,
        format_: Annotated[str, typer.Option("--format", help="nifti (MOLAB layout) | dicom-rt (MR series + "
                                             "RTSTRUCT per scan, as a planning system exports)")] = "nifti",
    ):
        """Write a SYNTHETIC MOLAB-like cohort (internal, external, unlabeled pool) and its manifests."""
        from .synth import make_synthetic_cohort

        info = make_synthetic_cohort(out, preset=preset, seed=seed, pool_size=pool_size, workers=workers,
                                     fmt=format_)
        typer.echo(f"SYNTHETIC cohort written to {out}")
        for name in ("internal", "external", "unlabeled"):
            typer.echo(f"  manifests/{name}.csv")
        if isinstance(info, dict) and info.get("counts"):
            typer.echo(f"  counts: {info['counts']}")

    @app.command("check-data")
    def check_data_cmd(
        manifest: Annotated[Path, typer.Argument(help="manifest CSV")],
        columns: Annotated[Optional[Path], typer.Option(help="column map YAML whose `types` declare the clinical columns")] = None,
        internal: Annotated[Optional[Path], typer.Option(
            help="the training (internal) manifest: categorical levels of MANIFEST it lacks are listed")] = None,
        unseen_levels: Annotated[str, typer.Option(
            help="a level --internal lacks: impute (treated as missing, listed) | error (refused)")] = "impute",
        workers: Annotated[int, typer.Option(help="threads")] = 2,
    ):
        """Check every case of a manifest; list every problem (exit 1 if any) and the clinical
        values the models would impute."""
        from .check import check_manifest
        from .clinical_audit import (audit_lines, check_unseen_policy, clinical_audit,
                                     unseen_level_problems, unseen_levels as find_unseen)
        from .manifest import load_manifest, undeclared_clinical_columns
        from .molab import load_column_map

        check_unseen_policy(unseen_levels, "--unseen-levels")
        clinical = load_column_map(columns).types if columns else None
        df, problems = check_manifest(manifest, clinical=clinical, workers=workers, progress=True)
        cohorts = {"checked": df}
        if internal is not None and clinical:
            reference = load_manifest(internal, clinical=clinical)
            cohorts = {"internal": reference, "checked": df}
            if unseen_levels == "error":
                problems += unseen_level_problems(find_unseen(reference, df, clinical), reference, str(manifest))
        if problems:
            typer.secho(f"{manifest}: {len(problems)} problem(s) in {len(df)} cases:", fg="red", err=True)
            for p in problems:
                typer.echo(f"  - {p}", err=True)
            raise typer.Exit(1)
        n_lab = int(df["label"].notna().sum())
        typer.secho(f"{manifest}: {len(df)} cases OK ({n_lab} labelled, "
                    f"{df['patient_id'].nunique()} patients)", fg="green")
        # without a column map every extra column is listed as a clinical one, untyped
        listed = clinical or dict.fromkeys(undeclared_clinical_columns(df), "undeclared")
        if listed:
            audit = clinical_audit(cohorts, listed, unseen_levels, reference="internal")
            audit["cohorts"].pop("internal", None)
            for line in audit_lines(audit):
                typer.echo(f"  {line.replace('checked: ', '', 1)}")

    @app.command("preprocess")
    def preprocess_cmd(
        manifest: Annotated[Path, typer.Argument(help="manifest CSV")],
        out: Annotated[Path, typer.Option(help="cache folder to write")],
        config: Annotated[Optional[Path], typer.Option(help="preprocess YAML (configs/preprocess/)")] = None,
        set_: Annotated[Optional[list[str]], typer.Option("--set", help="override key=value")] = None,
    ):
        """Resample, normalise and crop every case once into a memory-mapped cache."""
        from ..config import load_config
        from .preprocess import PreprocessConfig, preprocess

        cfg = load_config(PreprocessConfig, config, set_ or [])
        meta = preprocess(manifest, out, cfg, progress=True)
        verb = "up to date, nothing to do" if meta.get("skipped") else "written"
        typer.echo(f"{out}: {meta['n']} crops {meta['crop_size']} x {meta['channels']} at "
                   f"{meta['spacing']} mm, {verb}")

    @app.command("split")
    def split_cmd(
        manifest: Annotated[Path, typer.Argument(help="internal (labelled) manifest CSV")],
        out: Annotated[Path, typer.Option(help="split CSV to write")],
        test_fraction: Annotated[float, typer.Option(help="fraction of patients held out")] = 0.2,
        folds: Annotated[int, typer.Option(help="cross-validation folds on the rest")] = 5,
        seed: Annotated[int, typer.Option()] = 0,
    ):
        """Patient-level stratified split: internal test + k CV folds, shared by every model."""
        from .manifest import load_manifest
        from .split import make_split, save_split

        df = load_manifest(manifest, require_labels=True)
        split = make_split(df, test_fraction=test_fraction, n_folds=folds, seed=seed,
                           keys=("--test-fraction", "--folds"))
        save_split(split, out)
        counts = split.groupby("part")["patient_id"].nunique().to_dict()
        typer.echo(f"wrote {out}: patients per part {counts}, folds {folds}")

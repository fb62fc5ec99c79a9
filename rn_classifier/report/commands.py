"""Command ``rn-classifier report`` (run folder → report.html + report.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_cmd(
        run_dir: Annotated[Path, typer.Argument(help="study run folder, or a fine-tuning run folder with --stats")],
        out: Annotated[Optional[Path], typer.Option(
            help="HTML file to write (default RUN_DIR/report/report.html)")] = None,
        stats: Annotated[Optional[Path], typer.Option(help="stats.json (default RUN_DIR/compare/stats.json)")] = None,
        pseudonymize: Annotated[bool, typer.Option(
            "--pseudonymize", help="salted-hash case/patient ids, no absolute paths (salt: --salt-file, "
                                   "$RN_PSEUDONYM_SALT, or random for this report; never written)")] = False,
        salt_file: Annotated[Optional[Path], typer.Option(
            help="file holding the study's pseudonym salt (rn_classifier.privacy.write_salt_file); "
                 "kept out of the report")] = None,
        allow_partial: Annotated[bool, typer.Option(
            "--allow-partial", help="exit 0 when a section (attention maps, centres) cannot be included")] = False,
    ):
        """External-validation report: provenance, AUC table with DeLong/Holm, ROC / calibration /
        decision curves, frozen-threshold operating points, uncertainty, attention gallery, TRIPOD+AI."""
        import json

        from . import build_report

        path = build_report(run_dir, out=out, pseudonymize=pseudonymize, stats=stats, salt_file=salt_file)
        missing = json.loads(path.with_name("report.json").read_text()).get("missing_sections", [])
        typer.echo(f"wrote {path} and {path.with_name('report.json')}" + (" (partial)" if missing else ""))
        for section in missing:
            typer.secho(f"warning: the report lacks {section}", fg=typer.colors.YELLOW, err=True)
        if missing and not allow_partial:
            typer.secho(f"error: {len(missing)} report section(s) could not be included (listed above); "
                        "fix the paths or pass --allow-partial to accept the partial report",
                        fg=typer.colors.RED, err=True)
            raise typer.Exit(1)

"""The ``rn-classifier`` command line.

Each stage keeps its commands in its own ``commands.py`` module, which exposes
``register(app)``; this file only gathers them. Command modules import their heavy
dependencies (torch, pyradiomics) inside the command functions, so ``rn-classifier --help``
stays fast.

Errors caused by user input (:class:`rn_classifier.errors.InputError`) are printed as one
message on stderr with exit code 2; the integrity check uses exit code 1 for "data not clean".
"""

from __future__ import annotations

import importlib
import sys

import typer

from .errors import InputError

app = typer.Typer(
    name="rn-classifier",
    help="Radiation necrosis vs. progression on T1CE MRI: data, pretraining, fine-tuning, "
         "baselines, statistics, reports.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# One entry per stage that has commands; each module defines register(app).
COMMAND_MODULES = [
    "rn_classifier.data.commands",
    "rn_classifier.pretrain.commands",
    "rn_classifier.baselines.commands",
    "rn_classifier.study.commands",
    "rn_classifier.stats.commands",
    "rn_classifier.finetune.commands",
    "rn_classifier.predict.commands",
    "rn_classifier.report.commands",
]

for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run the app, turning InputError into a clean exit."""
    try:
        # standalone_mode=False: click returns the exit code of typer.Exit instead of exiting
        rc = app(args=argv, standalone_mode=False)
    except InputError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.secho("aborted", err=True)
        return 130
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())

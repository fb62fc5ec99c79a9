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
import warnings
from pathlib import Path

import typer
import typer.main
from typer.core import TyperArgument, TyperCommand, TyperGroup

from .errors import InputError


def _plain_metavars(params) -> None:
    """Positional arguments read as upper-case names (``MANIFEST``, ``RUN_DIR``) and flags show
    no ``<bool>`` (typer's rich help would suggest they take a value)."""
    for param in params:
        if param.metavar is not None:
            continue
        if isinstance(param, TyperArgument):
            param.metavar = param.name.upper()
        elif getattr(param, "is_flag", False):
            param.metavar = ""


class _PlainHelp:
    """Mixin for typer's command and group classes: :func:`_plain_metavars` on every parameter
    and the ``--help`` option."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _plain_metavars(self.params)

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            _plain_metavars([option])
        return option


class _Command(_PlainHelp, TyperCommand):
    """Usage line ``[OPTIONS] MANIFEST`` as in most Unix tools (typer writes ``{manifest}``)."""

    def collect_usage_pieces(self, ctx):
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = param.metavar + ("..." if param.nargs != 1 else "")
                pieces.append(name if param.required else f"[{name}]")
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces


class _Group(_PlainHelp, TyperGroup):
    pass


app = typer.Typer(
    name="rn-classifier",
    cls=_Group,
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
    "rn_classifier.shift.commands",
    "rn_classifier.finetune.commands",
    "rn_classifier.predict.commands",
    "rn_classifier.report.commands",
]

for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)
for _info in app.registered_commands:
    if _info.cls in (None, TyperCommand):
        _info.cls = _Command


def _context(args: list[str], exc):
    """The click context of the failed command: the exception's, or one made for the verb in
    ``args`` (click raises some parser errors, e.g. an option without its value, without one)."""
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        return ctx
    group = typer.main.get_command(app)
    root = typer.Context(group, info_name="rn-classifier")
    verb = next((a for a in args if not a.startswith("-")), None)
    command = group.commands.get(verb) if verb else None
    return typer.Context(command, info_name=verb, parent=root) if command else root


def _usage_error(exc, args: list[str]) -> int:
    """A usage error (missing / unknown / malformed argument): one ``error:`` line + the usage."""
    ctx = _context(args, exc)
    message = exc.format_message()
    if message.startswith("No such command") and hasattr(ctx.command, "list_commands"):
        message += f" The commands are: {', '.join(ctx.command.list_commands(ctx))}."
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    usage = ctx.get_usage().strip()
    usage = "usage:" + usage[len("Usage:"):] if usage.startswith("Usage:") else usage
    typer.echo(f"{usage}   (see '{ctx.command_path} --help')", err=True)
    return 2


def _override_without_value(argv: list[str]) -> str | None:
    """``--set key value`` (a space instead of ``=``) would reach click as an extra argument."""
    for flag, value in zip(argv, argv[1:]):
        if flag == "--set" and "=" not in value:
            return (f"--set expects key=value, got {value!r}; write --set {value}=VALUE "
                    "(no space around '=')")
    return None


_default_showwarning = warnings.showwarning
PACKAGE_DIR = str(Path(__file__).resolve().parent)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """The package's own warnings (a DICOM series with missing slices) as one ``warning:`` line;
    a library's keep Python's form (file and line help there)."""
    if str(Path(filename).resolve()).startswith(PACKAGE_DIR) and issubclass(category, UserWarning):
        typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: every error caused by the user is one ``error:`` line, exit 2.

    InputError (bad files, configs, cases) prints its message; a usage error (missing, unknown or
    malformed argument) prints its message and the command's usage line. typer >= 0.29 bundles
    its own click, whose exceptions all derive from ``typer.TyperException``. Anything else is a
    bug and keeps its traceback.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    warnings.showwarning = _show_warning
    bad_override = _override_without_value(args)
    if bad_override:
        typer.secho(f"error: {bad_override}", fg=typer.colors.RED, err=True)
        return 2
    try:
        # standalone_mode=False: click returns the exit code of typer.Exit instead of exiting
        rc = app(args=args, prog_name="rn-classifier", standalone_mode=False)
    except InputError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.secho("aborted", err=True)
        return 130
    except typer.TyperException as exc:  # click's usage errors, as bundled by typer
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            help_text = ctx.get_help()   # typer's rich help prints itself and returns ""
            if help_text:
                typer.echo(help_text)
            typer.secho("error: no command given; choose one of the commands above", fg=typer.colors.RED,
                        err=True)
            return 2
        return _usage_error(exc, args)
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())

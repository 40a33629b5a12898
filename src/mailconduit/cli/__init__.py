"""The ``mailconduit`` command line.

Every command turns :class:`~mailconduit.errors.MailconduitError` into one line on
stderr and an exit status: 0 success, 1 the operation was tried and failed, 2 bad
usage or invalid input. No traceback reaches a user for a user's mistake.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from typer._click import exceptions as click_exc  # typer vendors click

from mailconduit.errors import MailconduitError

__all__ = ["app", "main"]

app = typer.Typer(
    name="mailconduit",
    help="Deliver rows of data as e-mail through an SMTP server.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(wanted: bool) -> None:
    if wanted:
        from mailconduit import __version__

        print(f"mailconduit {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the installed version of mailconduit and exit.",
            is_eager=True,
            callback=_print_version,
        ),
    ] = False,
) -> None:
    """Deliver rows of data as e-mail through an SMTP server."""


_GROUPS = ("connections", "sink", "runs", "users", "agent", "agents", "interfaces")
_COMMANDS = {"export": "export", "run": "export", "serve": "serve"}
_registered: set[str] = set()


def _register(only: str | None = None) -> None:
    """Add the commands; with ``only``, just that one, so a command imports only what it uses."""
    import importlib

    if only == "--version":  # needs no command
        return
    wanted = [only] if only in _GROUPS or only in _COMMANDS else [*_GROUPS, "export", "serve"]
    for name in wanted:
        module_name = _COMMANDS.get(name, name)
        if module_name in _registered:
            continue
        _registered.add(module_name)
        module = importlib.import_module(f"mailconduit.cli.{module_name}")
        if name in _GROUPS:
            app.add_typer(module.app, name=name)
        else:
            module.register(app)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one line on stderr and return the Exit to raise."""
    print(f"mailconduit: {message}", file=sys.stderr)
    return typer.Exit(code)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = sys.argv[1:] if argv is None else argv
    _register(args[0] if args else None)
    try:
        result = app(args=args, prog_name="mailconduit", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except click_exc.NoArgsIsHelpError as exc:
        print(exc.format_message() if hasattr(exc, 'format_message') else exc, file=sys.stderr)
        return 2
    except click_exc.UsageError as exc:
        message = exc.format_message().replace("\n", " ")
        print(f"mailconduit: {message} (see --help)", file=sys.stderr)
        return 2
    except click_exc.ClickException as exc:
        print(f"mailconduit: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    except typer.Abort:
        print("mailconduit: aborted", file=sys.stderr)
        return 130
    except MailconduitError as exc:
        print(f"mailconduit: {' '.join(str(exc).splitlines())}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("mailconduit: interrupted", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0

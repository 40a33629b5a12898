"""`mailconduit connections` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="Manage connections.", no_args_is_help=True)

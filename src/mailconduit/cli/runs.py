"""`mailconduit runs` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="Manage runs.", no_args_is_help=True)

"""`mailconduit sink` commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="Manage sink.", no_args_is_help=True)

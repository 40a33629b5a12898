"""``mailconduit interfaces``: list, show, run, import and export saved interfaces."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mailconduit.cli.progress import show_run

app = typer.Typer(
    help="Saved exports the console schedules: list, show, run, import and export them.",
    no_args_is_help=True,
)

Name = Annotated[str, typer.Argument(help="The interface's name (see 'interfaces list').")]


@app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List interfaces with their connection and schedule."""
    from mailconduit.interfaces import store

    found = store.list_interfaces()
    if as_json:
        typer.echo(json.dumps([i.to_document() for i in found], indent=2, ensure_ascii=False))
        return
    table = [("NAME", "DATA", "CONNECTION", "SCHEDULE")]
    table += [
        (i.name, "query" if i.is_query else "file", i.connection, i.schedule.describe())
        for i in found
    ]
    widths = [max(len(row[c]) for row in table) for c in range(4)]
    for row in table:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@app.command("show")
def show(name: Name) -> None:
    """Print an interface as YAML, and why it would not run now if so."""
    from mailconduit.interfaces import runner, service, store

    interface = store.get_interface(name)
    typer.echo(service.interface_to_yaml(interface.to_document()), nl=False)
    problem = runner.problem(interface)
    if problem:
        typer.echo(f"# would not run now: {problem}")


@app.command("export")
def export(
    name: Name,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file (default: stdout).")
    ] = None,
) -> None:
    """Write an interface as YAML; 'mailconduit run FILE' runs it (a query needs its database URL)."""
    from mailconduit.interfaces import service, store

    text = service.interface_to_yaml(store.get_interface(name).to_document())
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="YAML document made by 'interfaces export'.")],
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace an interface of the same name.")
    ] = False,
) -> None:
    """Save an interface from a YAML document (checked as the console checks it)."""
    from mailconduit.config.document import read_document_text
    from mailconduit.errors import NotFoundError
    from mailconduit.interfaces import service, store

    doc = service.interface_from_yaml(read_document_text(file, what="interface file"))
    existing: str | None = None
    if replace:
        try:
            existing = store.get_interface(str(doc.get("name", ""))).name
        except NotFoundError:
            existing = None
    saved = service.save_interface(doc, existing=existing)
    typer.echo(f"interface {saved.name} saved ({saved.schedule.describe()})")


@app.command("run")
def run(
    name: Name,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Run an interface now and wait (refused while it is running elsewhere)."""
    from mailconduit.interfaces import runner

    show_run(lambda progress: runner.run_interface(name), as_json=as_json, quiet=quiet, log_json=False)

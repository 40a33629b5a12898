"""``mailconduit export`` and ``mailconduit run``: rows of a data container become e-mails."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from mailconduit.cli.options import RUN_START_OPTIONS, Param, option, with_options
from mailconduit.cli.progress import show_run
from mailconduit.config.text import is_database_url
from mailconduit.home import LOCAL_CONNECTION

SourceArg = Annotated[
    str | None,
    typer.Argument(
        help="Data container: a .csv/.tsv/.json/.jsonl/.xlsx/.parquet file, or '-' for stdin "
        "(CSV or JSON Lines). With --query: omit it, or give the database URL here.",
        show_default=False,
    ),
]

#: The settings of ``export``, by parameter name. Most are the export setting of the same
#: name (see :func:`_settings` for the few spelled otherwise); None = not given.
EXPORT_OPTIONS: dict[str, Param] = {
    "connection": option(
        str, "--connection", "-c", default=LOCAL_CONNECTION,
        help=f"Connection to send through ({LOCAL_CONNECTION!r} = the embedded server).",
    ),
    "to": option(str, help="Recipients template, e.g. '{{email}}' (several: comma or semicolon)."),
    "subject": option(str, help="Subject template, e.g. 'Invoice {{number}}'."),
    "body": option(
        str, help="Body template. Sent as HTML with --html, or when it is an HTML document "
        "(<!DOCTYPE html> or <html> first), or when the connection uses HTML bodies.",
    ),
    "body_file": option(
        Path, help="Read the body template from this file; a name ending in .html or .htm "
        "(maybe followed by .j2, .jinja or .jinja2) makes it HTML.",
    ),
    "html_body": option(
        str, help="HTML body template; its plain-text part is made from it unless --text-body "
        "or --text-body-file gives one.",
    ),
    "html_body_file": option(Path, help="Read the HTML body template from this file."),
    "text_body": option(
        str, help="Plain-text body template: the text part beside an HTML body, or alone the "
        "whole body, sent as plain text whatever it holds.",
    ),
    "text_body_file": option(Path, help="Read the plain-text body template from this file."),
    "inline": option(
        list[str], help="Inline image NAME=TEMPLATE (repeatable): a file from --attach-dir that the "
        'HTML shows with <img src="cid:NAME">. A template that renders empty adds none.',
    ),
    "cc": option(str, help="Cc recipients template."),
    "bcc": option(str, help="Bcc recipients template (never shown in the headers)."),
    "reply_to": option(str, help="Reply-To template."),
    "from_": option(str, "--from", help="Sender template (default: the connection's sender)."),
    "attach": option(
        list[str], help="Attachment path template, relative to --attach-dir (repeatable). A row where "
        "it renders empty (an empty cell) gets no attachment from it.",
    ),
    "attach_dir": option(Path, help="Folder attachments must come from; nothing outside it is read."),
    "header": option(list[str], help="Extra header 'Name: template' (repeatable)."),
    "mode": option(
        str, default="row",
        help="row: one e-mail per row; table: the whole data in one e-mail; group: one per value of --by.",
    ),
    "by": option(str, help="Column that groups rows in group mode."),
    "to_column": option(str, help="Table/group mode: every distinct address in this column receives the message."),
    "table_format": option(
        str, help="Table/group mode: html (in the body), csv, xlsx, json (attached); comma-separated.",
    ),
    "table_row_cap": option(int, help="Most rows shown in an HTML table (a note says when capped)."),
    "oversize": option(str, help="When a message exceeds the server's SIZE: fail, attach (table as a file) or split."),
    "where": option(str, help="SQL condition selecting rows, e.g. \"country = 'FR' AND amount > 100\"."),
    "order_by": option(str, help="SQL ordering, e.g. 'amount DESC, name'."),
    "key": option(str, help="Column whose value identifies a row (default: position + content hash)."),
    "encoding": option(str, help="Text encoding of the source file (default: UTF-8, BOM tolerated)."),
    "delimiter": option(str, help="CSV delimiter (default: detected)."),
    "sheet": option(str, help="Excel sheet name or 1-based number (default: the first)."),
    "kind": option(str, help="Source kind when the extension does not tell: csv, tsv, json, jsonl, xlsx, parquet."),
    "query": option(str, help="SQL query whose rows are the data (needs --database-url)."),
    "database_url": option(str, help="Database to run --query on, e.g. postgresql://user@host/db."),
    "charset": option(str, help="Character set of the message text (default utf-8)."),
    "html": option(
        bool, "--html/--text",
        help="Send --body/--body-file as HTML (with a plain-text part) or as plain text, "
        "whatever its name, content or the connection's Use HTML Body say.",
    ),
    "dry_run": option(Path, help="Write every message as an .eml file into this folder; send nothing."),
    "limit": option(int, help="Handle at most this many rows."),
    "fail_fast": option(bool, "--fail-fast", default=False, help="Stop at the first row that fails."),
    "run_id": option(str, help="Name this run (default: generated); an existing run is resumed."),
    "concurrency": option(int, help="Parallel SMTP sessions (default: the connection's)."),
    "rate": option(str, help="Sending cap, e.g. 10/s, 600/min, 5000/h, 20000/day (comma-separated)."),
    "max_attempts": option(int, help="Tries per row for temporary failures (default 5)."),
    "retry_seconds": option(float, help="Total time budget for retrying a row (default 3600)."),
    "max_errors": option(int, help="Pause the run after this many failed rows (0 = never)."),
    "no_resend_uncertain": option(
        bool, "--no-resend-uncertain", default=False,
        help="Hold rows whose confirmation was lost as 'uncertain' instead of sending them again.",
    ),
    "no_journal": option(
        bool, "--no-journal", default=False,
        help="Do not record rows (no resume possible; for throw-away runs and benchmarks).",
    ),
    "messages_per_connection": option(int, help="Reconnect after this many messages (default: the connection's)."),
    "data_timeout_ms": option(int, help="Wait for the reply to the end of a message (default: 10 minutes, RFC 5321)."),
    "report": option(Path, help="Write per-row results to this .csv or .json file."),
}  # fmt: skip

#: Parameters named otherwise than the setting they give.
_SETTING_NAMES = {"from_": "from", "header": "headers", "table_format": "table_formats"}
#: ``--no-X`` flags: given, they set the setting X to False.
_NEGATED = {"no_resend_uncertain": "resend_uncertain", "no_journal": "journal"}


@with_options(settings=EXPORT_OPTIONS, start=RUN_START_OPTIONS)
def export(source: SourceArg = None, *, settings: dict[str, Any], start: dict[str, Any]) -> None:
    """Send one e-mail per row (or the whole table, or one per group) through a connection.

    Exit status: 0 all rows sent, 1 some rows failed or the run stopped, 2 bad input (nothing sent).
    """
    from mailconduit import api

    rows_from = _data_source(source, settings)  # takes --query, --database-url, --kind out
    _start(api.export_spec({**rows_from, **_settings(settings)}), **start)


def _data_source(source: str | None, settings: dict[str, Any]) -> dict[str, Any]:
    """Where the rows come from: a file (SOURCE), or --query on --database-url (or on SOURCE,
    when SOURCE is a database URL: ``export postgresql:///db --query 'SELECT ...'``)."""
    query, database_url = settings.pop("query"), settings.pop("database_url")
    kind = settings.pop("kind")
    if query:
        if source and (not is_database_url(source) or database_url):
            raise typer.BadParameter("give either SOURCE or --query, not both")
        source, database_url, kind = query, database_url or source, "sql"
    found = {"source": source or "", "kind": kind, "database_url": database_url}
    return {key: value for key, value in found.items() if value is not None}


def _settings(given: dict[str, Any]) -> dict[str, Any]:
    """The settings the options give, under the names :func:`mailconduit.api.export_spec` reads;
    an option not given (None, a flag left off, a repeatable option never used) is left out."""
    out: dict[str, Any] = {}
    for name, value in given.items():
        if value is None or value in ((), []) or (value is False and EXPORT_OPTIONS[name].default is False):
            continue
        key = _SETTING_NAMES.get(name, name)
        if name in _NEGATED:
            key, value = _NEGATED[name], False
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, list | tuple):
            value = tuple(value)
        out[key] = value
    return out


def _start(spec: Any, *, detach: bool, queue: bool, as_json: bool, quiet: bool,
           log_json: bool) -> None:  # fmt: skip
    """Run the export attached (progress, report, exit status) or, with --detach, queue it."""
    from mailconduit import api

    if detach:
        run_id = api.detach_export(spec, queue=queue)
        typer.echo(json.dumps({"run_id": run_id}) if as_json else run_id)
        return
    show_run(
        lambda progress: api.run_export(spec, progress=progress, handle_signals=True, queue=queue),
        as_json=as_json,
        quiet=quiet,
        log_json=log_json,
    )


@with_options(start=RUN_START_OPTIONS)
def run(
    interface: Annotated[
        Path, typer.Argument(help="Interface file (YAML) holding the export's settings.")
    ],
    run_id: Annotated[
        str | None,
        typer.Option("--run-id", help="Run name; running the same file with the same run id resumes it."),
    ] = None,
    *,
    start: dict[str, Any],
) -> None:
    """Run the export described by an interface file (for cron jobs and orchestrators)."""
    from mailconduit import api

    _start(api.load_interface(interface, run_id=run_id), **start)


def register(app: typer.Typer) -> None:
    """Add ``export`` and ``run`` to the top-level app."""
    app.command("export", no_args_is_help=True)(export)
    app.command("run", no_args_is_help=True)(run)

"""``mailconduit export`` and ``mailconduit run``: rows of a data container become e-mails."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from mailconduit.cli.progress import progress_printer
from mailconduit.config.text import is_database_url
from mailconduit.home import LOCAL_CONNECTION


def _opt(*names: str, help: str, **kw: Any) -> Any:
    return typer.Option(*names, help=help, **kw)


#: Options of ``export`` and ``run`` for connections of implementation type celery.
Detach = Annotated[
    bool,
    _opt(
        "--detach",
        help="Celery connections: print the run id once the run is queued and return; "
        "the agent's workers send it ('runs show' follows it).",
    ),
]
Queue = Annotated[
    bool,
    _opt(
        "--queue",
        help="Celery connections: queue the run even when its agent has no live worker yet.",
    ),
]


def export(
    source: Annotated[
        str | None,
        typer.Argument(
            help="Data container: a .csv/.tsv/.json/.jsonl/.xlsx/.parquet file, or '-' for stdin "
            "(CSV or JSON Lines). With --query: omit it, or give the database URL here.",
            show_default=False,
        ),
    ] = None,
    connection: Annotated[
        str,
        _opt(
            "--connection",
            "-c",
            help=f"Connection to send through ({LOCAL_CONNECTION!r} = the embedded server).",
        ),
    ] = LOCAL_CONNECTION,
    to: Annotated[
        str | None,
        _opt("--to", help="Recipients template, e.g. '{{email}}' (several: comma or semicolon)."),
    ] = None,
    subject: Annotated[
        str | None, _opt("--subject", help="Subject template, e.g. 'Invoice {{number}}'.")
    ] = None,
    body: Annotated[
        str | None,
        _opt(
            "--body",
            help="Body template. Sent as HTML with --html, or when it is an HTML document "
            "(<!DOCTYPE html> or <html> first), or when the connection uses HTML bodies.",
        ),
    ] = None,
    body_file: Annotated[
        Path | None,
        _opt(
            "--body-file",
            help="Read the body template from this file; a name ending in .html or .htm "
            "(maybe followed by .j2, .jinja or .jinja2) makes it HTML.",
        ),
    ] = None,
    html_body: Annotated[
        str | None,
        _opt(
            "--html-body",
            help="HTML body template; its plain-text part is made from it unless --text-body "
            "or --text-body-file gives one.",
        ),
    ] = None,
    html_body_file: Annotated[
        Path | None, _opt("--html-body-file", help="Read the HTML body template from this file.")
    ] = None,
    text_body: Annotated[
        str | None,
        _opt(
            "--text-body",
            help="Plain-text body template: the text part beside an HTML body, or alone the "
            "whole body, sent as plain text whatever it holds.",
        ),
    ] = None,
    text_body_file: Annotated[
        Path | None,
        _opt("--text-body-file", help="Read the plain-text body template from this file."),
    ] = None,
    inline: Annotated[
        list[str] | None,
        _opt(
            "--inline",
            help="Inline image NAME=TEMPLATE (repeatable): a file from --attach-dir that the "
            'HTML shows with <img src="cid:NAME">. A template that renders empty adds none.',
        ),
    ] = None,
    cc: Annotated[str | None, _opt("--cc", help="Cc recipients template.")] = None,
    bcc: Annotated[
        str | None, _opt("--bcc", help="Bcc recipients template (never shown in the headers).")
    ] = None,
    reply_to: Annotated[str | None, _opt("--reply-to", help="Reply-To template.")] = None,
    from_: Annotated[
        str | None, _opt("--from", help="Sender template (default: the connection's sender).")
    ] = None,
    attach: Annotated[
        list[str] | None,
        _opt(
            "--attach",
            help="Attachment path template, relative to --attach-dir (repeatable). A row where "
            "it renders empty (an empty cell) gets no attachment from it.",
        ),
    ] = None,
    attach_dir: Annotated[
        Path | None,
        _opt("--attach-dir", help="Folder attachments must come from; nothing outside it is read."),
    ] = None,
    header: Annotated[
        list[str] | None, _opt("--header", help="Extra header 'Name: template' (repeatable).")
    ] = None,
    mode: Annotated[
        str,
        _opt(
            "--mode",
            help="row: one e-mail per row; table: the whole data in one e-mail; group: one per value of --by.",
        ),
    ] = "row",
    by: Annotated[str | None, _opt("--by", help="Column that groups rows in group mode.")] = None,
    to_column: Annotated[
        str | None,
        _opt(
            "--to-column",
            help="Table/group mode: every distinct address in this column receives the message.",
        ),
    ] = None,
    table_format: Annotated[
        str | None,
        _opt(
            "--table-format",
            help="Table/group mode: html (in the body), csv, xlsx, json (attached); comma-separated.",
        ),
    ] = None,
    table_row_cap: Annotated[
        int | None,
        _opt("--table-row-cap", help="Most rows shown in an HTML table (a note says when capped)."),
    ] = None,
    oversize: Annotated[
        str | None,
        _opt(
            "--oversize",
            help="When a message exceeds the server's SIZE: fail, attach (table as a file) or split.",
        ),
    ] = None,
    where: Annotated[
        str | None,
        _opt(
            "--where",
            help="SQL condition selecting rows, e.g. \"country = 'FR' AND amount > 100\".",
        ),
    ] = None,
    order_by: Annotated[
        str | None, _opt("--order-by", help="SQL ordering, e.g. 'amount DESC, name'.")
    ] = None,
    key: Annotated[
        str | None,
        _opt(
            "--key", help="Column whose value identifies a row (default: position + content hash)."
        ),
    ] = None,
    encoding: Annotated[
        str | None,
        _opt(
            "--encoding", help="Text encoding of the source file (default: UTF-8, BOM tolerated)."
        ),
    ] = None,
    delimiter: Annotated[
        str | None, _opt("--delimiter", help="CSV delimiter (default: detected).")
    ] = None,
    sheet: Annotated[
        str | None, _opt("--sheet", help="Excel sheet name or 1-based number (default: the first).")
    ] = None,
    kind: Annotated[
        str | None,
        _opt(
            "--kind",
            help="Source kind when the extension does not tell: csv, tsv, json, jsonl, xlsx, parquet.",
        ),
    ] = None,
    query: Annotated[
        str | None,
        _opt("--query", help="SQL query whose rows are the data (needs --database-url)."),
    ] = None,
    database_url: Annotated[
        str | None,
        _opt("--database-url", help="Database to run --query on, e.g. postgresql://user@host/db."),
    ] = None,
    charset: Annotated[
        str | None, _opt("--charset", help="Character set of the message text (default utf-8).")
    ] = None,
    html: Annotated[
        bool | None,
        _opt(
            "--html/--text",
            help="Send --body/--body-file as HTML (with a plain-text part) or as plain text, "
            "whatever its name, content or the connection's Use HTML Body say.",
        ),
    ] = None,
    dry_run: Annotated[
        Path | None,
        _opt(
            "--dry-run", help="Write every message as an .eml file into this folder; send nothing."
        ),
    ] = None,
    limit: Annotated[int | None, _opt("--limit", help="Handle at most this many rows.")] = None,
    fail_fast: Annotated[
        bool, _opt("--fail-fast", help="Stop at the first row that fails.")
    ] = False,
    run_id: Annotated[
        str | None,
        _opt("--run-id", help="Name this run (default: generated); an existing run is resumed."),
    ] = None,
    concurrency: Annotated[
        int | None,
        _opt("--concurrency", help="Parallel SMTP sessions (default: the connection's)."),
    ] = None,
    rate: Annotated[
        str | None,
        _opt(
            "--rate", help="Sending cap, e.g. 10/s, 600/min, 5000/h, 20000/day (comma-separated)."
        ),
    ] = None,
    max_attempts: Annotated[
        int | None, _opt("--max-attempts", help="Tries per row for temporary failures (default 5).")
    ] = None,
    retry_seconds: Annotated[
        float | None,
        _opt("--retry-seconds", help="Total time budget for retrying a row (default 3600)."),
    ] = None,
    max_errors: Annotated[
        int | None,
        _opt("--max-errors", help="Pause the run after this many failed rows (0 = never)."),
    ] = None,
    no_resend_uncertain: Annotated[
        bool,
        _opt(
            "--no-resend-uncertain",
            help="Hold rows whose confirmation was lost as 'uncertain' instead of sending them again.",
        ),
    ] = False,
    no_journal: Annotated[
        bool,
        _opt(
            "--no-journal",
            help="Do not record rows (no resume possible; for throw-away runs and benchmarks).",
        ),
    ] = False,
    messages_per_connection: Annotated[
        int | None,
        _opt(
            "--messages-per-connection",
            help="Reconnect after this many messages (default: the connection's).",
        ),
    ] = None,
    data_timeout_ms: Annotated[
        int | None,
        _opt(
            "--data-timeout-ms",
            help="Wait for the reply to the end of a message (default: 10 minutes, RFC 5321).",
        ),
    ] = None,
    report: Annotated[
        Path | None, _opt("--report", help="Write per-row results to this .csv or .json file.")
    ] = None,
    detach: Detach = False,
    queue: Queue = False,
    as_json: Annotated[bool, _opt("--json", help="Print the result as JSON.")] = False,
    quiet: Annotated[bool, _opt("--quiet", "-q", help="Print nothing but errors.")] = False,
    log_json: Annotated[
        bool, _opt("--log-json", help="Progress and events as JSON lines on stderr.")
    ] = False,
) -> None:
    """Send one e-mail per row (or the whole table, or one per group) through a connection.

    Exit status: 0 all rows sent, 1 some rows failed or the run stopped, 2 bad input (nothing sent).
    """
    from mailconduit import api

    if query and source:
        if not is_database_url(source) or database_url:
            raise typer.BadParameter("give either SOURCE or --query, not both")
        source, database_url = None, source  # export postgresql:///db --query 'SELECT ...'

    options: dict[str, Any] = {
        "source": query if query else source,
        "kind": "sql" if query else kind,
        "database_url": database_url,
        "connection": connection, "to": to, "subject": subject, "body": body,
        "body_file": str(body_file) if body_file else None, "html_body": html_body,
        "html_body_file": str(html_body_file) if html_body_file else None,
        "text_body": text_body, "text_body_file": str(text_body_file) if text_body_file else None,
        "inline": tuple(inline or ()) or None, "cc": cc, "bcc": bcc,
        "reply_to": reply_to, "from": from_, "attach": tuple(attach or ()) or None,
        "attach_dir": str(attach_dir) if attach_dir else None, "headers": list(header or ()) or None,
        "mode": mode, "by": by, "to_column": to_column, "table_formats": table_format,
        "table_row_cap": table_row_cap, "oversize": oversize, "where": where, "order_by": order_by,
        "key": key, "encoding": encoding, "delimiter": delimiter, "sheet": sheet, "charset": charset,
        "html": html, "dry_run": str(dry_run) if dry_run else None, "limit": limit,
        "fail_fast": fail_fast or None, "run_id": run_id, "concurrency": concurrency, "rate": rate,
        "max_attempts": max_attempts, "retry_seconds": retry_seconds, "max_errors": max_errors,
        "resend_uncertain": False if no_resend_uncertain else None,
        "journal": False if no_journal else None,
        "messages_per_connection": messages_per_connection, "data_timeout_ms": data_timeout_ms,
        "report": str(report) if report else None,
    }  # fmt: skip
    if options["source"] is None:
        options["source"] = ""
    spec = api.export_spec({k: v for k, v in options.items() if v is not None})
    _start(spec, detach=detach, queue=queue, as_json=as_json, quiet=quiet, log_json=log_json)


def _start(spec: Any, *, detach: bool, queue: bool, as_json: bool, quiet: bool,
           log_json: bool) -> None:  # fmt: skip
    """Run the export attached (progress, report, exit status) or, with --detach, queue it."""
    from mailconduit import api

    if detach:
        run_id = api.detach_export(spec, queue=queue)
        typer.echo(json.dumps({"run_id": run_id}) if as_json else run_id)
        return
    _execute(
        lambda progress: api.run_export(spec, progress=progress, handle_signals=True, queue=queue),
        as_json=as_json,
        quiet=quiet,
        log_json=log_json,
    )


def _execute(call: Any, *, as_json: bool, quiet: bool, log_json: bool) -> None:
    printer = progress_printer(quiet=quiet or as_json, log_json=log_json)
    with printer:
        report = call(printer.update)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    elif not quiet:
        for line in printer.final_lines(report):
            typer.echo(line)
    raise typer.Exit(0 if report.ok else 1)


def run(
    interface: Annotated[
        Path, typer.Argument(help="Interface file (YAML) holding the export's settings.")
    ],
    run_id: Annotated[
        str | None,
        _opt("--run-id", help="Run name; running the same file with the same run id resumes it."),
    ] = None,
    detach: Detach = False,
    queue: Queue = False,
    as_json: Annotated[bool, _opt("--json", help="Print the result as JSON.")] = False,
    quiet: Annotated[bool, _opt("--quiet", "-q", help="Print nothing but errors.")] = False,
    log_json: Annotated[
        bool, _opt("--log-json", help="Progress and events as JSON lines on stderr.")
    ] = False,
) -> None:
    """Run the export described by an interface file (for cron jobs and orchestrators)."""
    from mailconduit import api

    spec = api.load_interface(interface, run_id=run_id)
    _start(spec, detach=detach, queue=queue, as_json=as_json, quiet=quiet, log_json=log_json)


def register(app: typer.Typer) -> None:
    """Add ``export`` and ``run`` to the top-level app."""
    app.command("export", no_args_is_help=True)(export)
    app.command("run", no_args_is_help=True)(run)

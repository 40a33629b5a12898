"""``mailconduit runs``: list, show, report and resume export runs."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from mailconduit.cli.progress import show_run

app = typer.Typer(help="Inspect export runs and resume interrupted ones.", no_args_is_help=True)

RunId = Annotated[
    str, typer.Argument(help="The run's id (printed when it started; see 'runs list').")
]


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


@app.command("list")
def list_(
    limit: Annotated[
        int, typer.Option("--limit", help="Show at most this many runs, newest first.")
    ] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List runs, newest first, with their counts."""
    from mailconduit import api

    runs = api.list_runs(limit=limit)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in runs], indent=2))
        return
    header = (
        "RUN",
        "STATUS",
        "CONNECTION",
        "MODE",
        "STARTED",
        "TOTAL",
        "SENT",
        "FAILED",
        "SKIPPED",
        "UNCERTAIN",
    )
    table = [header]
    for r in runs:
        c = r.counts
        table.append(
            (r.run_id, r.status, r.connection, r.mode, _when(r.created_at), str(r.total if r.total is not None else "-"),
             str(c.get("sent", 0)), str(c.get("failed", 0)), str(c.get("skipped", 0)), str(c.get("uncertain", 0) + c.get("claimed", 0)))
        )  # fmt: skip
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@app.command()
def show(
    run_id: RunId,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a run's status, settings and counts."""
    from mailconduit import api

    info = api.get_run(run_id)
    if as_json:
        parts = [c.to_dict() for c in api.run_chunks(run_id)]
        typer.echo(json.dumps({**info.to_dict(), "spec": info.spec, "chunks": parts}, indent=2,
                              default=str))  # fmt: skip
        return
    typer.echo(f"run         {info.run_id}")
    typer.echo(f"status      {info.status}" + (f" ({info.message})" if info.message else ""))
    typer.echo(f"connection  {info.connection}")
    typer.echo(f"mode        {info.mode}")
    typer.echo(f"source      {info.spec.get('source')}")
    typer.echo(f"started     {_when(info.created_at)}")
    typer.echo(f"finished    {_when(info.finished_at)}")
    typer.echo(f"total       {info.total if info.total is not None else '-'}")
    for state in ("sent", "failed", "skipped", "uncertain", "claimed", "retry"):
        if info.counts.get(state):
            typer.echo(f"{state:<11} {info.counts[state]}")
    chunks = api.run_chunks(run_id)
    if chunks:
        typer.echo("chunks      CHUNK  ROWS         STATE    WORKER                ATTEMPTS  SENT  FAILED")
        workers: dict[str, int] = {}
        for c in chunks:
            sent = c.counts.get("sent", 0)
            if c.worker:
                workers[c.worker] = workers.get(c.worker, 0) + sent
            typer.echo(
                f"            {c.chunk:<5}  {f'{c.first_row}-{c.last_row}':<11}  {c.state:<7}  "
                f"{c.worker or '-':<20}  {c.attempts:<8}  {sent:<4}  {c.counts.get('failed', 0)}"
                + (f"  ({c.reason})" if c.reason else "")
            )
        for worker, sent in sorted(workers.items()):
            typer.echo(f"worker      {worker}: {sent} sent")


@app.command()
def report(
    run_id: RunId,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this .csv or .json file.")
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="csv or json (default: from the file name, else csv)."),
    ] = None,
) -> None:
    """Per-row results of a run: row key, recipients, Message-ID, status, SMTP reply."""
    from mailconduit import api
    from mailconduit.delivery.report import write_report

    rep = api.run_report(run_id)
    if output:
        write_report(rep, output, fmt=fmt or "")
        typer.echo(f"report written to {output}")
    elif (fmt or "csv") == "json":
        typer.echo(rep.to_json(), nl=False)
    else:
        typer.echo(rep.to_csv(), nl=False)


@app.command()
def resume(
    run_id: RunId,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Also send again the rows that failed.")
    ] = False,
    resend_uncertain: Annotated[
        bool | None,
        typer.Option(
            "--resend-uncertain/--no-resend-uncertain",
            help="Send again (default: as the run was started) or hold the rows whose "
            "confirmation was lost.",
        ),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            help="Read the rows from here instead of the run's original source (must hold the same data).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
    log_json: Annotated[
        bool, typer.Option("--log-json", help="Progress as JSON lines on stderr.")
    ] = False,
) -> None:
    """Resume a run: send every row not yet confirmed, never one that was."""
    from mailconduit import api

    show_run(
        lambda progress: api.run_resume(
            run_id,
            retry_failed=retry_failed,
            resend_uncertain=resend_uncertain,
            source=source,
            progress=progress,
            handle_signals=True,
        ),
        as_json=as_json,
        quiet=quiet,
        log_json=log_json,
    )


@app.command()
def stop(run_id: RunId) -> None:
    """Stop a run sent by agents: every worker ends the messages it is sending, then stops;
    'runs resume' sends the rest."""
    from mailconduit import api

    api.stop_run(run_id)
    typer.echo(f"run {run_id}: stop requested; its workers end the messages in flight")

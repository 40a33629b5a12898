"""`mailconduit sink`: run the embedded local SMTP server and read what it received."""

from __future__ import annotations

import json
import logging
import sys
import textwrap
from typing import Any

import typer

from mailconduit import sink
from mailconduit.home import sink_dir
from mailconduit.sink.credentials import credentials_file
from mailconduit.sink.state import PORT_VARIABLE

app = typer.Typer(
    help=(
        "The embedded local SMTP server: run it, list and read the messages it received. "
        "Without a subcommand, runs it in the foreground until Ctrl-C."
    ),
    invoke_without_command=True,
)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _log_to_stderr() -> None:
    """Show what the foreground sink does (each stored message, failures) on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("mailconduit.sink")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@app.callback()
def run(
    ctx: typer.Context,
    port: int | None = typer.Option(
        None,
        "--port",
        min=1,
        max=65535,
        help=f"Port to listen on, on 127.0.0.1 and ::1 "
        f"(default: ${PORT_VARIABLE} or {sink.DEFAULT_PORT}).",
    ),
    fsync: bool = typer.Option(
        False,
        "--fsync",
        help="Flush each message to the disk device before acknowledging it, so it "
        "survives a power cut too (slower; by default a message survives the sink "
        "being stopped or killed, not the machine losing power).",
    ),
) -> None:
    """Run the sink in the foreground: STARTTLS and AUTH required, every message kept."""
    if ctx.invoked_subcommand is not None:
        return

    def announce(info: sink.SinkInfo) -> None:
        user = sink.sink_credentials().username
        print(
            f"mailconduit sink listening on {info.host}:{info.port} (STARTTLS, user {user}); "
            f"messages go to {sink_dir()}; Ctrl-C stops it",
            flush=True,
        )

    _log_to_stderr()
    sink.serve_forever(port=port, fsync=fsync, ready=announce)
    print("mailconduit sink stopped", flush=True)


@app.command("list")
def list_command(
    search: str | None = typer.Option(
        None,
        "--search",
        "-s",
        help="Show only messages whose subject, From, To, sender or recipients "
        "contain every word of this text (case-insensitive).",
    ),
    limit: int = typer.Option(50, "--limit", "-n", min=1, help="Show at most this many."),
    offset: int = typer.Option(0, "--offset", min=0, help="Skip this many of the newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array instead of a table."),
) -> None:
    """List received messages, newest first."""
    messages = sink.list_messages(search=search, limit=limit, offset=offset)
    if as_json:
        _print_json([m.to_dict() for m in messages])
        return
    if not messages:
        print("no messages" + (f" matching {search!r}" if search else ""))
        return
    print(f"{'ID':>6}  {'RECEIVED (UTC)':19}  {'FROM':28}  {'TO':28}  SUBJECT")
    for m in messages:
        to = m.to_header or ", ".join(m.envelope_recipients)
        print(
            f"{m.id:>6}  {m.received:%Y-%m-%d %H:%M:%S}  "
            f"{_clip(m.from_header or m.envelope_from, 28):28}  {_clip(to, 28):28}  {m.subject}"
        )
    total = sink.count_messages(search=search)
    if total > offset + len(messages):
        print(f"({total} in all; use --offset {offset + len(messages)} for more)")


@app.command("show")
def show_command(
    message_id: int = typer.Argument(..., metavar="ID", help="The message id from `sink list`."),
    raw: bool = typer.Option(
        False, "--raw", help="Print the message exactly as received (.eml bytes)."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print headers, bodies and attachment details as JSON."
    ),
) -> None:
    """Show one received message: its headers and text part (or everything as JSON)."""
    if raw:
        data = sink.raw_message(message_id)
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    message = sink.get_message(message_id)
    if as_json:
        _print_json(message.to_dict())
        return
    summary = message.summary
    print(f"Message {summary.id}, received {summary.received:%Y-%m-%d %H:%M:%S} UTC")
    print(
        f"Envelope: from <{summary.envelope_from}> to "
        + ", ".join(f"<{r}>" for r in summary.envelope_recipients)
    )
    print(f"Stored as: {summary.path} ({summary.size} bytes)")
    print()
    for name, value in message.headers:
        print(f"{name}: {value}")
    print()
    if message.text is not None:
        print(message.text.rstrip("\n"))
    elif message.html is not None:
        print(f"(no text part; an HTML part of {len(message.html)} characters: use --json)")
    else:
        print("(no text part)")
    if message.attachments:
        print()
        print("Attachments:")
        for a in message.attachments:
            name = a.filename or "(no name)"
            print(textwrap.indent(f"[{a.index}] {name}  {a.content_type}  {a.size} bytes", "  "))


@app.command("clear")
def clear_command() -> None:
    """Delete every received message (files and index)."""
    removed = sink.clear()
    print(f"removed {removed} message{'s' if removed != 1 else ''}")


@app.command("status")
def status_command(
    as_json: bool = typer.Option(False, "--json", help="Print the state as JSON."),
) -> None:
    """Say whether the sink is running for this home, and where."""
    info = sink.running_sink()
    if as_json:
        _print_json({"running": info is not None, **(info.to_dict() if info else {})})
        return
    if info is None:
        print(f"not running (a new sink would listen on port {sink.configured_port()})")
    else:
        since = f"{info.started:%Y-%m-%d %H:%M:%S} UTC"
        print(f"running: pid {info.pid}, {info.host}:{info.port}, since {since}")


@app.command("credentials")
def credentials_command() -> None:
    """Show how to log in to the sink: user, where the password is kept, the CA to trust."""
    connection = sink.local_connection()
    path = credentials_file(sink_dir())
    print(f"host: {connection.host}")
    print(f"port: {connection.port}")
    print("security: starttls")
    print(f"user: {connection.username}")
    print(f'password: the "password" field of {path} (readable by you only)')
    print(f"CA certificate to trust: {connection.ca_file}")

"""The demo behind ``make demo``: export examples/customers.csv as e-mail, with nothing to set up.

Everything goes through the built-in ``local`` connection: mailconduit's own SMTP server,
started in this process, which keeps every message under MAILCONDUIT_HOME. Nothing leaves
this machine. Three exports show the three modes and a dry run:

1. statements, one per customer (row mode, HTML + text, an inline logo, an attachment),
   from interface.yaml;
2. one summary per account manager with that manager's customers (group mode, XLSX attached);
3. the plain-text statement as a dry run: .eml files written, nothing sent.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

from mailconduit import api, sink
from mailconduit.errors import MailconduitError
from mailconduit.home import home, sink_dir

EXAMPLES = Path(__file__).resolve().parent
SHOWN_MESSAGES = 8


def _cli() -> str:
    """How to call the CLI from where the user is: the project's venv when it exists."""
    venv = EXAMPLES.parent / ".venv" / "bin" / "mailconduit"
    return ".venv/bin/mailconduit" if venv.exists() else "mailconduit"


def _step(number: int, title: str, summary: str) -> None:
    print(f"{number}. {title}")
    print(f"   {summary}")


def main() -> int:
    print("mailconduit demo: examples/customers.csv through the built-in 'local' connection")
    print("(mailconduit's embedded SMTP server; nothing leaves this machine)\n")
    before = sink.count_messages()
    with sink.ensure_running() as running:
        statements = api.load_interface(EXAMPLES / "interface.yaml")
        report = api.run_export(statements)
        _step(1, "Statements, one per customer (row mode, HTML + text part, inline logo, attachment)",
              report.summary())  # fmt: skip

        summaries = api.export(
            str(EXAMPLES / "customers.csv"),
            connection="local",
            mode="group",
            by="account_manager",
            to="{{ group }}",
            subject="Your {{ count }} customers and their balances",
            body_file=str(EXAMPLES / "manager-summary.txt"),
            table_formats=("html", "xlsx"),
            order_by="balance::DOUBLE DESC",
        )
        _step(2, "One summary per account manager (group mode, their rows attached as XLSX)",
              summaries.summary())  # fmt: skip

    dry_run_dir = home() / "demo-dry-run"
    shutil.rmtree(dry_run_dir, ignore_errors=True)
    text_only = dataclasses.replace(
        statements, html=False, body_file=str(EXAMPLES / "statement.txt"), inline=(), limit=3,
        dry_run=dry_run_dir, run_id="",
    )  # fmt: skip
    dry = api.run_export(text_only)
    _step(3, "The plain-text statement as a dry run (first 3 rows; nothing is sent)",
          f"{dry.counts.get('written', 0)} .eml files written to {dry_run_dir}")  # fmt: skip

    received = sink.count_messages() - before
    print(f"\nThe local server received {received} messages (port {running.port}). Newest:")
    for message in sink.list_messages(limit=SHOWN_MESSAGES):
        to = message.to_header if len(message.to_header) <= 40 else message.to_header[:39] + "…"
        print(f"  {message.id:>5}  {to:<40}  {message.subject}")
    cli = _cli()
    newest = sink.list_messages(limit=1)
    print("\nRead them:")
    print(f"  {cli} sink list                 # every message received")
    if newest:
        print(f"  {cli} sink show {newest[0].id:<14}  # one message: headers, text, attachments")
    print(f"  raw .eml files:   {sink_dir() / 'messages'}")
    print(f"  runs and reports: {cli} runs list; {cli} runs report {report.run_id}")
    print(f"(state lives in {home()}; set MAILCONDUIT_HOME to use another folder)")
    return 0 if report.ok and summaries.ok and dry.ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MailconduitError as exc:
        print(f"demo: {' '.join(str(exc).splitlines())}", file=sys.stderr)
        sys.exit(exc.exit_code)

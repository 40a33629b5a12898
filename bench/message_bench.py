"""Micro-benchmark of message building and rendering: µs per message, ours vs EmailMessage.

Run: ``.venv/bin/python bench/message_bench.py [--seconds S] [--json]``. Each case is timed
for about ``--seconds`` (best of 5 rounds), in one process, side by side with the
equivalent ``EmailMessage`` + ``set_content`` + ``as_bytes(policy=SMTP)``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

from harness import INVOICE_HTML, INVOICE_SUBJECT, invoice_pdf

from mailconduit.message.addresses import parse_address, parse_address_list
from mailconduit.message.attachment import Attachment
from mailconduit.message.build import build_message, make_message_id
from mailconduit.message.compose import compose_message
from mailconduit.message.render import MessageTemplate

DATE = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
ASCII_BODY = (
    "Dear Jane Doe,\n\nYour statement for account 1234567 is ready. The balance is 1,234.56 EUR,\n"
    "due on 2026-12-15. You can pay by bank transfer or card from your account page.\n\n"
) * 4 + "Kind regards,\nThe billing team\n"
UNICODE_BODY = ASCII_BODY.replace("Dear Jane Doe", "Chère Zoë Ünal").replace("EUR", "€")
HTML_BODY = (
    "<html><body><h1>Statement</h1><p>Dear <b>Jane Doe</b>,</p>"
    + "<p>Your statement for account 1234567 is ready. The balance is 1,234.56 EUR.</p>" * 6
    + '<ul><li>Pay by <a href="https://example.com/pay">card</a></li><li>or transfer</li></ul>'
    "</body></html>"
)
PDF = bytes(range(256)) * 40  # ~10 KB binary


def _time(func: Callable[[], object], seconds: float) -> float:
    """Best µs per call over 5 rounds of about ``seconds / 5`` each."""
    func()
    calls = 1
    start = time.perf_counter()
    while time.perf_counter() - start < 0.02:
        func()
        calls += 1
    per_round = max(1, int(calls * (seconds / 5) / 0.02))
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(per_round):
            func()
        best = min(best, (time.perf_counter() - start) / per_round)
    return best * 1e6


def _email_message(
    subject: str, body: str, *, html: str | None = None, attach: bool = False
) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Billing <billing@example.com>"
    msg["To"] = "Jane Doe <jane.doe@example.org>"
    msg["Subject"] = subject
    msg["Date"] = format_datetime(DATE)
    msg["Message-ID"] = "<a1b2c3.mc@example.com>"
    msg.set_content(body)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    if attach:
        msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="statement.pdf")
    return msg.as_bytes(policy=policy.SMTP)


INVOICE_ROW = {"email": "customer000001@example.com", "name": "Grace Hopper", "amount": "1234.56",
               "number": "INV-2024-000001", "due": "2024-12-02"}  # fmt: skip
#: Distinct PDFs the "own PDF" case goes round: more than the attachment cache keeps, so
#: each message reads and encodes its file, as with one invoice per row.
INVOICE_FILES = 64


def _invoice_cases(folder: Path) -> list[tuple[str, Callable[[], object]]]:
    """The invoice scenario's message, composed: its HTML template (the text part derived
    from it) and a ~98 KB PDF read from ``folder``, its own or one shared by every row."""
    for n in range(INVOICE_FILES):
        (folder / f"invoice-{n}.pdf").write_bytes(invoice_pdf(f"INV-{n}", "Grace", "1.00", "", n))
    template = MessageTemplate(
        to="{{email}}", from_="Billing <billing@example.com>", subject=INVOICE_SUBJECT,
        html_body=INVOICE_HTML, attachments=["{{pdf}}"],
    )  # fmt: skip
    mid = make_message_id("run-1", "row-1", "example.com")
    own = itertools.cycle([{**INVOICE_ROW, "pdf": f"invoice-{n}.pdf"} for n in range(INVOICE_FILES)])
    shared = {**INVOICE_ROW, "pdf": "invoice-0.pdf"}

    def compose(row: dict[str, str]) -> object:
        return compose_message(
            template, row, row_key="1", message_id=mid, date=DATE, attachment_dir=folder
        )

    return [
        ("compose: invoice, own 98 KB PDF", lambda: compose(next(own))),
        ("compose: invoice, shared PDF", lambda: compose(shared)),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per case (default 1)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    sender = parse_address("Billing <billing@example.com>")
    to = parse_address_list("Jane Doe <jane.doe@example.org>")
    mid = make_message_id("run-1", "row-1", "example.com")
    pdf = Attachment("statement.pdf", PDF, "application/pdf")

    def ours(subject: str, body: str, **extra: object) -> Callable[[], object]:
        return lambda: build_message(
            from_=sender, to=to, subject=subject, text_body=body, message_id=mid, date=DATE,
            **extra,  # type: ignore[arg-type]
        )  # fmt: skip

    cases: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
        (
            "1 KB ASCII text",
            ours("Your statement 1234567", ASCII_BODY),
            lambda: _email_message("Your statement 1234567", ASCII_BODY),
        ),
        (
            "1 KB non-ASCII text",
            ours("Relevé de compte n° 1234567 – Zoë", UNICODE_BODY),
            lambda: _email_message("Relevé de compte n° 1234567 – Zoë", UNICODE_BODY),
        ),
        (
            "HTML + generated text",
            ours("Your statement 1234567", None, html_body=HTML_BODY),  # type: ignore[arg-type]
            lambda: _email_message("Your statement 1234567", "(text)", html=HTML_BODY),
        ),
        (
            "text + 10 KB attachment",
            ours("Your statement 1234567", ASCII_BODY, attachments=[pdf]),
            lambda: _email_message("Your statement 1234567", ASCII_BODY, attach=True),
        ),
    ]
    results = []
    for name, build_ours, build_theirs in cases:
        mine = _time(build_ours, args.seconds)
        theirs = _time(build_theirs, args.seconds)
        results.append({"case": name, "mailconduit_us": mine, "email_package_us": theirs})

    template = MessageTemplate(
        to="{{ name }} <{{ email }}>",
        from_="Billing <billing@example.com>",
        subject="Statement {{ account }} for {{ name }}",
        text_body=ASCII_BODY.replace("Jane Doe", "{{ name }}").replace("1234567", "{{ account }}"),
    )
    loop_template = MessageTemplate(
        to="{{ email }}",
        subject="Statement {{ account }}",
        text_body="{% for i in range(3) %}{{ name }} {{ balance }}\n{% endfor %}",
    )
    row = {"name": "Jane Doe", "email": "jane.doe@example.org", "account": "1234567", "balance": 1}
    extra = [
        (
            "compose: render+parse+build",
            lambda: compose_message(template, row, row_key="1", message_id=mid, date=DATE),
        ),
        ("render: substitutions only", lambda: template.render(row)),
        ("render: Jinja loop", lambda: loop_template.render(row)),
        ("parse_address_list (cached)", lambda: parse_address_list("Jane <jane@example.org>")),
    ]
    for name, func in extra:
        results.append({"case": name, "mailconduit_us": _time(func, args.seconds / 2)})
    with tempfile.TemporaryDirectory() as folder:
        for name, func in _invoice_cases(Path(folder)):
            results.append({"case": name, "mailconduit_us": _time(func, args.seconds / 2)})

    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
        return 0
    print(f"{'case':32} {'mailconduit µs':>15} {'EmailMessage µs':>16} {'speed-up':>9}")
    for item in results:
        theirs_us = item.get("email_package_us")
        line = f"{item['case']:32} {item['mailconduit_us']:15.1f}"
        if theirs_us is not None:
            line += f" {theirs_us:16.1f} {theirs_us / item['mailconduit_us']:8.0f}x"
        print(line)
    print(f"(python {sys.version.split()[0]}, best of 5 rounds of ~{args.seconds / 5:.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

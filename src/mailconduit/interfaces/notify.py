"""Telling people how an interface's run went: an e-mail summary and/or a webhook POST.

A notification that cannot be delivered is logged and never fails the run it reports on.
"""

from __future__ import annotations

import logging
import socket
from collections import Counter
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mailconduit import api
from mailconduit.errors import MailconduitError
from mailconduit.netpolicy import current_policy

if TYPE_CHECKING:
    from mailconduit.delivery.report import ExportReport
    from mailconduit.interfaces.model import Interface

__all__ = ["WEBHOOK_TIMEOUT_SECONDS", "notify_run", "run_summary", "summary_text"]

log = logging.getLogger("mailconduit.interfaces")
WEBHOOK_TIMEOUT_SECONDS = 10.0
#: Most distinct failure replies a summary lists.
TOP_REPLIES = 5


def run_summary(
    interface: Interface,
    *,
    run_id: str,
    trigger: str,
    report: ExportReport | None,
    error: BaseException | None,
) -> dict[str, Any]:
    """The run's summary as JSON-friendly data (the webhook's body, the e-mail's facts)."""
    replies: Counter[str] = Counter()
    if report is not None and report.failed:
        for row in report.rows():
            if row.state == "failed":
                replies[f"{row.code} {row.reply}".strip() if row.code else row.reply] += 1
    return {
        "interface": interface.name,
        "run_id": run_id,
        "trigger": trigger,
        "ok": bool(report is not None and report.ok),
        "status": report.status if report is not None else "failed",
        "counts": dict(report.counts) if report is not None else {},
        "total": report.total if report is not None else 0,
        "elapsed_seconds": round(report.elapsed, 3) if report is not None else 0.0,
        "message": (report.message if report is not None else " ".join(str(error).split())),
        "failure_replies": [{"reply": r, "rows": n} for r, n in replies.most_common(TOP_REPLIES)],
    }


def summary_text(summary: dict[str, Any]) -> str:
    """The summary as the plain text of the notification e-mail."""
    lines = [
        f"Interface: {summary['interface']}",
        f"Run: {summary['run_id']} ({summary['trigger']})",
        f"Result: {'succeeded' if summary['ok'] else 'FAILED'} — status {summary['status']}",
    ]
    counts = summary["counts"]
    if counts:
        lines.append("Rows: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if summary["message"]:
        lines.append(f"Message: {summary['message']}")
    if summary["failure_replies"]:
        lines.append("Most frequent failure replies:")
        lines += [f"  {f['rows']} × {f['reply']}" for f in summary["failure_replies"]]
    return "\n".join(lines) + "\n"


def notify_run(
    interface: Interface,
    *,
    run_id: str,
    trigger: str,
    report: ExportReport | None,
    error: BaseException | None,
) -> None:
    """Send the interface's notifications for this run, if its settings ask for them."""
    notify = interface.notify
    ok = report is not None and report.ok
    if not notify.active or (ok and notify.when == "failure"):
        return
    summary = run_summary(interface, run_id=run_id, trigger=trigger, report=report, error=error)
    if notify.emails:
        _send_email(notify.emails, notify.connection, summary)
    if notify.webhook:
        _post_webhook(notify.webhook, summary)


def _send_email(emails: tuple[str, ...], connection: str, summary: dict[str, Any]) -> None:
    outcome = "succeeded" if summary["ok"] else "failed"
    subject = f"mailconduit: interface {summary['interface']} {outcome} (run {summary['run_id']})"
    text = summary_text(summary)
    try:
        report = api.export(
            [{"to": address, "subject": subject, "text": text} for address in emails],
            connection=connection,
            to="{{ to }}",
            subject="{{ subject }}",
            body="{{ text }}",
            html=False,
            journal=False,
        )
    except MailconduitError as exc:
        log.warning("interface %s: notification e-mail not sent: %s", summary["interface"], exc)
        return
    if not report.ok:
        log.warning(
            "interface %s: notification e-mail: %s", summary["interface"], report.message
        )


def _post_webhook(url: str, summary: dict[str, Any]) -> None:
    import httpx

    host = urlsplit(url).hostname or ""
    policy = current_policy()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError as exc:
        log.warning("interface %s: webhook %s: %s", summary["interface"], host, exc)
        return
    refused = [a for a in addresses if not policy.allow_address(str(a))]
    if refused:
        log.warning(
            "interface %s: webhook refused by the network policy (%s)",
            summary["interface"],
            ", ".join(sorted(map(str, refused))),
        )
        return
    try:
        response = httpx.post(
            url, json=summary, timeout=WEBHOOK_TIMEOUT_SECONDS, follow_redirects=False
        )
    except httpx.HTTPError as exc:
        log.warning("interface %s: webhook failed: %s", summary["interface"], exc)
        return
    if response.status_code >= 300:
        log.warning(
            "interface %s: webhook answered %s", summary["interface"], response.status_code
        )

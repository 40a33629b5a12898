"""Telling people how an interface's run went: an e-mail summary and/or a webhook POST.

A notification that cannot be delivered is logged and never fails the run it reports on;
how each went (attempts, the last answer) is kept with the run's history. A webhook is
tried again on connection errors, time-outs, 429 and 5xx answers, never on other answers,
and each attempt connects to the address it just checked against the network policy.
"""

from __future__ import annotations

import email.utils
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

from mailconduit import api
from mailconduit.errors import MailconduitError
from mailconduit.interfaces import store
from mailconduit.interfaces.store import NotificationOutcome
from mailconduit.netpolicy import current_policy

if TYPE_CHECKING:
    import httpx

    from mailconduit.delivery.report import ExportReport
    from mailconduit.interfaces.model import Interface

__all__ = [
    "WEBHOOK_RETRY",
    "WEBHOOK_TIMEOUT_SECONDS",
    "WebhookRetry",
    "notify_run",
    "post_webhook",
    "run_summary",
    "summary_text",
]

log = logging.getLogger("mailconduit.interfaces")
WEBHOOK_TIMEOUT_SECONDS = 10.0
#: Most distinct failure replies a summary lists.
TOP_REPLIES = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookRetry:
    """How a webhook POST is tried again: ``attempts`` in all, waiting ``first_delay``
    seconds, then twice as long each time up to ``max_delay``, which also caps how long a
    Retry-After answer is honoured. ``sleep`` does the waiting (tests pass a recorder)."""

    attempts: int = 4
    first_delay: float = 1.0
    max_delay: float = 30.0
    sleep: Callable[[float], None] = time.sleep

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """The wait after failed attempt number ``attempt`` (from 1)."""
        if retry_after is not None:
            return min(self.max_delay, max(0.0, retry_after))
        return min(self.max_delay, self.first_delay * 2.0 ** (attempt - 1))


#: The retries notifications use.
WEBHOOK_RETRY = WebhookRetry()


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
) -> list[NotificationOutcome]:
    """Send the interface's notifications for this run, if its settings ask for them, and
    keep how each went in the run's history."""
    notify = interface.notify
    ok = report is not None and report.ok
    if not notify.active or (ok and notify.when == "failure"):
        return []
    summary = run_summary(interface, run_id=run_id, trigger=trigger, report=report, error=error)
    outcomes: list[NotificationOutcome] = []
    if notify.emails:
        outcomes.append(_send_email(notify.emails, notify.connection, summary))
    if notify.webhook:
        outcomes.append(post_webhook(notify.webhook, summary))
    for outcome in outcomes:
        store.record_notification(run_id, outcome)
        if not outcome.delivered:
            log.warning("interface %s: %s", interface.name, outcome.describe())
    return outcomes


def _send_email(
    emails: tuple[str, ...], connection: str, summary: dict[str, Any]
) -> NotificationOutcome:
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
        return NotificationOutcome("e-mail", False, 1, " ".join(str(exc).split()))
    if report.ok:
        return NotificationOutcome("e-mail", True, 1, f"sent to {report.sent} of {len(emails)}")
    return NotificationOutcome("e-mail", False, 1, " ".join(report.message.split()))


class _RefusedError(Exception):
    """The webhook's host resolves to an address the network policy denies."""


def _checked_addresses(host: str, port: int) -> list[str]:
    """The addresses of ``host`` to connect to, once every one of them is allowed."""
    policy = current_policy()
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    refused = [a for a in addresses if not policy.allow_address(a)]
    if refused or not addresses:
        raise _RefusedError(", ".join(sorted(refused)))
    return addresses


def _retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks for (a number or an HTTP date), if readable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - datetime.now(UTC)).total_seconds()


def _post_once(
    client: httpx.Client, parts: SplitResult, addresses: list[str], body: dict[str, Any]
) -> httpx.Response:
    """POST to the checked ``addresses`` (the next when one cannot be connected to) with
    the URL's own Host and TLS name."""
    import httpx

    for address in addresses[:-1]:
        try:
            return _post_to(client, parts, address, body)
        except httpx.ConnectError:
            continue
    return _post_to(client, parts, addresses[-1], body)


def _post_to(
    client: httpx.Client, parts: SplitResult, address: str, body: dict[str, Any]
) -> httpx.Response:
    import httpx

    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    literal = f"[{address}]" if ":" in address else address
    target = urlunsplit(parts._replace(netloc=f"{literal}:{port}"))
    shown_host = f"[{host}]" if ":" in host else host
    headers = {"Host": shown_host if parts.port is None else f"{shown_host}:{port}"}
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    if parts.username:
        auth = httpx.BasicAuth(parts.username, parts.password or "")
        return client.post(target, json=body, headers=headers, extensions=extensions, auth=auth)
    return client.post(target, json=body, headers=headers, extensions=extensions)


def post_webhook(
    url: str, body: dict[str, Any], *, retry: WebhookRetry | None = None
) -> NotificationOutcome:
    """POST ``body`` as JSON to ``url``, trying again as ``retry`` says (default
    :data:`WEBHOOK_RETRY`) on connection errors, time-outs, 429 and 5xx answers."""
    import httpx

    retry = retry or WEBHOOK_RETRY
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    last = ""
    attempts = 0
    # trust_env=False: no proxy from the environment, so the checked address is the one reached
    with httpx.Client(
        timeout=WEBHOOK_TIMEOUT_SECONDS, follow_redirects=False, trust_env=False
    ) as client:
        for attempt in range(1, max(1, retry.attempts) + 1):
            retry_after: float | None = None
            try:
                addresses = _checked_addresses(host, port)
            except _RefusedError as exc:
                reason = f"refused by the network policy ({exc})" if str(exc) else "no address"
                return NotificationOutcome("webhook", False, attempts, reason)
            except OSError:
                attempts, last = attempt, f"{host} not resolved"
            else:
                attempts = attempt
                try:
                    response = _post_once(client, parts, addresses, body)
                except httpx.TimeoutException:
                    last = "timed out"
                except httpx.TransportError:
                    last = "connection failed"
                else:
                    status = response.status_code
                    if 200 <= status < 300:
                        return NotificationOutcome("webhook", True, attempts, str(status))
                    last = str(status)
                    if status != 429 and status < 500:
                        return NotificationOutcome("webhook", False, attempts, last)
                    retry_after = _retry_after(response.headers.get("Retry-After"))
            if attempt < retry.attempts:
                retry.sleep(retry.delay(attempt, retry_after))
    return NotificationOutcome("webhook", False, attempts, last)

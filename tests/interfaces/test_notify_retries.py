"""Webhook notifications against a real HTTP server on 127.0.0.1: tried again on 5xx, 429
(its Retry-After honoured within a cap) and connection errors with growing waits, never on
other answers; each attempt re-checked against the network policy; how it went is kept in
the run's history with the e-mail's outcome. Only the waits are replaced (recorded)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from export_support import sink_messages, use_free_sink_port, write_csv
from mailconduit.interfaces import notify, runner, service
from mailconduit.interfaces.model import DATA_DIRS_ENV
from mailconduit.interfaces.notify import WebhookRetry, post_webhook
from mailconduit.testing import free_port

BODY = {"interface": "hooked", "ok": False}


@dataclass
class Hook:
    """An HTTP server answering POSTs with the scripted statuses (the last one repeats)."""

    statuses: list[int]
    retry_after: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
def hook_server() -> Iterator[Any]:
    servers: list[http.server.HTTPServer] = []

    def start(statuses: list[int], retry_after: str = "") -> Hook:
        hook = Hook(list(statuses), retry_after)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                hook.received.append(json.loads(self.rfile.read(length)))
                hook.hosts.append(self.headers.get("Host", ""))
                index = min(len(hook.received), len(hook.statuses)) - 1
                self.send_response(hook.statuses[index])
                if hook.retry_after:
                    self.send_header("Retry-After", hook.retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        hook.port = server.server_port
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return hook

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@dataclass
class Waits:
    """Records the waits instead of sleeping."""

    seen: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.seen.append(seconds)


def test_503_503_200_is_delivered_after_three_attempts_with_growing_waits(
    hook_server: Any,
) -> None:
    hook = hook_server([503, 503, 200])
    waits = Waits()
    outcome = post_webhook(hook.url, BODY, retry=WebhookRetry(sleep=waits))
    assert outcome.delivered and outcome.attempts == 3 and outcome.last == "200"
    assert outcome.describe() == "webhook: delivered after 3 attempts"
    assert hook.received == [BODY] * 3
    assert waits.seen == [1.0, 2.0]
    assert hook.hosts == [f"127.0.0.1:{hook.port}"] * 3


def test_a_400_is_tried_once(hook_server: Any) -> None:
    hook = hook_server([400])
    waits = Waits()
    outcome = post_webhook(hook.url, BODY, retry=WebhookRetry(sleep=waits))
    assert not outcome.delivered and outcome.attempts == 1 and outcome.last == "400"
    assert outcome.describe() == "webhook failed: 400 after 1 attempt"
    assert len(hook.received) == 1 and waits.seen == []


def test_always_503_gives_up_after_the_attempts_with_capped_waits(hook_server: Any) -> None:
    hook = hook_server([503])
    waits = Waits()
    retry = WebhookRetry(attempts=5, first_delay=2.0, max_delay=5.0, sleep=waits)
    outcome = post_webhook(hook.url, BODY, retry=retry)
    assert outcome.describe() == "webhook failed: 503 after 5 attempts"
    assert len(hook.received) == 5 and waits.seen == [2.0, 4.0, 5.0, 5.0]


def test_429_retry_after_is_honoured_within_the_cap(hook_server: Any) -> None:
    hook = hook_server([429, 200], retry_after="7")
    waits = Waits()
    assert post_webhook(hook.url, BODY, retry=WebhookRetry(sleep=waits)).delivered
    assert waits.seen == [7.0]
    greedy = hook_server([429, 200], retry_after="3600")
    waits = Waits()
    assert post_webhook(greedy.url, BODY, retry=WebhookRetry(max_delay=30, sleep=waits)).delivered
    assert waits.seen == [30.0]


def test_connection_refused_is_tried_again() -> None:
    waits = Waits()
    url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    outcome = post_webhook(url, BODY, retry=WebhookRetry(attempts=3, sleep=waits))
    assert outcome.describe() == "webhook failed: connection failed after 3 attempts"
    assert waits.seen == [1.0, 2.0]


def test_a_host_name_is_resolved_checked_and_kept_as_the_host_header(hook_server: Any) -> None:
    hook = hook_server([200])
    url = f"http://localhost:{hook.port}/hook"  # ::1 first on some machines: 127.0.0.1 answers
    outcome = post_webhook(url, BODY, retry=WebhookRetry(sleep=Waits()))
    assert outcome.delivered and hook.hosts == [f"localhost:{hook.port}"]


def test_every_attempt_is_checked_against_the_network_policy(
    hook_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = hook_server([503, 200])

    def deny_after_the_first(seconds: float) -> None:
        monkeypatch.setenv("MAILCONDUIT_DENY_NETWORKS", "127.0.0.0/8")

    outcome = post_webhook(hook.url, BODY, retry=WebhookRetry(sleep=deny_after_the_first))
    assert not outcome.delivered and outcome.attempts == 1
    assert "network policy" in outcome.describe() and len(hook.received) == 1
    refused = post_webhook(hook.url, BODY, retry=WebhookRetry(sleep=Waits()))
    assert refused.attempts == 0 and not refused.delivered
    assert refused.describe().startswith("webhook not sent: refused by the network policy")
    assert len(hook.received) == 1


def test_the_run_history_keeps_how_the_notifications_went(
    hook_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATA_DIRS_ENV, str(tmp_path))
    use_free_sink_port(monkeypatch)
    waits = Waits()
    monkeypatch.setattr(notify, "WEBHOOK_RETRY", WebhookRetry(sleep=waits))
    source = write_csv(tmp_path / "people.csv", [{"email": "ann@example.com"}])
    hook = hook_server([503, 503, 200])
    doc: dict[str, Any] = {
        "name": "hooked",
        "export": {"source": str(source), "connection": "local", "to": "{{ email }}",
                   "subject": "s", "body": "b"},
        "notify": {"emails": ["ops@example.com"], "connection": "local", "webhook": hook.url,
                   "when": "always"},
    }  # fmt: skip
    service.save_interface(doc)
    report = runner.run_interface("hooked")
    assert report.ok
    (entry,) = service.history("hooked")
    described = sorted(n.describe() for n in entry.notifications)
    assert described == ["e-mail: delivered", "webhook: delivered after 3 attempts"]
    assert hook.received[0]["run_id"] == report.run_id and len(hook.received) == 3
    assert [m for m in sink_messages() if m.recipients == ("ops@example.com",)]

    failing = hook_server([503])
    service.save_interface({**doc, "notify": {**doc["notify"], "webhook": failing.url}},
                           existing="hooked")  # fmt: skip
    later = runner.run_interface("hooked", run_id=runner.run_id_for("hooked") + "b")
    (note,) = [n for n in service.notifications_of(later.run_id) if n.channel == "webhook"]
    assert note.describe() == "webhook failed: 503 after 4 attempts"
    assert len(failing.received) == 4

"""Delivery against a real Postfix: ``smtp-sink`` and its own fault flags.

``-r``/``-f`` answer a command with a soft (4xx) or hard (5xx) error, ``-Q`` with 421 and
a disconnect, ``-q`` disconnects without answering, ``-A`` aborts after DATA, ``-w``
answers DATA late. Each row's final state and reply are checked in the journal, and
what the sink received in its dump files.
"""

from __future__ import annotations

import email
import time
from email import policy

import pytest

from delivery_support import final_rows, journal_rows, people, send, use_server
from mailconduit.testing import SmtpSink

RETRY_TWICE = {"max_attempts": 2, "initial_delay": 0.01, "max_delay": 0.02}


def dumped(sink: SmtpSink) -> dict[str, list[str]]:
    """recipient → Message-IDs of every transaction the sink wrote to its dump files."""
    out: dict[str, list[str]] = {}
    for raw in sink.dumped():
        msg = email.message_from_bytes(raw, policy=policy.compat32)
        for rcpt in msg.get_all("X-Rcpt-Args") or []:
            out.setdefault(rcpt.strip("<>"), []).append(str(msg["Message-ID"]))
    return out


def test_each_row_reaches_the_sink_once_with_its_message_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with SmtpSink(dump=True) as sink:
        use_server(monkeypatch, sink.port)
        report = send(people(40), concurrency=3)
    rows = final_rows(report.run_id, range(40))
    assert report.status == "finished" and report.sent == 40
    assert all((r.code, r.enhanced, r.reply) == (250, "2.0.0", "Ok") for r in rows.values())
    assert dumped(sink) == {f"user{i}@example.com": [rows[str(i)].message_id] for i in range(40)}
    assert sink.counters() == {"messages": 40, "sessions": 3}


@pytest.mark.parametrize(
    ("flags", "code", "enhanced", "text", "attempts", "per_recipient"),
    [
        (["-r", "MAIL"], 450, "4.3.0", "Error: command failed", 2, False),
        (["-r", "RCPT"], 450, "4.3.0", "Error: command failed", 2, False),
        (["-r", "."], 450, "4.3.0", "Error: command failed", 2, False),
        (["-f", "MAIL"], 500, "5.3.0", "Error: command failed", 1, False),
        (["-f", "RCPT", "-B", "550 5.1.1 no such user"], 550, "5.1.1", "no such user", 1, True),
        (["-f", "DATA"], 500, "5.3.0", "Error: command failed", 1, False),
        (["-f", ".", "-B", "554 5.7.1 content rejected"], 554, "5.7.1", "content rejected", 1,
         False),
    ],
)  # fmt: skip
def test_soft_and_hard_rejects(
    monkeypatch: pytest.MonkeyPatch,
    flags: list[str],
    code: int,
    enhanced: str,
    text: str,
    attempts: int,
    per_recipient: bool,
) -> None:
    with SmtpSink(flags, dump=True) as sink:
        use_server(monkeypatch, sink.port)
        report = send(people(3), retry=RETRY_TWICE, concurrency=2)
    rows = final_rows(report.run_id, range(3))
    assert report.status == "finished" and report.failed == 3
    prefix = "gave up after 2 attempt(s): " if attempts == 2 else ""
    for i, row in sorted(rows.items()):
        assert (row.state, row.attempts) == ("failed", attempts)
        assert (row.code, row.enhanced, row.reply) == (code, enhanced, prefix + text)
        if per_recipient:
            assert row.detail == ((f"user{i}@example.com", code, text),)
    # a rejected "." still wrote the content (the sink dumps it): once per attempt
    expected = 3 * attempts if flags[1] == "." else 0
    assert sum(len(v) for v in dumped(sink).values()) == expected


def test_abort_after_data_fails_the_row(monkeypatch: pytest.MonkeyPatch) -> None:
    with SmtpSink(["-A", "0"]) as sink:
        use_server(monkeypatch, sink.port)
        report = send(people(3), retry=RETRY_TWICE)
    rows = final_rows(report.run_id, range(3))
    seen = {(r.state, r.attempts, r.code, r.reply) for r in rows.values()}
    assert {r.state for r in rows.values()} == {"failed"}, seen
    # the 550 fails a row at once; a row pipelined behind it saw only the disconnect
    assert any(r.code == 550 and r.reply.endswith("This violates SMTP") for r in rows.values())
    for row in rows.values():
        assert row.code == 550 or "the server closed the connection" in row.reply, seen
    assert sink.counters()["messages"] == 0


@pytest.mark.parametrize("command", ["MAIL", "RCPT", "DATA"])
def test_disconnect_before_the_final_dot_is_retried_then_fails(
    monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    with SmtpSink(["-q", command]) as sink:
        use_server(monkeypatch, sink.port)
        report = send(people(2), retry=RETRY_TWICE)
    rows = final_rows(report.run_id, range(2))
    for row in rows.values():
        assert (row.state, row.attempts, row.code) == ("failed", 2, 0)
        # (a reset may add the socket's own words: "...: [Errno 104] Connection reset by peer")
        assert row.reply.startswith("gave up after 2 attempt(s): the server closed the connection")
    assert report.uncertain_resent == 0
    assert sink.counters()["messages"] == 0


def test_disconnect_after_the_final_dot_leaves_the_row_uncertain_never_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with SmtpSink(["-q", "."], dump=True) as sink:
        use_server(monkeypatch, sink.port)
        report = send(people(1), retry=RETRY_TWICE)
    [row] = journal_rows(report.run_id).values()
    assert (row.state, row.attempts) == ("uncertain", 2)
    # The second attempt usually meets the same cut after its "."; on a busy machine it may
    # meet a closed connection before it: either way the row says it may have been delivered.
    assert "may have been delivered" in row.reply
    assert report.counts == {"uncertain": 1} and report.uncertain_resent == 1
    # every attempt that reached the sink carried the row's own Message-ID, the first did
    arrived = dumped(sink)
    assert list(arrived) == ["user0@example.com"]
    assert arrived["user0@example.com"] in ([row.message_id], [row.message_id] * 2)


def test_disconnect_after_the_final_dot_with_no_resend_uncertain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with SmtpSink(["-q", "."], dump=True) as sink:
        use_server(monkeypatch, sink.port)
        report = send(people(1), retry=RETRY_TWICE, resend_uncertain=False)
    [row] = journal_rows(report.run_id).values()
    assert (row.state, row.attempts) == ("uncertain", 1)
    assert report.counts == {"uncertain": 1} and report.uncertain_resent == 0
    assert dumped(sink) == {"user0@example.com": [row.message_id]}


def test_421_is_retried_on_a_new_session_and_slows_the_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with SmtpSink(["-Q", "RCPT"]) as sink:
        use_server(monkeypatch, sink.port)
        started = time.monotonic()
        report = send(people(1), retry=RETRY_TWICE)
        elapsed = time.monotonic() - started
    [row] = journal_rows(report.run_id).values()
    assert (row.state, row.attempts, row.code) == ("failed", 2, 421)
    assert row.reply == "gave up after 2 attempt(s): Server closing connection"
    # the retry waited for the pool-wide pause, not just the row's 10 ms back-off
    assert 1.5 < elapsed < 15
    assert sink.counters()["sessions"] >= 2


def test_late_data_reply_past_timeout_ms(monkeypatch: pytest.MonkeyPatch) -> None:
    with SmtpSink(["-w", "2"]) as sink:
        use_server(monkeypatch, sink.port, timeout_ms=300)
        started = time.monotonic()
        report = send(people(1), retry=RETRY_TWICE)
        elapsed = time.monotonic() - started
    [row] = journal_rows(report.run_id).values()
    assert (row.state, row.attempts) == ("failed", 2)
    assert "timed out after 0.3 s" in row.reply
    assert elapsed < 2.0

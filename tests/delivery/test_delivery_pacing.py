"""Pacing of a real export: the rate limit, the number of sessions, the per-connection cap.

Times are taken at the server (when each message's final "." arrived), by monotonic clock.
"""

from __future__ import annotations

import time

import pytest

from delivery_support import (
    deliveries,
    fault_connection,
    final_rows,
    people,
    send,
    use_server,
)
from mailconduit.testing import SmtpSink


def test_rate_per_second_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    rate, count = 20, 40
    with fault_connection(monkeypatch) as server:
        started = time.monotonic()
        report = send(people(count), rate=f"{rate}/s", concurrency=4)
        elapsed = time.monotonic() - started
    assert report.sent == count
    dots = sorted(server.times("DOT"))
    assert len(dots) == count
    # a per-second rate is paced evenly: message n goes (n - 1) / rate s after the first,
    # so no one-second span carries more than the rate
    first = dots[0]
    for n, at in enumerate(dots, start=1):
        assert at - first >= (n - 1) / rate - 0.1, f"message {n} came too early"
    for i, start in enumerate(dots):
        assert sum(1 for t in dots[i:] if t - start < 1.0) <= rate + 1
    assert dots[-1] - first >= (count - 1) / rate - 0.1
    assert elapsed < 6, "the limiter held messages back far longer than the rate asks"


def test_rate_per_minute_caps_a_burst(monkeypatch: pytest.MonkeyPatch) -> None:
    with fault_connection(monkeypatch) as server:
        started = time.monotonic()
        report = send(people(4), rate="120/min,2/s")
        elapsed = time.monotonic() - started
    assert report.sent == 4
    dots = sorted(server.times("DOT"))
    assert dots[-1] - dots[0] >= 1.4  # one every 0.5 s
    assert elapsed < 5


@pytest.mark.parametrize("concurrency", [1, 3])
def test_concurrency_is_the_number_of_simultaneous_sessions(
    monkeypatch: pytest.MonkeyPatch, concurrency: int
) -> None:
    # each message takes a little while, so every allowed session gets work
    with fault_connection(monkeypatch, faults={("DOT", "*"): "delay:0.01"}) as server:
        report = send(people(60), concurrency=concurrency)
    assert report.sent == 60
    assert server.peak_sessions == concurrency
    assert server.session_count == concurrency  # reused, not one per message
    assert sorted(len(v) for v in deliveries(server.messages).values()) == [1] * 60


def test_concurrency_against_postfix(monkeypatch: pytest.MonkeyPatch) -> None:
    with SmtpSink() as sink:
        use_server(monkeypatch, sink.port)
        report = send(people(80), concurrency=5)
    assert report.sent == 80
    assert sink.counters() == {"messages": 80, "sessions": 5}


def test_messages_per_connection_cap_opens_new_sessions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with fault_connection(monkeypatch) as server:
        report = send(people(10), messages_per_connection=3)
    final_rows(report.run_id, range(10))
    per_session = [
        sum(1 for m in server.messages if m.session == s.number) for s in server.sessions
    ]
    assert per_session == [3, 3, 3, 1]
    assert all(s.commands[-1] == "QUIT" for s in server.sessions)

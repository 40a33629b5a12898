"""Delivery against a misbehaving server: what each fault does to each row, in the journal.

Every test runs a real export (source → messages → runner → SMTP sessions → journal)
against the fault-injecting server, then checks each row's final state, attempts and
reply in the journal and the report, and what the server actually received.
"""

from __future__ import annotations

import itertools
import statistics
import time
from pathlib import Path

import pytest

from delivery_support import (
    FAST_RETRY,
    TimedFaultServer,
    assert_final,
    deliveries,
    fault_connection,
    final_rows,
    journal_rows,
    message_id,
    people,
    send,
    send_with_faults,
    use_server,
)
from mailconduit import api
from mailconduit.journal import RowStatus
from mailconduit.testing import free_port
from mailconduit.testing.certs import LocalCA

TRANSIENT = [
    "450 4.2.1 mailbox busy",
    "451 4.3.0 local error, try later",
    "452 4.3.1 insufficient storage",
]
PERMANENT = [
    "550 5.7.1 refused by policy",
    "552 5.3.4 message too big",
    "554 5.6.0 transaction failed",
]
COMMANDS = ["MAIL", "RCPT", "DATA", "DOT"]


def split(reply: str) -> tuple[int, str, str]:
    code, enhanced, text = reply.split(" ", 2)
    return int(code), enhanced, text


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("reply", TRANSIENT)
def test_4xx_is_retried_and_the_row_is_sent(
    monkeypatch: pytest.MonkeyPatch, command: str, reply: str
) -> None:
    server, report, rows = send_with_faults(monkeypatch, {(command, 2): reply}, people(3))
    assert_final(rows, range(3))
    assert report.status == "finished" and report.sent == 3 and report.ok
    assert [rows[k].attempts for k in "012"] == [1, 2, 1]
    assert all(r.state == "sent" and r.code == 250 for r in rows.values())
    # the failed attempt was not delivered; the retry was, once, with the row's Message-ID
    got = deliveries(server.messages)
    assert got == {f"user{i}@example.com": [rows[str(i)].message_id] for i in range(3)}
    assert server.count(command) == 4
    # a 4xx does not close the session (only 421 does): one session carried everything
    assert server.session_count == 1


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("reply", PERMANENT)
def test_5xx_fails_the_row_with_the_reply_and_is_not_retried(
    monkeypatch: pytest.MonkeyPatch, command: str, reply: str
) -> None:
    server, report, rows = send_with_faults(
        monkeypatch, {(command, 2): reply}, people(3),
        retry={"max_attempts": 5, "initial_delay": 0.01},
    )  # fmt: skip
    assert_final(rows, range(3))
    failed = rows["1"]
    code, enhanced, text = split(reply)
    assert (failed.state, failed.attempts) == ("failed", 1)
    assert (failed.code, failed.enhanced, failed.reply) == (code, enhanced, text)
    assert rows["0"].state == rows["2"].state == "sent"
    assert server.count(command) == 3  # no second try
    assert sorted(deliveries(server.messages)) == ["user0@example.com", "user2@example.com"]
    if command == "RCPT":
        assert failed.detail == (("user1@example.com", code, text),)
    # the report says the same, and a run with a failed row is not "ok"
    assert report.status == "finished" and report.failed == 1 and not report.ok
    [reported] = [r for r in report.rows() if r.row_key == "1"]
    assert (reported.state, reported.code, reported.reply) == ("failed", code, text)


def test_transient_failures_give_up_after_max_attempts_with_jittered_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ceiling = 0.15
    faults = {("RCPT", "*"): "451 4.3.0 try again later"}
    server, _report, rows = send_with_faults(
        monkeypatch, faults, people(6),
        retry={"max_attempts": 3, "initial_delay": ceiling, "max_delay": ceiling},
    )  # fmt: skip
    assert_final(rows, range(6))
    for row in rows.values():
        assert (row.state, row.attempts, row.code) == ("failed", 3, 451)
        assert row.reply == "gave up after 3 attempt(s): try again later"
    assert server.count("RCPT") == 18 and server.messages == []
    # back-off between one row's attempts: never above the ceiling, not always zero
    gaps: list[float] = []
    for i in range(6):
        at = [h.at for h in server.heard if h.line == f"RCPT TO:<user{i}@example.com>"]
        assert len(at) == 3
        gaps += [b - a for a, b in itertools.pairwise(at)]
    assert max(gaps) < ceiling + 0.25
    assert statistics.mean(gaps) > ceiling / 6


def test_time_budget_ends_retries_before_max_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    faults = {("MAIL", "*"): "451 4.3.0 try again later"}
    with fault_connection(monkeypatch, faults=faults):
        started = time.monotonic()
        report = send(
            people(2),
            retry={"max_attempts": 1000, "max_seconds": 0.5, "initial_delay": 0.05},
        )
        elapsed = time.monotonic() - started
    rows = journal_rows(report.run_id)
    assert {r.state for r in rows.values()} == {"failed"}
    assert all(2 <= r.attempts < 1000 for r in rows.values())
    assert elapsed < 5


@pytest.mark.parametrize("command", ["MAIL", "RCPT", "DATA"])
def test_421_closes_the_session_without_rset_and_slows_the_whole_pool(
    monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    faults = {(command, 3): "421 4.7.0 too many messages, slow down"}
    with fault_connection(monkeypatch, faults=faults) as server:
        started = time.monotonic()
        report = send(people(30), concurrency=2)
        elapsed = time.monotonic() - started
    rows = final_rows(report.run_id, range(30))
    assert report.sent == 30
    # the row hit by the 421 went again on a new session (a message already pipelined
    # behind it on the dying session may have needed a second attempt too)
    retried = {k for k, r in rows.items() if r.attempts == 2}
    assert 1 <= len(retried) <= 3 and all(r.attempts <= 2 for r in rows.values())
    # the session that got the 421 ended there: no RSET, no QUIT, nothing after it
    [hit] = [s for s in server.sessions if any(c.startswith(command) for c in s.commands)
             and s.commands[-1].startswith(command) and "QUIT" not in s.commands]  # fmt: skip
    assert hit.closed and "RSET" not in hit.commands
    assert sum(len(v) for v in deliveries(server.messages).values()) == 30
    # the pool slowed down: after the 421 the limiter paused every session
    t421 = server.times(command)[2]
    dots = server.times("DOT")
    soon = [t for t in dots if t421 < t < t421 + 1.0]
    assert len(soon) <= 8, "sessions kept sending at full speed after a 421"
    assert max(dots) - t421 > 1.5
    assert elapsed > 1.5


def test_4_7_x_throttling_reply_slows_the_pool_without_closing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    faults = {("MAIL", 3): "450 4.7.1 rate limited, slow down"}
    with fault_connection(monkeypatch, faults=faults) as server:
        report = send(people(20), concurrency=2)
    assert report.sent == 20
    t_throttle = server.times("MAIL")[2]
    assert max(server.times("DOT")) - t_throttle > 1.5
    assert all(s.closed and s.commands[-1] == "QUIT" for s in server.sessions)


def test_452_sends_to_the_accepted_recipients_and_retries_the_rest_in_a_new_transaction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows_in = [
        {"id": 0, "email": "a@example.com, b@example.com, c@example.com", "name": "Team"},
        {"id": 1, "email": "d@example.com", "name": "Dee"},
    ]
    faults = {("RCPT", 2): "452 4.5.3 too many recipients", ("RCPT", 3): "550 5.1.1 no such user"}
    server, report, rows = send_with_faults(monkeypatch, faults, rows_in)
    assert_final(rows, [0, 1])
    team = rows["0"]
    # a got it in the first transaction, b (deferred) in a second one, c never (refused)
    assert [m.rcpt_tos for m in server.messages if "Team" in m.data.decode()] == [
        ("a@example.com",),
        ("b@example.com",),
    ]
    copies = {message_id(m.data) for m in server.messages if "Team" in m.data.decode()}
    assert copies == {team.message_id}
    assert (team.state, team.attempts) == ("sent", 2)
    # the refusal of c survives the second transaction, per recipient
    assert team.detail == (("c@example.com", 550, "no such user"),)
    assert rows["1"].state == "sent"
    csv_text = report.to_csv()
    assert "c@example.com 550 no such user" in csv_text


def test_recipients_still_deferred_when_retries_run_out_are_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows_in = [{"id": 0, "email": "a@example.com, b@example.com", "name": "Pair"}]
    faults = {("RCPT", 2): "452 4.5.3 try b later", ("RCPT", 3): "452 4.5.3 try b later"}
    server, _, rows = send_with_faults(
        monkeypatch, faults, rows_in, retry={"max_attempts": 2, "initial_delay": 0.01}
    )
    row = rows["0"]
    assert [m.rcpt_tos for m in server.messages] == [("a@example.com",)]
    assert row.state == "failed" and row.reply.startswith("gave up after 2 attempt(s)")
    assert ("b@example.com", 452, "try b later") in row.detail


def test_when_no_recipient_is_accepted_only_the_deferred_ones_are_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows_in = [{"id": 0, "email": "a@example.com, b@example.com", "name": "Pair"}]
    faults = {("RCPT", 1): "550 5.1.1 a is gone", ("RCPT", 2): "452 4.5.3 b later"}
    server, _, rows = send_with_faults(monkeypatch, faults, rows_in)
    row = rows["0"]
    assert [m.rcpt_tos for m in server.messages] == [("b@example.com",)]
    assert server.count("RCPT") == 3  # a, b, then b alone
    assert (row.state, row.attempts) == ("sent", 2)
    assert row.detail == (("a@example.com", 550, "a is gone"),)


def test_partial_refusal_is_recorded_per_recipient(monkeypatch: pytest.MonkeyPatch) -> None:
    rows_in = [{"id": 7, "email": "a@example.com; b@example.com; c@example.com", "name": "X"}]
    faults = {("RCPT", 1): "550 5.1.1 a is gone", ("RCPT", 3): "553 5.1.3 bad c"}
    with fault_connection(monkeypatch, faults=faults) as server:
        report = send(rows_in)
    row = journal_rows(report.run_id)["7"]
    assert [m.rcpt_tos for m in server.messages] == [("b@example.com",)]
    assert row.state == "sent"
    assert row.detail == (("a@example.com", 550, "a is gone"), ("c@example.com", 553, "bad c"))
    [reported] = report.to_dict()["rows"]
    assert reported["refused_recipients"] == [
        {"recipient": "a@example.com", "code": 550, "reply": "a is gone"},
        {"recipient": "c@example.com", "code": 553, "reply": "bad c"},
    ]


def test_auth_535_aborts_the_run_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cret-Pa55"
    with TimedFaultServer(credentials={"alice": secret}, auth_mechanisms=["PLAIN"]) as server:
        use_server(monkeypatch, server.port, userinfo="alice:wrong-password",
                   allow_insecure_auth="true")  # fmt: skip
        report = send(people(40), concurrency=3)
        assert report.status == "aborted"
        assert "credentials" in report.message and "wrong-password" not in report.message
        assert server.count("MAIL") == 0 and server.messages == []
        assert server.count("AUTH") == 1  # the first session logs in alone: one refusal
        assert server.session_count == 1
        rows = journal_rows(report.run_id)
        assert not any(r.state in ("sent", "claimed", "failed") for r in rows.values())
        # the run can be resumed once the credentials are right: each row once
        use_server(monkeypatch, server.port, userinfo=f"alice:{secret}",
                   allow_insecure_auth="true")  # fmt: skip
        resumed = api.resume(report.run_id, source=people(40))
        assert resumed.status == "finished" and resumed.sent == 40
    got = deliveries(server.messages)
    assert sorted(len(v) for v in got.values()) == [1] * 40


def test_auth_535_on_a_later_session_stops_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    faults = {("AUTH", 2): "535 5.7.8 authentication credentials invalid"}
    with TimedFaultServer(
        credentials={"alice": "pw"}, auth_mechanisms=["PLAIN"], faults=faults
    ) as server:
        use_server(monkeypatch, server.port, userinfo="alice:pw", allow_insecure_auth="true")
        report = send(people(10), messages_per_connection=3)
    assert report.status == "aborted"
    assert server.count("MAIL") == 3 and server.count("AUTH") == 2
    rows = journal_rows(report.run_id)
    assert sorted(k for k, r in rows.items() if r.state == "sent") == ["0", "1", "2"]
    assert not any(r.state in ("claimed", "failed") for r in rows.values())


@pytest.mark.parametrize("command", ["MAIL", "RCPT", "DATA"])
def test_drop_before_the_final_dot_is_retried_without_duplicates(
    monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    server, report, rows = send_with_faults(monkeypatch, {(command, 2): "drop"}, people(4))
    assert_final(rows, range(4))
    assert report.sent == 4 and report.uncertain_resent == 0
    assert rows["1"].attempts == 2
    got = deliveries(server.messages)
    assert got == {f"user{i}@example.com": [rows[str(i)].message_id] for i in range(4)}
    assert server.session_count == 2


def test_drop_after_the_final_dot_resends_with_the_same_message_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, report, rows = send_with_faults(monkeypatch, {("DOT", 2): "drop"}, people(4))
    assert_final(rows, range(4))
    assert report.sent == 4
    assert report.uncertain_resent == 1
    assert "1 row(s) whose confirmation was lost were sent again" in report.summary()
    assert rows["1"].attempts == 2
    assert deliveries(server.messages)["user1@example.com"] == [rows["1"].message_id]


def test_no_resend_uncertain_holds_the_row_whose_confirmation_was_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with fault_connection(monkeypatch, faults={("DOT", 2): "drop"}) as server:
        report = send(people(4), resend_uncertain=False)
        rows = journal_rows(report.run_id)
        assert rows["1"].state == "uncertain" and "final '.'" in rows["1"].reply
        assert {rows[k].state for k in "023"} == {"sent"}
        assert report.counts.get("uncertain") == 1 and not report.ok
        assert server.count("DOT") == 4
        # resuming with the default sends it again, with the same Message-ID
        resumed = api.resume(report.run_id, source=people(4), resend_uncertain=True)
    assert resumed.uncertain_resent == 1
    rows = final_rows(report.run_id, range(4))
    assert deliveries(server.messages)["user1@example.com"] == [rows["1"].message_id]


def test_a_reply_slower_than_timeout_ms_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    with TimedFaultServer(faults={("MAIL", 2): "delay:1.5"}) as server:
        use_server(monkeypatch, server.port, timeout_ms=300)
        started = time.monotonic()
        report = send(people(3))
        elapsed = time.monotonic() - started
    rows = final_rows(report.run_id, range(3))
    assert report.sent == 3 and rows["1"].attempts == 2
    assert elapsed < 1.5, "the client waited for the slow reply instead of timing out"
    assert sorted(len(v) for v in deliveries(server.messages).values()) == [1, 1, 1]


def test_a_final_reply_slower_than_the_data_timeout_makes_the_row_uncertain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with TimedFaultServer(faults={("DOT", 2): "delay:1.5"}) as server:
        use_server(monkeypatch, server.port, timeout_ms=2000)
        report = send(people(3), data_timeout_ms=300)
    rows = final_rows(report.run_id, range(3))
    assert report.sent == 3 and report.uncertain_resent == 1
    copies = deliveries(server.messages)["user1@example.com"]
    assert 1 <= len(copies) <= 2 and set(copies) == {rows["1"].message_id}


def test_starttls_then_close_reconnects_and_delivers_over_tls(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ca = LocalCA(tmp_path)
    faults = {("STARTTLS", 1): "220 2.0.0 Ready to start TLS; drop"}
    with TimedFaultServer(
        starttls_context=ca.server_context("127.0.0.1"), require_starttls=True, faults=faults
    ) as server:
        use_server(monkeypatch, server.port, security="starttls", ca_file=ca.ca_file)
        report = send(people(3))
    rows = final_rows(report.run_id, range(3))
    assert report.sent == 3 and all(r.attempts == 1 for r in rows.values())
    first = server.sessions[0]
    assert first.commands[-1] == "STARTTLS" and first.closed and server.messages
    assert all(server.sessions[m.session - 1].tls for m in server.messages)


def test_a_server_that_cannot_be_reached_stops_the_run_resumably(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    use_server(monkeypatch, port, timeout_ms=1000)
    report = send(people(10), concurrency=4)
    assert report.status == "interrupted"
    assert "cannot open an SMTP session" in report.message
    rows = journal_rows(report.run_id)
    assert not any(r.state in ("sent", "failed", "claimed") for r in rows.values())
    with TimedFaultServer(port=port) as server:
        resumed = api.resume(report.run_id, source=people(10))
    assert resumed.status == "finished" and resumed.sent == 10
    assert sorted(len(v) for v in deliveries(server.messages).values()) == [1] * 10


def test_a_run_with_nothing_to_send_ends_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    rows_in = [{"id": i, "email": "not an address", "name": "Nobody"} for i in range(3)]
    with fault_connection(monkeypatch) as server:
        report = send(rows_in, concurrency=4)
    assert report.status == "finished" and report.counts.get("skipped") == 3
    assert server.count("MAIL") == 0


def test_every_row_ends_in_exactly_one_final_state(monkeypatch: pytest.MonkeyPatch) -> None:
    rows_in = people(12)
    rows_in[4]["email"] = "not an address"
    faults = {
        ("RCPT", 2): "550 5.1.1 no such user",
        ("MAIL", 4): "451 4.3.0 later",
        ("DATA", 6): "drop",
        ("DOT", 7): "554 5.6.0 rejected",
        ("RCPT", 9): "452 4.5.3 later",
        ("DOT", 10): "drop",
    }
    with fault_connection(monkeypatch, faults=faults) as server:
        # Two sessions share the numbered faults in whatever order they run, so one row
        # may meet three retryable ones: 7 attempts outlast all six faults, whichever
        # rows they hit (with 3, a row could give up, and one whose "." went unanswered
        # would rightly end "uncertain", not failed).
        report = send(rows_in, concurrency=2, retry={**FAST_RETRY, "max_attempts": 7})
    rows = final_rows(report.run_id, range(12))
    states = [rows[str(i)].state for i in range(12)]
    assert states.count(RowStatus.SKIPPED) == 1 and rows["4"].state == "skipped"
    assert sum(report.counts.get(s, 0) for s in ("sent", "failed", "skipped")) == 12
    assert report.counts.get("uncertain", 0) == 0
    got = deliveries(server.messages)
    sent = {f"user{k}@example.com" for k, r in rows.items() if r.state == "sent"}
    assert set(got) == sent  # every sent row reached the server, no other did
    for k, r in rows.items():
        if r.state == "sent":
            assert set(got[f"user{k}@example.com"]) == {r.message_id}

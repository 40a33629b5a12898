"""Faults: 4xx/5xx at every command, 421, drops before and after the final ".", timeouts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mailconduit.errors import (
    PermanentSMTPError,
    RecipientRefusedError,
    ThrottledError,
    TransientSMTPError,
)
from mailconduit.smtp import (
    DeliveryStatus,
    SendOutcome,
    SMTPSession,
    StreamEnd,
    StreamResult,
)
from mailconduit.smtp.replies import MalformedReplyError
from mailconduit.testing import (
    FaultServer,
    SmtpSink,
    loopback_connection,
    numbered_envelopes,
    run,
    stream_messages,
)


async def stream_all(
    port: int, count: int, *, timeout_ms: int = 2000, **options: Any
) -> tuple[StreamResult, list[SendOutcome]]:
    """Stream ``count`` numbered messages through one session to the server on ``port``."""
    conn = loopback_connection(port, timeout_ms=timeout_ms)
    (result,), outcomes = await stream_messages(conn, numbered_envelopes(count), **options)
    return result, outcomes


def faulty_stream(
    count: int, faults: dict[tuple[str, int], str], *, pipelining: bool = True, **options: Any
) -> tuple[StreamResult, list[SendOutcome], FaultServer]:
    """:func:`stream_all` through a FaultServer with ``faults``; the server, stopped, is handed
    back for what it recorded."""

    async def main() -> tuple[StreamResult, list[SendOutcome], FaultServer]:
        async with FaultServer(pipelining=pipelining, faults=faults) as server:
            result, outcomes = await stream_all(server.port, count, **options)
        return result, outcomes, server

    return run(main())


@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize(
    ("command", "reply", "status", "error"),
    [
        ("MAIL", "451 4.3.0 try later", DeliveryStatus.RETRY, TransientSMTPError),
        ("MAIL", "450 4.7.1 slow down please", DeliveryStatus.RETRY, ThrottledError),
        ("MAIL", "550 5.7.1 sender refused", DeliveryStatus.FAILED, PermanentSMTPError),
        ("RCPT", "452 4.5.3 too many recipients", DeliveryStatus.RETRY, TransientSMTPError),
        ("RCPT", "550 5.1.1 no such user", DeliveryStatus.FAILED, RecipientRefusedError),
        ("DATA", "451 4.3.0 later", DeliveryStatus.RETRY, TransientSMTPError),
        ("DATA", "554 5.7.1 no", DeliveryStatus.FAILED, PermanentSMTPError),
        ("DOT", "452 4.3.1 insufficient storage", DeliveryStatus.RETRY, TransientSMTPError),
        ("DOT", "552 5.3.4 message too big", DeliveryStatus.FAILED, PermanentSMTPError),
        ("DOT", "554 5.6.0 content rejected", DeliveryStatus.FAILED, PermanentSMTPError),
    ],
)
def test_reply_faults_at_every_command(
    pipelining: bool, command: str, reply: str, status: DeliveryStatus, error: type
) -> None:
    result, outcomes, server = faulty_stream(3, {(command, 2): reply}, pipelining=pipelining)
    assert result.reason is StreamEnd.SOURCE_EXHAUSTED
    assert [o.token for o in outcomes] == [0, 1, 2]
    assert [o.status for o in outcomes] == [DeliveryStatus.SENT, status, DeliveryStatus.SENT]
    failed = outcomes[1]
    assert type(failed.error) is error
    assert failed.code == int(reply[:3]) and failed.enhanced == reply.split()[1]
    assert failed.text == reply.split(" ", 2)[2]
    assert [m.rcpt_tos[0] for m in server.messages] == [
        "rcpt0@example.com",
        "rcpt2@example.com",
    ]
    assert server.session_count == 1


@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize("command", ["MAIL", "RCPT", "DATA", "DOT"])
def test_421_closes_the_session_without_rset(pipelining: bool, command: str) -> None:
    faults = {(command, 2): "421 4.7.0 too many messages, slow down"}
    result, outcomes, server = faulty_stream(4, faults, pipelining=pipelining)
    assert result.reason is StreamEnd.SERVER_CLOSING
    assert isinstance(result.error, ThrottledError) and result.error.code == 421
    by_token: dict[Any, SendOutcome] = {o.token: o for o in outcomes}
    assert by_token[0].sent
    assert by_token[1].status is DeliveryStatus.RETRY
    assert isinstance(by_token[1].error, ThrottledError)
    # whatever else was taken from the source got an outcome too, and nothing sent
    assert sorted(by_token) == list(range(result.messages))
    assert all(o.status is DeliveryStatus.RETRY for o in outcomes[1:])
    commands = server.sessions[0].commands
    assert "RSET" not in commands and "QUIT" not in commands
    assert len(server.messages) == 1


@pytest.mark.parametrize("pipelining", [True, False])
def test_drop_before_the_final_dot_means_retry(pipelining: bool) -> None:
    result, outcomes, _ = faulty_stream(3, {("RCPT", 2): "drop"}, pipelining=pipelining)
    assert result.reason is StreamEnd.CONNECTION_LOST
    assert outcomes[0].sent
    assert outcomes[1].status is DeliveryStatus.RETRY
    assert isinstance(outcomes[1].error, TransientSMTPError)
    assert "closed the connection" in outcomes[1].text
    assert len(outcomes) == result.messages


@pytest.mark.parametrize("pipelining", [True, False])
def test_drop_after_the_final_dot_means_uncertain(pipelining: bool) -> None:
    result, outcomes, _ = faulty_stream(4, {("DOT", 2): "drop"}, pipelining=pipelining)
    assert result.reason is StreamEnd.CONNECTION_LOST
    by_token: dict[Any, SendOutcome] = {o.token: o for o in outcomes}
    assert by_token[0].sent
    assert by_token[1].status is DeliveryStatus.UNCERTAIN
    assert "may have been delivered" in by_token[1].text
    assert isinstance(by_token[1].error, TransientSMTPError)
    # a message whose group was pipelined behind the dropped "." is only retried
    assert all(o.status is DeliveryStatus.RETRY for t, o in by_token.items() if t > 1)
    assert len(outcomes) == result.messages


def test_no_reply_to_the_dot_within_the_data_timeout_means_uncertain() -> None:
    async def main() -> None:
        async with FaultServer(faults={("DOT", 1): "hang"}) as server:
            loop = asyncio.get_running_loop()
            started = loop.time()
            result, outcomes = await stream_all(server.port, 2, data_timeout=0.3)
            elapsed = loop.time() - started
        assert outcomes[0].status is DeliveryStatus.UNCERTAIN
        assert "timed out after 0.3 s waiting for the reply to the end of DATA" in outcomes[0].text
        assert result.reason is StreamEnd.CONNECTION_LOST
        assert 0.25 < elapsed < 2.0

    run(main())


def test_the_data_timeout_defaults_to_rfc_5321s_ten_minutes() -> None:
    session = SMTPSession(loopback_connection(25, timeout_ms=2000))
    assert session.data_timeout == 600.0
    assert SMTPSession(loopback_connection(25, timeout_ms=900_000)).data_timeout == 900.0
    assert SMTPSession(loopback_connection(25), data_timeout=5).data_timeout == 5


def test_slow_reply_past_the_timeout_means_retry() -> None:
    result, outcomes, _ = faulty_stream(1, {("RCPT", 1): "delay:1.0"}, timeout_ms=300)
    assert result.reason is StreamEnd.CONNECTION_LOST
    (outcome,) = outcomes
    assert outcome.status is DeliveryStatus.RETRY
    assert "timed out after 0.3 s waiting for the reply to RCPT TO" in outcome.text


def test_garbage_reply_is_a_protocol_error() -> None:
    result, outcomes, _ = faulty_stream(2, {("MAIL", 1): "garbage"}, timeout_ms=30_000)
    assert result.reason is StreamEnd.CONNECTION_LOST
    assert isinstance(result.error, TransientSMTPError)
    assert isinstance(result.error.__cause__, MalformedReplyError)
    assert "not an SMTP reply" in result.error.reply
    assert outcomes[0].status is DeliveryStatus.RETRY


def test_every_message_in_flight_gets_exactly_one_outcome_on_a_drop() -> None:
    async def main() -> None:
        async with FaultServer(faults={("DOT", 25): "drop"}) as server:
            conn = loopback_connection(server.port)
            results, outcomes = await stream_messages(conn, numbered_envelopes(100), sessions=3)
        taken = sum(r.messages for r in results)
        tokens = [o.token for o in outcomes]
        assert len(tokens) == len(set(tokens)) == taken
        lost = [r for r in results if r.reason is StreamEnd.CONNECTION_LOST]
        assert len(lost) == 1
        uncertain = [o for o in outcomes if o.status is DeliveryStatus.UNCERTAIN]
        assert len(uncertain) == 1
        sent = {o.token for o in outcomes if o.sent}
        assert len(sent) == len(server.messages)
        # the other sessions carried on to the end of the source
        assert taken == 100

    run(main())


@pytest.mark.postfix
@pytest.mark.parametrize(
    ("options", "status", "reason"),
    [
        (["-Q", "rcpt"], DeliveryStatus.RETRY, StreamEnd.SERVER_CLOSING),
        (["-q", "data"], DeliveryStatus.RETRY, StreamEnd.CONNECTION_LOST),
        (["-q", "."], DeliveryStatus.UNCERTAIN, StreamEnd.CONNECTION_LOST),
        (["-r", "mail"], DeliveryStatus.RETRY, StreamEnd.SOURCE_EXHAUSTED),
        (["-f", "rcpt"], DeliveryStatus.FAILED, StreamEnd.SOURCE_EXHAUSTED),
        (["-f", "."], DeliveryStatus.FAILED, StreamEnd.SOURCE_EXHAUSTED),
    ],
)
def test_postfix_smtp_sink_faults(
    options: list[str], status: DeliveryStatus, reason: StreamEnd
) -> None:
    with SmtpSink(options) as sink:
        result, outcomes = run(stream_all(sink.port, 2, timeout_ms=3000))
    assert result.reason is reason
    assert outcomes[0].status is status
    assert len(outcomes) == result.messages
    if status is not DeliveryStatus.SENT:
        assert outcomes[0].error is not None

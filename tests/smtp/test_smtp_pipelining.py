"""Streaming many messages through pipelined sessions (RFC 2920 across transactions)."""

from __future__ import annotations

import asyncio

import pytest

from mailconduit.errors import SMTPError
from mailconduit.smtp import (
    DeliveryStatus,
    Envelope,
    MessageSource,
    SendOutcome,
    SMTPSession,
    StreamEnd,
    Transcript,
)
from mailconduit.testing import (
    FaultServer,
    SmtpSink,
    loopback_connection,
    message_source,
    numbered_envelopes,
    run,
    stream_messages,
)


def test_stream_costs_one_write_per_message() -> None:
    async def main() -> None:
        async with FaultServer() as server:
            transcript = Transcript()
            conn = loopback_connection(server.port)
            (result,), outcomes = await stream_messages(
                conn, numbered_envelopes(20), transcript=transcript
            )
            assert result.reason is StreamEnd.SOURCE_EXHAUSTED and result.messages == 20
            assert result.error is None
        assert [o.token for o in outcomes] == list(range(20))
        assert all(o.status is DeliveryStatus.SENT for o in outcomes)
        assert [m.rcpt_tos[0] for m in server.messages] == [
            f"rcpt{i}@example.com" for i in range(20)
        ]
        # the server saw MAIL, RCPT and DATA in one read, and from the second message
        # on, the previous message's "." arrived with the next MAIL in the same read
        reads = server.sessions[0].reads
        groups = [r for r in reads if b"MAIL FROM:" in r]
        assert len(groups) == 20
        assert all(b"RCPT TO:" in r and r.endswith(b"DATA\r\n") for r in groups)
        assert sum(1 for r in groups if b"\r\n.\r\nMAIL FROM:" in r) == 19
        assert max(server.sessions[0].commands_per_read()) >= 3
        assert not any(line == "C: RSET" for line in transcript.lines)

    run(main())


def test_content_is_never_held_back_waiting_for_the_next_message() -> None:
    async def main() -> None:
        async with FaultServer() as server:
            source: MessageSource = asyncio.Queue()
            outcomes: list[SendOutcome] = []
            async with SMTPSession(loopback_connection(server.port)) as session:
                task = asyncio.create_task(session.stream(source, outcomes.append))
                first, second = numbered_envelopes(2)
                source.put_nowait(first)
                # the first message is delivered although no second one is ready
                await server.wait_for(lambda: len(outcomes) == 1, timeout=5)
                assert outcomes[0].sent and len(server.messages) == 1
                source.put_nowait(second)
                await server.wait_for(lambda: len(outcomes) == 2, timeout=5)
                source.put_nowait(None)
                result = await task
            assert result.reason is StreamEnd.SOURCE_EXHAUSTED and result.messages == 2

    run(main())


def test_failed_data_is_followed_by_rset_in_the_next_group() -> None:
    faults = {("DATA", 2): "554 5.7.1 not today", ("MAIL", 4): "451 4.3.0 busy"}

    async def main() -> None:
        async with FaultServer(faults=faults) as server:
            _, outcomes = await stream_messages(
                loopback_connection(server.port), numbered_envelopes(5)
            )
        statuses = [o.status for o in outcomes]
        assert statuses == [
            DeliveryStatus.SENT,
            DeliveryStatus.FAILED,
            DeliveryStatus.SENT,
            DeliveryStatus.RETRY,
            DeliveryStatus.SENT,
        ]
        assert (outcomes[1].code, outcomes[1].enhanced, outcomes[1].text) == (
            554,
            "5.7.1",
            "not today",
        )
        assert isinstance(outcomes[1].error, SMTPError) and outcomes[1].error.command == "DATA"
        assert outcomes[3].code == 451 and outcomes[3].error is not None
        commands = server.sessions[0].commands
        third_mail = [i for i, c in enumerate(commands) if c.startswith("MAIL")][2]
        assert commands[third_mail - 1] == "RSET"
        assert [m.rcpt_tos[0] for m in server.messages] == [
            "rcpt0@example.com",
            "rcpt2@example.com",
            "rcpt4@example.com",
        ]

    run(main())


def test_all_recipients_refused_but_354_sends_only_the_dot() -> None:
    # a server that answers 354 although it refused every RCPT (RFC 2920 says it should
    # not): we must send an empty message, never the content, and report a failure
    async def main() -> None:
        async with FaultServer(faults={("RCPT", 2): "550 5.1.1 unknown"}) as server:
            outcomes: list[SendOutcome] = []
            async with SMTPSession(loopback_connection(server.port)) as session:
                items = numbered_envelopes(3)
                source = message_source(items)
                # aiosmtpd refuses DATA without recipients; make it answer 354 anyway
                server.set_fault("DATA", 2, "354 go ahead anyway")
                await session.stream(source, outcomes.append)
            assert [o.status for o in outcomes] == [
                DeliveryStatus.SENT,
                DeliveryStatus.FAILED,
                DeliveryStatus.SENT,
            ]
            assert outcomes[1].refused_recipients == ("rcpt1@example.com",)
            reads = b"".join(server.sessions[0].reads)
            assert b"body of message 1" not in reads
            assert [m.rcpt_tos[0] for m in server.messages] == [
                "rcpt0@example.com",
                "rcpt2@example.com",
            ]

    run(main())


def test_messages_per_connection_cap() -> None:
    async def main() -> None:
        async with FaultServer() as server:
            source = message_source(numbered_envelopes(7))
            outcomes: list[SendOutcome] = []
            results = []
            while True:
                async with SMTPSession(
                    loopback_connection(server.port), messages_per_connection=3
                ) as session:
                    result = await session.stream(source, outcomes.append)
                    results.append(result.reason)
                    if result.reason is StreamEnd.SOURCE_EXHAUSTED:
                        break
                    assert result.reason is StreamEnd.CAP_REACHED and not session.is_open
            assert results == [
                StreamEnd.CAP_REACHED,
                StreamEnd.CAP_REACHED,
                StreamEnd.SOURCE_EXHAUSTED,
            ]
            assert server.session_count == 3
            assert [s.commands.count("QUIT") for s in server.sessions] == [1, 1, 1]
            per_session = [
                sum(1 for m in server.messages if m.session == s.number) for s in server.sessions
            ]
            assert per_session == [3, 3, 1]
            assert sorted(o.token for o in outcomes) == list(range(7))  # type: ignore[type-var]

    run(main())


def test_sessions_share_one_source_and_every_message_gets_one_outcome() -> None:
    async def main() -> None:
        async with FaultServer() as server:
            conn = loopback_connection(server.port)
            results, outcomes = await stream_messages(conn, numbered_envelopes(60), sessions=4)
        assert sum(r.messages for r in results) == 60
        assert all(r.reason is StreamEnd.SOURCE_EXHAUSTED for r in results)
        assert sorted(o.token for o in outcomes) == list(range(60))  # type: ignore[type-var]
        assert len(server.messages) == 60
        assert server.session_count == 4

    run(main())


def test_invalid_message_in_the_stream_fails_alone() -> None:
    async def main() -> None:
        async with FaultServer(size_limit=2000) as server:
            items = numbered_envelopes(3)
            big = Envelope("sender@example.com", ("big@example.com",), b"x" * 3000, token="big")
            outcomes: list[SendOutcome] = []
            async with SMTPSession(loopback_connection(server.port)) as session:
                result = await session.stream(
                    message_source([items[0], big, items[1], items[2]]), outcomes.append
                )
        assert result.messages == 4
        by_token = {o.token: o for o in outcomes}
        assert by_token["big"].status is DeliveryStatus.FAILED
        assert "SIZE" in str(by_token["big"].error)
        assert [by_token[i].status for i in range(3)] == [DeliveryStatus.SENT] * 3
        assert len(server.messages) == 3

    run(main())


def test_a_failing_outcome_callback_is_raised_and_ends_the_session() -> None:
    async def main() -> None:
        async with FaultServer() as server:
            seen: list[SendOutcome] = []

            def explode(outcome: SendOutcome) -> None:
                seen.append(outcome)
                raise ValueError("bug in the caller")

            session = SMTPSession(loopback_connection(server.port))
            await session.connect()
            with pytest.raises(ValueError, match="bug in the caller"):
                await session.stream(message_source(numbered_envelopes(3)), explode)
            assert not session.is_open and len(seen) == 1

    run(main())


@pytest.mark.postfix
def test_many_messages_through_smtp_sink_over_four_sessions() -> None:
    with SmtpSink() as sink:

        async def main() -> list[SendOutcome]:
            conn = loopback_connection(sink.port)
            _, outcomes = await stream_messages(conn, numbered_envelopes(400), sessions=4)
            return outcomes

        outcomes = run(main())
    assert len(outcomes) == 400 and all(o.sent for o in outcomes)
    assert sink.counters() == {"messages": 400, "sessions": 4}


def test_no_command_or_second_stream_interleaves_with_a_stream() -> None:
    async def main() -> None:
        async with FaultServer() as server:
            source: MessageSource = asyncio.Queue()
            async with SMTPSession(loopback_connection(server.port)) as session:
                task = asyncio.create_task(session.stream(source, lambda outcome: None))
                await asyncio.sleep(0.01)
                with pytest.raises(RuntimeError):
                    await session.noop()
                with pytest.raises(RuntimeError):
                    await session.send("a@example.com", ["b@example.com"], b"x\r\n")
                source.put_nowait(None)
                assert (await task).messages == 0
                assert (await session.noop()).code == 250

    run(main())

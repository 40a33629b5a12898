"""The SMTP session against real servers: our fault server (aiosmtpd) and Postfix's smtp-sink."""

from __future__ import annotations

import asyncio
import ipaddress
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailconduit.errors import AddressError, ConfigError, RowError, TransientSMTPError
from mailconduit.smtp import (
    DeliveryStatus,
    RecipientStatus,
    SMTPSession,
    Stage,
    Transcript,
)
from mailconduit.testing import FaultServer, SmtpSink, loopback_connection, run

MESSAGE = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nHello.\r\n"


def test_send_one_message_and_read_capabilities() -> None:
    async def main() -> None:
        async with (
            FaultServer(size_limit=100_000) as server,
            SMTPSession(loopback_connection(server.port)) as session,
        ):
            assert (session.stage, session.is_open) == (Stage.READY, True)
            caps = session.capabilities
            assert caps.pipelining and caps.smtputf8 and caps.eightbitmime
            assert caps.size == 100_000
            assert session.banner.startswith("mx.mailconduit.test")
            outcome = await session.send("a@example.com", ["b@example.com"], MESSAGE, token="row-1")
        assert outcome.sent and outcome.status is DeliveryStatus.SENT
        assert outcome.token == "row-1" and outcome.code == 250 and outcome.error is None
        assert outcome.accepted_recipients == ("b@example.com",)
        assert (session.stage, session.is_open) == (Stage.CLOSED, False)
        (received,) = server.messages
        assert received.data == MESSAGE
        assert received.rcpt_tos == ("b@example.com",)
        assert f"SIZE={len(MESSAGE) + 3}" in received.mail_options
        assert server.sessions[0].commands[-1] == "QUIT"

    run(main())


def test_partial_refusal_is_data_not_an_exception() -> None:
    faults = {("RCPT", 2): "550 5.1.1 no such user", ("RCPT", 3): "452 4.5.3 too many recipients"}

    async def main() -> None:
        async with (
            FaultServer(faults=faults) as server,
            SMTPSession(loopback_connection(server.port)) as session,
        ):
            outcome = await session.send(
                "a@example.com",
                ["ok@example.com", "gone@example.com", "later@example.com"],
                MESSAGE,
            )
        assert outcome.status is DeliveryStatus.SENT
        assert outcome.accepted_recipients == ("ok@example.com",)
        assert outcome.refused_recipients == ("gone@example.com",)
        assert outcome.deferred_recipients == ("later@example.com",)
        refused = outcome.recipients[1]
        assert (refused.status, refused.code, refused.enhanced, refused.text) == (
            RecipientStatus.REFUSED,
            550,
            "5.1.1",
            "no such user",
        )
        assert server.messages[0].rcpt_tos == ("ok@example.com",)

    run(main())


def test_every_recipient_refused_fails_the_row_and_deferred_ones_retry() -> None:
    async def main() -> None:
        async with (
            FaultServer(faults={("RCPT", "*"): "550 5.1.1 no such user"}) as server,
            SMTPSession(loopback_connection(server.port)) as session,
        ):
            refused = await session.send("a@example.com", ["x@example.com"], MESSAGE)
            server.set_fault("RCPT", "*", "452 4.2.2 mailbox full")
            deferred = await session.send("a@example.com", ["y@example.com"], MESSAGE)
        assert refused.status is DeliveryStatus.FAILED
        assert type(refused.error).__name__ == "RecipientRefusedError"
        assert deferred.status is DeliveryStatus.RETRY
        assert deferred.deferred_recipients == ("y@example.com",)
        assert not server.messages
        # after the failed transaction the next one starts with RSET
        assert "RSET" in server.sessions[0].commands

    run(main())


def test_envelope_injection_is_refused_before_anything_is_written() -> None:
    async def main() -> None:
        async with (
            FaultServer() as server,
            SMTPSession(loopback_connection(server.port)) as session,
        ):
            reads_before = list(server.sessions[0].reads)
            for evil in (
                "x@example.com>\r\nRCPT TO:<spy@evil.example",
                "a b@example.com",
                "x@y\n",
            ):
                with pytest.raises(AddressError):
                    await session.send("a@example.com", [evil], MESSAGE)
                with pytest.raises(AddressError):
                    await session.send(evil, ["b@example.com"], MESSAGE)
            await asyncio.sleep(0.05)
            assert server.sessions[0].reads == reads_before
            assert (await session.noop()).code == 250
        assert not any("evil" in c or "spy" in c for c in server.sessions[0].commands)

    run(main())


def test_message_over_the_advertised_size_is_refused_before_mail() -> None:
    async def main() -> None:
        async with (
            FaultServer(size_limit=1000) as server,
            SMTPSession(loopback_connection(server.port)) as session,
        ):
            with pytest.raises(RowError, match=r"accepts at most 1000 bytes \(SIZE\)"):
                await session.send(
                    "a@example.com", ["b@example.com"], b"x" * 600 + b"\r\n" + b"y" * 600
                )
            assert (await session.send("a@example.com", ["b@example.com"], MESSAGE)).sent
        assert [c.split()[0] for c in server.sessions[0].commands].count("MAIL") == 1

    run(main())


def test_smtputf8_is_used_when_offered_and_a_row_error_when_not() -> None:
    data = "From: zoë@exämple.com\r\nSubject: hé\r\n\r\nbödy\r\n".encode()

    async def main() -> None:
        async with (
            FaultServer(smtputf8=True) as server,
            SMTPSession(loopback_connection(server.port)) as session,
        ):
            outcome = await session.send("zoë@example.com", ["jürgen@example.com"], data)
            assert outcome.sent
            (received,) = server.messages
            assert received.smtputf8 and received.data == data
            assert received.rcpt_tos == ("jürgen@example.com",)
            assert "BODY=8BITMIME" in received.mail_options
        async with (
            FaultServer(smtputf8=False) as server,
            SMTPSession(loopback_connection(server.port)) as session,
        ):
            with pytest.raises(AddressError, match="does not offer SMTPUTF8") as info:
                await session.send("a@example.com", ["jürgen@example.com"], data)
            assert info.value.address == "jürgen@example.com"
            # an ASCII envelope with 8-bit content still goes out (8BITMIME)
            assert (await session.send("a@example.com", ["b@example.com"], data)).sent
            assert [m.rcpt_tos for m in server.messages] == [("b@example.com",)]
        async with (
            FaultServer(smtputf8=False, eightbitmime=False) as server,
            SMTPSession(loopback_connection(server.port)) as session,
        ):
            with pytest.raises(RowError, match="8BITMIME"):
                await session.send("a@example.com", ["b@example.com"], data)

    run(main())


SMUGGLING = [
    b"Subject: x\r\n\r\n.\r\nMAIL FROM:<evil@example.com>\r\n",
    b"Subject: x\r\n\r\nline\n.\nRCPT TO:<evil@example.com>\n",
    b"Subject: x\r\n\r\nline\r.\rDATA\r",
    b"Subject: x\r\n\r\n..\r\n...\r\n.\r\n",
    b".starts with a dot\r\n",
]


@pytest.mark.parametrize("pipelining", [True, False])
def test_no_body_can_end_data_early(pipelining: bool) -> None:
    from mailconduit.smtp.esmtp import normalise_line_endings

    async def main() -> None:
        async with (
            FaultServer(pipelining=pipelining) as server,
            SMTPSession(loopback_connection(server.port)) as session,
        ):
            for data in SMUGGLING:
                assert (await session.send("a@example.com", ["b@example.com"], data)).sent
        assert len(server.messages) == len(SMUGGLING)
        for data, received in zip(SMUGGLING, server.messages, strict=True):
            expected = normalise_line_endings(data)
            assert received.data == (expected if expected.endswith(b"\r\n") else expected + b"\r\n")
            assert received.mail_from == "a@example.com" and received.rcpt_tos == ("b@example.com",)
        commands = [c.split(":")[0] for s in server.sessions for c in s.commands]
        assert commands.count("MAIL FROM") == len(SMUGGLING)

    run(main())


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.one_of(
            st.text(alphabet="ab. \t", max_size=30).map(str.encode),
            st.sampled_from([b"\r\n", b"\n", b"\r", b"\r\n.\r\n", b".\r\n", b"\r.\r", b"\n.\n"]),
        ),
        max_size=25,
    ).map(b"".join)
)
def test_any_body_round_trips_through_a_real_server(body: bytes) -> None:
    from mailconduit.smtp.esmtp import normalise_line_endings

    async def main() -> bytes:
        async with (
            FaultServer() as server,
            SMTPSession(loopback_connection(server.port)) as session,
        ):
            assert (await session.send("a@example.com", ["b@example.com"], body)).sent
            return server.messages[0].data

    received = run(main())
    expected = normalise_line_endings(body)
    if expected and not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert received == expected


def test_lockstep_when_the_server_does_not_pipeline() -> None:
    async def main() -> None:
        async with (
            FaultServer(pipelining=False, faults={("RCPT", 2): "550 5.1.1 unknown"}) as server,
            SMTPSession(loopback_connection(server.port)) as session,
        ):
            assert not session.capabilities.pipelining
            outcome = await session.send(
                "a@example.com", ["b@example.com", "c@example.com"], MESSAGE
            )
            second = await session.send("a@example.com", ["d@example.com"], MESSAGE)
        assert outcome.sent and outcome.refused_recipients == ("c@example.com",)
        assert second.sent
        # one command per read: nothing was pipelined
        assert max(server.sessions[0].commands_per_read()[:-1]) == 1

    run(main())


def test_rset_noop_quit_and_transcript() -> None:
    async def main() -> None:
        transcript = Transcript()
        async with (
            FaultServer() as server,
            SMTPSession(loopback_connection(server.port), transcript=transcript) as session,
        ):
            assert (await session.rset()).code == 250
            assert (await session.noop()).code == 250
            assert (await session.send("a@example.com", ["b@example.com"], MESSAGE)).sent
        lines = transcript.lines
        assert lines[0].startswith("-- connected to 127.0.0.1:")
        assert lines[1].startswith("S: 220 ")
        assert "C: RSET" in lines and "C: NOOP" in lines and "C: QUIT" in lines
        assert f"C: <{len(MESSAGE)} bytes of message data>" in lines
        assert not any("Hello." in line for line in lines)  # content is only summarised

    run(main())


def test_helo_fallback_only_without_tls() -> None:
    async def main() -> None:
        async with (
            FaultServer(faults={("EHLO", 1): "502 5.5.2 what is EHLO"}) as server,
            SMTPSession(loopback_connection(server.port)) as session,
        ):
            assert not session.capabilities.esmtp
            assert not session.capabilities.pipelining
            assert (await session.send("a@example.com", ["b@example.com"], MESSAGE)).sent
            assert server.sessions[0].commands[:2] == ["EHLO [127.0.0.1]", "HELO [127.0.0.1]"]

    run(main())


def test_ehlo_hostname_is_used() -> None:
    async def main() -> None:
        async with FaultServer() as server:
            conn = loopback_connection(server.port, ehlo_hostname="client.example.org")
            async with SMTPSession(conn):
                pass
            assert server.sessions[0].commands[0] == "EHLO client.example.org"

    run(main())


def test_greeting_timeout_names_the_stage_and_is_honoured() -> None:
    async def main() -> None:
        async with FaultServer(faults={("BANNER", "*"): "hang"}) as server:
            session = SMTPSession(loopback_connection(server.port, timeout_ms=400))
            started = time.monotonic()
            with pytest.raises(
                TransientSMTPError, match=r"timed out after 0\.4 s waiting for the greeting"
            ):
                await session.connect()
            assert time.monotonic() - started >= 0.35  # it waited for the timeout
            assert session.stage is Stage.BANNER

    run(main())


def test_slow_reply_past_the_timeout_and_within_it() -> None:
    async def main() -> None:
        async with FaultServer(
            faults={("EHLO", 1): "delay:0.3", ("EHLO", 2): "delay:1.0"}
        ) as server:
            async with SMTPSession(loopback_connection(server.port, timeout_ms=600)) as session:
                assert session.is_open
            session = SMTPSession(loopback_connection(server.port, timeout_ms=600))
            with pytest.raises(TransientSMTPError, match="waiting for the reply to EHLO"):
                await session.connect()

    run(main())


def test_unresolvable_host_refused_port_and_address_policy() -> None:
    async def main() -> None:
        conn = loopback_connection(25, server_url="no-such-host.invalid")
        with pytest.raises(ConfigError, match="does not resolve"):
            await SMTPSession(conn).connect()
        closed = SMTPSession(loopback_connection(_closed_port()))
        with pytest.raises(TransientSMTPError, match="connection refused") as info:
            await closed.connect()
        assert isinstance(info.value.__cause__, ConnectionRefusedError)
        assert closed.stage is Stage.TCP
        async with FaultServer() as server:
            checked: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []

            def deny_loopback(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
                checked.append(ip)
                return not ip.is_loopback

            policy_session = SMTPSession(
                loopback_connection(server.port, server_url="localhost"),
                allow_address=deny_loopback,
            )
            with pytest.raises(ConfigError, match="not allowed by the network policy"):
                await policy_session.connect()
            assert checked and server.session_count == 0  # refused before connecting
            allowed = SMTPSession(loopback_connection(server.port), allow_address=lambda ip: True)
            await allowed.connect()
            assert allowed.peer == ("127.0.0.1", server.port)
            await allowed.quit()

    run(main())


def _closed_port() -> int:
    from mailconduit.testing import free_port

    return free_port()


def test_session_connects_once_and_refuses_use_when_closed() -> None:
    async def main() -> None:
        async with FaultServer() as server:
            session = SMTPSession(loopback_connection(server.port))
            with pytest.raises(TransientSMTPError, match="not open"):
                await session.send("a@example.com", ["b@example.com"], MESSAGE)
            await session.connect()
            with pytest.raises(RuntimeError):
                await session.connect()
            await session.quit()
            with pytest.raises(TransientSMTPError, match="not open"):
                await session.send("a@example.com", ["b@example.com"], MESSAGE)

    run(main())


@pytest.mark.postfix
def test_against_postfix_smtp_sink() -> None:
    with SmtpSink(dump=True) as sink:

        async def main() -> None:
            async with SMTPSession(loopback_connection(sink.port)) as session:
                assert (
                    session.capabilities.pipelining and session.capabilities.enhanced_status_codes
                )
                for index, data in enumerate(SMUGGLING):
                    outcome = await session.send("a@example.com", [f"r{index}@example.com"], data)
                    assert outcome.sent and outcome.enhanced == "2.0.0"

        run(main())
    assert sink.counters()["messages"] == len(SMUGGLING)
    dumps = sink.dumped()
    assert len(dumps) == len(SMUGGLING)
    joined = b"".join(dumps)
    assert joined.count(b"X-Mail-Args: <a@example.com>") == len(SMUGGLING)
    # no smuggled command became a command: it stayed message data
    assert b"X-Rcpt-Args: <evil@example.com>" not in joined
    assert b"\nMAIL FROM:<evil@example.com>\n" in joined
    assert b"\n..\n...\n.\n" in joined  # the dots arrived as data, unstuffed


def test_ipv6_loopback_and_host_names_with_several_addresses() -> None:
    async def main() -> None:
        async with (
            FaultServer(host="::1") as server,
            SMTPSession(loopback_connection(server.port, server_url="::1")) as session,
        ):
            assert session.peer == ("::1", server.port)
            assert (await session.send("a@example.com", ["b@example.com"], MESSAGE)).sent
        assert server.sessions[0].commands[0] == "EHLO [IPv6:::1]"
        # "localhost" may resolve to ::1 first: the session tries each address in turn
        async with (
            FaultServer() as server,
            SMTPSession(loopback_connection(server.port, server_url="localhost")) as session,
        ):
            assert session.peer == ("127.0.0.1", server.port)

    run(main())

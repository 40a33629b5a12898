"""The fault-injecting test server itself, driven by the standard library's smtplib."""

from __future__ import annotations

import smtplib
import socket
import time

import pytest

from mailconduit.testing import Fault, FaultServer


def test_thread_mode_records_messages_and_sessions() -> None:
    with FaultServer(credentials={"u": "p"}, size_limit=5000) as server:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=5) as client:
            client.ehlo("client.example")
            assert client.has_extn("pipelining") and client.has_extn("smtputf8")
            assert client.has_extn("size") and "PLAIN" in client.esmtp_features["auth"]
            client.login("u", "p")
            refused = client.sendmail(
                "a@example.com", ["b@example.com"], b"Subject: x\r\n\r\nhi\r\n"
            )
            assert refused == {}
        server.wait_for_sync(lambda: len(server.sessions) == 1 and server.sessions[0].closed)
    (message,) = server.messages
    assert message.mail_from == "a@example.com" and message.data == b"Subject: x\r\n\r\nhi\r\n"
    assert server.sessions[0].authenticated_as == "u"
    assert server.sessions[0].commands[0] == "EHLO client.example"
    assert server.occurrences["MAIL"] == 1 and server.occurrences["DOT"] == 1


def test_auth_is_required_when_credentials_are_set() -> None:
    with (
        FaultServer(credentials={"u": "p"}) as server,
        smtplib.SMTP("127.0.0.1", server.port, timeout=5) as client,
    ):
        with pytest.raises(smtplib.SMTPSenderRefused) as info:
            client.sendmail("a@example.com", ["b@example.com"], b"x")
        assert info.value.smtp_code == 530
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("u", "wrong")


def test_faults_count_occurrences_across_sessions() -> None:
    faults = {("RCPT", 2): "550 5.1.1 second recipient refused", ("MAIL", "*"): "delay:0.05"}
    with FaultServer(faults=faults) as server:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=5) as client:
            assert client.sendmail("a@example.com", ["b@example.com"], b"x") == {}
        # the second session's RCPT is the second occurrence of the server's life
        with smtplib.SMTP("127.0.0.1", server.port, timeout=5) as client:
            with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
                client.sendmail("a@example.com", ["c@example.com"], b"x")
            assert info.value.recipients["c@example.com"][0] == 550
        assert server.occurrences["RCPT"] == 2 and server.occurrences["MAIL"] == 2
    assert [m.rcpt_tos for m in server.messages] == [("b@example.com",)]


def test_421_reply_closes_the_connection_and_drop_closes_silently() -> None:
    with FaultServer(faults={("MAIL", 1): "421 4.7.0 bye", ("MAIL", 2): "drop"}) as server:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=5) as client:
            client.ehlo()
            assert client.docmd("MAIL FROM:<a@example.com>") == (421, b"4.7.0 bye")
            with pytest.raises(smtplib.SMTPServerDisconnected):
                client.docmd("NOOP")
        with smtplib.SMTP("127.0.0.1", server.port, timeout=5) as client:
            client.ehlo()
            with pytest.raises(smtplib.SMTPServerDisconnected):
                client.docmd("MAIL FROM:<a@example.com>")


def test_banner_hang_garbage_and_delay() -> None:
    faults = {("BANNER", 1): "hang", ("BANNER", 2): "garbage", ("BANNER", 3): "delay:0.3"}
    with FaultServer(faults=faults) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.settimeout(0.3)
            with pytest.raises(TimeoutError):
                sock.recv(100)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            assert sock.recv(100).startswith(b"\x15\x03\x03")
        started = time.monotonic()
        with smtplib.SMTP("127.0.0.1", server.port, timeout=5) as client:
            assert client.noop()[0] == 250
        assert time.monotonic() - started >= 0.3
    assert server.session_count == 3


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty"),
        ("drop; 250 ok", "nothing can follow"),
        ("frobnicate", "cannot understand"),
        ("delay:-1", "negative"),
    ],
)
def test_bad_fault_specs_are_refused(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Fault.parse(spec)


def test_unknown_commands_and_occurrences_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown command"):
        FaultServer(faults={("HELLO", 1): "drop"})
    with pytest.raises(ValueError, match="occurrence"):
        FaultServer(faults={("MAIL", 0): "drop"})
    with pytest.raises(ValueError, match="loopback"):
        FaultServer(host="0.0.0.0")
    steps = Fault.parse("delay:1.5; 451 4.3.0 later").steps
    assert [(s.kind, s.seconds, s.value) for s in steps] == [
        ("delay", 1.5, ""),
        ("reply", 0.0, "451 4.3.0 later"),
    ]

"""Helpers shared by the sink tests: a real smtplib client logged in to this home's sink."""

from __future__ import annotations

import contextlib
import re
import secrets
import smtplib
import ssl
from collections.abc import Iterator, Sequence

import pytest

from mailconduit.sink import local_connection
from mailconduit.testing.postfix import free_port


def configure_sink_port(monkeypatch: pytest.MonkeyPatch) -> int:
    """A free port, set as this home's sink port for the test (never 1025 in tests)."""
    port = free_port()
    monkeypatch.setenv("MAILCONDUIT_SINK_PORT", str(port))
    return port


def tls_context() -> ssl.SSLContext:
    """A client context that trusts only the sink's CA, with host name checks on."""
    return ssl.create_default_context(cafile=local_connection().ca_file)


@contextlib.contextmanager
def sink_client(port: int, *, starttls: bool = True, login: bool = True) -> Iterator[smtplib.SMTP]:
    """An SMTP session to the sink on 127.0.0.1:port, after STARTTLS and AUTH by default."""
    conn = local_connection()
    client = smtplib.SMTP("127.0.0.1", port, local_hostname="client.localhost", timeout=10)
    try:
        client.ehlo()
        if starttls:
            client.starttls(context=tls_context())
            client.ehlo()
        if login:
            assert conn.password is not None
            client.login(conn.username, conn.password.reveal())
        yield client
    finally:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.quit()
        client.close()


def deliver(
    client: smtplib.SMTP,
    message: bytes,
    *,
    sender: str = "sender@example.com",
    recipients: Sequence[str] = ("rcpt@example.com",),
    mail_options: Sequence[str] = (),
) -> int:
    """Send one transaction; return the id the sink gave in its 250 reply to DATA."""
    code, reply = client.mail(sender, list(mail_options))
    assert code == 250, reply
    for rcpt in recipients:
        code, reply = client.rcpt(rcpt)
        assert code == 250, reply
    code, reply = client.data(message)
    assert code == 250, reply
    match = re.search(rb"stored as message (\d+)", reply)
    assert match, reply
    return int(match.group(1))


def simple_message(
    subject: str, *, body: str = "Hello.\r\n", to: str = "rcpt@example.com"
) -> bytes:
    """A small CRLF message with the usual headers."""
    return (
        f"From: Sender <sender@example.com>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{secrets.token_hex(8)}@example.com>\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    ).encode()

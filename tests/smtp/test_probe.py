"""Test Connection: every stage, its failure, and the hint that says what to change."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import time
from collections.abc import Iterator
from email import message_from_bytes

import pytest

from mailconduit.config import Connection
from mailconduit.smtp.probe import ProbeResult, probe
from mailconduit.testing import BannerService, FaultServer, free_port, loopback_connection, run
from mailconduit.testing.certs import LocalCA

USER = "probe@example.com"
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return LocalCA(tmp_path_factory.mktemp("ca"))


def probe_with(server: FaultServer | None, conn: Connection, **options: str) -> ProbeResult:
    """Run the probe in the server's loop (or without a server) and check it serialises."""

    async def main() -> ProbeResult:
        if server is None:
            return await probe(conn, **options)  # type: ignore[arg-type]
        async with server:
            return await probe(conn.with_changes(port=server.port), **options)  # type: ignore[arg-type]

    result = run(main())
    json.dumps(result.to_dict())
    assert result.report_lines() and result.summary()
    return result


def assert_no_secret(result: ProbeResult) -> None:
    text = json.dumps(result.to_dict()) + "\n".join(result.report_lines(verbose=True))
    for form in (
        PASSWORD,
        base64.b64encode(PASSWORD.encode()).decode(),
        base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode(),
    ):
        assert form not in text


def test_success_reports_capabilities_tls_and_the_redacted_conversation(ca: LocalCA) -> None:
    server = FaultServer(
        starttls_context=ca.server_context(),
        credentials={USER: PASSWORD},
        auth_require_tls=True,
        size_limit=10_485_760,
        enhanced_status_codes=True,
    )
    conn = loopback_connection(
        25, security="starttls", ca_file=ca.ca_file, username=USER, password=PASSWORD
    )
    result = probe_with(server, conn)
    assert result.ok and result.stage == "quit"
    assert result.passed == ("dns", "tcp", "banner", "ehlo", "starttls", "auth", "quit")
    caps = result.capabilities
    assert caps is not None and caps.starttls and caps.pipelining and caps.smtputf8
    assert caps.size == 10_485_760 and "PLAIN" in caps.auth_mechanisms
    assert result.tls is not None and result.tls.version.startswith("TLSv1.")
    assert result.certificate is not None and "127.0.0.1" in result.certificate.ip_addresses
    assert result.authenticated_as == USER
    lines = "\n".join(result.report_lines(verbose=True))
    assert lines.startswith("success: 127.0.0.1:")
    assert (
        "SIZE 10485760, STARTTLS, AUTH PLAIN LOGIN CRAM-MD5 XOAUTH2, SMTPUTF8, PIPELINING" in lines
    )
    assert "ENHANCEDSTATUSCODES" in lines and "8BITMIME" in lines
    assert "C: AUTH CRAM-MD5" in lines and "<redacted>" in lines and "S: 221" in lines
    assert_no_secret(result)
    assert result.to_dict()["capabilities"]["starttls"] is True


def test_send_to_delivers_a_real_test_message() -> None:
    server = FaultServer()
    conn = loopback_connection(25, from_address="ops@example.com")
    result = probe_with(server, conn, send_to="check@example.com")
    assert result.ok and "send" in result.passed
    (received,) = server.messages
    assert received.mail_from == "ops@example.com" and received.rcpt_tos == ("check@example.com",)
    message = message_from_bytes(received.data)
    assert message["Subject"] == "mailconduit test message"
    assert message["From"] == "ops@example.com" and "Test Connection" in received.data.decode()
    refused = FaultServer(faults={("RCPT", 1): "550 5.7.1 relaying denied"})
    failed = probe_with(refused, conn, send_to="check@example.com")
    assert not failed.ok and failed.stage == "send"
    assert "550 5.7.1 relaying denied" in failed.message


@pytest.mark.parametrize(
    ("send_to", "words"),
    [
        ("=?utf-8?q?victim=40evil.example?=@corp.example", "encoded-word"),
        ("victim@evil.example)<check@example.com>", "')' without"),
        ('"victim@evil.example"@example.com', "quoted local parts"),
    ],
)
def test_send_to_is_read_by_the_address_grammar(send_to: str, words: str) -> None:
    server = FaultServer()
    conn = loopback_connection(25, from_address="ops@example.com")
    result = probe_with(server, conn, send_to=send_to)
    assert not result.ok and result.stage == "send"
    assert "send_to" in result.message and words in result.message, result.message
    assert server.messages == []


def test_dns_failure() -> None:
    result = probe_with(None, loopback_connection(25, server_url="no-such-host.invalid"))
    assert not result.ok and result.stage == "dns"
    assert "does not resolve" in result.message and "server_url" in result.hint
    assert result.passed == ()


def test_address_policy_refusal() -> None:
    conn = loopback_connection(25)
    result = run(probe(conn, allow_address=lambda ip: not ip.is_loopback))
    assert not result.ok and result.stage == "dns"
    assert "not allowed by the network policy" in result.message


def test_tcp_refused() -> None:
    port = free_port()
    result = probe_with(None, loopback_connection(port))
    assert not result.ok and result.stage == "tcp" and result.passed == ("dns",)
    assert "connection refused" in result.message
    assert f"port {port}" in result.hint


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port whose listen queue is full: connection attempts get no answer (SYN dropped)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.05)
    yield port
    for sock in (*fillers, listener):
        sock.close()


def test_tcp_timeout_is_honoured(unanswered_port: int) -> None:
    result = probe_with(None, loopback_connection(unanswered_port, timeout_ms=500))
    assert not result.ok and result.stage == "tcp"
    assert "timed out after 0.5 s connecting" in result.message
    assert "firewall" in result.hint
    assert result.elapsed_ms >= 400  # it waited (no upper bound: a busy machine is slow)


def test_server_that_never_greets_times_out_after_the_connection_timeout() -> None:
    server = FaultServer(faults={("BANNER", "*"): "hang"})
    result = probe_with(server, loopback_connection(25, timeout_ms=500))
    assert not result.ok and result.stage == "banner"
    assert "timed out after 0.5 s waiting for the greeting" in result.message
    assert "never greeted" in result.hint
    assert "TLS" not in result.hint  # its TLS handshake failed too: no evidence of TLS
    # It waited for the timeout (no upper bound: on a busy machine a wall clock only says
    # how busy it was; the message above names the timeout that ended the wait).
    assert result.elapsed_ms >= 400
    assert result.passed == ("dns", "tcp")


def test_plaintext_against_an_implicit_tls_port(ca: LocalCA) -> None:
    server = FaultServer(tls_context=ca.server_context())
    result = probe_with(server, loopback_connection(25, timeout_ms=500))
    assert not result.ok and result.stage == "banner"
    assert "expects implicit TLS: set security to tls" in result.hint


def test_a_tls_record_instead_of_a_greeting_is_evidence_of_implicit_tls() -> None:
    server = FaultServer(faults={("BANNER", "*"): "garbage"})  # starts with a TLS alert
    result = probe_with(server, loopback_connection(25))
    assert not result.ok and result.stage == "banner"
    assert "did not answer as an SMTP server (the port answered in TLS)" in result.message
    assert "expects implicit TLS: set security to tls" in result.hint
    assert "not smtp" not in show(result)


def show(result: ProbeResult) -> str:
    """Everything a user may see of a result: the JSON, the verbose lines, the summary."""
    return "\n".join(
        [json.dumps(result.to_dict()), *result.report_lines(verbose=True), result.summary()]
    )


@pytest.mark.parametrize("security", ["none", "starttls"])
def test_a_service_that_is_not_smtp_is_named_so_without_its_bytes(security: str) -> None:
    with BannerService() as service:
        result = probe_with(None, loopback_connection(service.port, security=security))
    assert not result.ok and result.stage == "banner" and result.passed == ("dns", "tcp")
    assert result.message == f"127.0.0.1:{service.port} did not answer as an SMTP server"
    assert "expects implicit TLS" not in result.hint and "check the port" in result.hint
    seen = show(result)
    for part in ("INFO", "server_id", "NSERVERIDSECRET", "bus-1", "2.10.4"):
        assert part not in seen
    assert result.banner == "" and not any(t.startswith("S:") for t in result.transcript)


@pytest.mark.parametrize(
    ("banner", "secret"),
    [
        (b"200 news.example.org NNTP service ready\r\n", "NNTP"),  # a reply, not a greeting
        (b"+OK POP3 server ready <1896.697170952@dbc.example.org>\r\n", "1896.697170952"),
        (b"* OK IMAP4rev1 Service Ready\r\n", "IMAP4rev1"),
        (b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", "OpenSSH"),
        (b"\x00\x00\x00\x0a5.7.42-secret-build\x00", "secret-build"),
    ],
)
def test_no_byte_of_a_foreign_greeting_is_shown(banner: bytes, secret: str) -> None:
    with BannerService(banner) as service:
        result = probe_with(None, loopback_connection(service.port))
    assert not result.ok and result.stage == "banner"
    assert "did not answer as an SMTP server" in result.message
    assert secret not in show(result)


def test_an_export_session_keeps_nothing_of_a_foreign_greeting() -> None:
    """The same rule for the delivery path: the error a run would record holds no byte."""
    from mailconduit.errors import TransientSMTPError
    from mailconduit.smtp.client import SMTPSession
    from mailconduit.smtp.transcript import Transcript

    transcript = Transcript()

    async def main() -> None:
        session = SMTPSession(loopback_connection(service.port), transcript=transcript)
        await session.connect()

    with BannerService() as service, pytest.raises(TransientSMTPError) as info:
        run(main())
    assert str(info.value) == f"127.0.0.1:{service.port} did not answer as an SMTP server"
    assert "NSERVERIDSECRET" not in transcript.text()


def test_an_smtp_refusal_greeting_is_still_shown() -> None:
    """554 and 421 are SMTP's own ways to refuse a session: the server did greet as SMTP."""
    server = FaultServer(faults={("BANNER", 1): "421 4.3.2 busy, try later"})
    result = probe_with(server, loopback_connection(25))
    assert not result.ok and result.stage == "banner"
    assert "421 4.3.2 busy, try later" in result.message


def test_server_refusing_the_session() -> None:
    server = FaultServer(faults={("BANNER", 1): "554 5.7.1 no SMTP service here"})
    result = probe_with(server, loopback_connection(25))
    assert not result.ok and result.stage == "banner"
    assert "554 5.7.1 no SMTP service here" in result.message


def test_implicit_tls_against_a_plaintext_port_wrong_version_number() -> None:
    server = FaultServer()
    result = probe_with(server, loopback_connection(25, security="tls", verify_tls=False))
    assert not result.ok and result.stage == "tls"
    assert "does not speak TLS from the first byte (WRONG_VERSION_NUMBER)" in result.message
    assert "greets in plaintext SMTP: set security to starttls" in result.hint  # it checked
    assert "port 465" in result.hint


def test_implicit_tls_against_a_service_that_is_not_smtp() -> None:
    with BannerService() as service:
        result = probe_with(None, loopback_connection(service.port, security="tls"))
    assert not result.ok and result.stage == "tls"
    assert "starttls" not in result.hint and "neither with TLS nor without" in result.hint
    assert "NSERVERIDSECRET" not in show(result) and "INFO" not in show(result)
    assert service.connections == 2  # the TLS attempt, then a look for a plaintext greeting


@pytest.mark.parametrize(
    ("problem", "why", "hint"),
    [
        ("unknown_issuer", "unknown issuer", "ca_file"),
        ("self_signed", "self-signed", "ca_file"),
        ("expired", "expired on", "renewed"),
        (
            "wrong_host",
            "host name mismatch: the certificate is not valid for 127.0.0.1",
            "reissued",
        ),
    ],
)
@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_certificate_problems_are_explained(
    problem: str, why: str, hint: str, security: str, ca: LocalCA
) -> None:
    context = ca.flawed_server_context(problem)
    if security == "tls":
        server = FaultServer(tls_context=context)
    else:
        server = FaultServer(starttls_context=context)
    result = probe_with(server, loopback_connection(25, security=security, ca_file=ca.ca_file))
    assert not result.ok and result.stage == security
    assert result.message.startswith("TLS certificate not trusted: ")
    assert why in result.message and hint in result.hint
    cert = result.certificate
    assert cert is not None  # fetched with a second, unverified handshake
    lines = "\n".join(result.report_lines())
    assert f"certificate subject: {cert.subject}" in lines
    assert f"certificate issuer:  {cert.issuer}" in lines
    if problem == "expired":
        assert cert.expired and f"expired on {cert.not_after}" in result.message
    if problem == "self_signed":
        assert cert.self_signed and cert.subject == cert.issuer == "CN=127.0.0.1"
    if problem == "wrong_host":
        assert "mail.example.org" in result.message


def test_starttls_not_offered() -> None:
    result = probe_with(FaultServer(), loopback_connection(25, security="starttls"))
    assert not result.ok and result.stage == "starttls"
    assert "does not offer STARTTLS" in result.message
    assert "never falls back to plaintext" in result.hint
    assert result.passed == ("dns", "tcp", "banner", "ehlo")


def test_auth_mechanism_unsupported_lists_the_offered_ones() -> None:
    server = FaultServer(credentials={USER: PASSWORD}, auth_mechanisms=("LOGIN", "PLAIN"))
    conn = loopback_connection(25, username=USER, password=PASSWORD, auth_mechanism="cram-md5")
    result = probe_with(server, conn)
    assert not result.ok and result.stage == "auth"
    assert "CRAM-MD5 is not offered by the server (it offers LOGIN, PLAIN)" in result.message
    assert_no_secret(result)


def test_credentials_rejected_shows_code_and_text() -> None:
    server = FaultServer(credentials={USER: "another password"})
    conn = loopback_connection(25, username=USER, password=PASSWORD)
    result = probe_with(server, conn)
    assert not result.ok and result.stage == "auth"
    assert result.message == "credentials rejected: 535 5.7.8 Authentication credentials invalid"
    assert "username and password" in result.hint
    assert_no_secret(result)
    assert "<redacted>" in "\n".join(result.transcript)


def test_server_offers_no_auth() -> None:
    conn = loopback_connection(25, username=USER, password=PASSWORD)
    result = probe_with(FaultServer(), conn)
    assert not result.ok and result.stage == "auth"
    assert "offers no AUTH" in result.message
    assert "auth_mechanism to none" in result.hint


def test_ehlo_refused() -> None:
    server = FaultServer(faults={("EHLO", "*"): "550 5.7.1 bad HELO name"})
    result = probe_with(server, loopback_connection(25, security="starttls"))
    assert not result.ok and result.stage == "ehlo"
    assert "550" in result.message and "ehlo_hostname" in result.hint


def test_a_server_that_knows_neither_ehlo_nor_helo_is_not_told_to_change_its_name() -> None:
    # An FTP server greets with 220, then answers 500 to both EHLO and HELO.
    server = FaultServer(
        faults={("EHLO", "*"): "500 Unknown command", ("HELO", "*"): "500 Unknown command"}
    )
    result = probe_with(server, loopback_connection(25))
    assert not result.ok and result.stage == "ehlo"
    assert "may not be an SMTP server" in result.hint
    assert "ehlo_hostname" not in result.hint

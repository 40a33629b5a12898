"""Implicit TLS and STARTTLS (RFC 3207): verification on by default, never a plaintext fallback."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from mailconduit.errors import ConfigError, PermanentSMTPError, TransientSMTPError
from mailconduit.smtp import SMTPSession, Stage, Transcript
from mailconduit.testing import FaultServer, loopback_connection, run
from mailconduit.testing.certs import LocalCA

MESSAGE = b"Subject: over TLS\r\n\r\nsecret body\r\n"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return LocalCA(tmp_path_factory.mktemp("ca"))


def test_implicit_tls_verified_with_a_ca_file(ca: LocalCA) -> None:
    async def main() -> None:
        async with FaultServer(tls_context=ca.server_context()) as server:
            conn = loopback_connection(server.port, security="tls", ca_file=ca.ca_file)
            async with SMTPSession(conn) as session:
                assert session.encrypted and session.tls is not None
                assert session.tls.version.startswith("TLSv1.")
                assert session.tls.cipher
                cert = session.tls.certificate
                assert cert is not None and "127.0.0.1" in cert.ip_addresses
                assert "localhost" in cert.dns_names and not cert.expired
                assert (await session.send("a@example.com", ["b@example.com"], MESSAGE)).sent
        assert server.sessions[0].tls
        assert server.messages[0].data == MESSAGE

    run(main())


def test_starttls_then_ehlo_again(ca: LocalCA) -> None:
    async def main() -> None:
        transcript = Transcript()
        async with FaultServer(
            starttls_context=ca.server_context(),
            credentials={"user@example.com": "pw-1"},
            auth_require_tls=True,
        ) as server:
            conn = loopback_connection(
                server.port,
                security="starttls",
                ca_file=ca.ca_file,
                username="user@example.com",
                password="pw-1",
            )
            async with SMTPSession(conn, transcript=transcript) as session:
                assert session.encrypted and session.authenticated_as == "user@example.com"
                # capabilities are those announced after TLS: AUTH, no more STARTTLS
                assert not session.capabilities.starttls
                assert session.capabilities.auth_mechanisms
                assert (await session.send("a@example.com", ["b@example.com"], MESSAGE)).sent
        commands = server.sessions[0].commands
        assert commands[:3] == ["EHLO [127.0.0.1]", "STARTTLS", "EHLO [127.0.0.1]"]
        assert any(line.startswith("-- TLS established: TLSv1.") for line in transcript.lines)
        assert server.sessions[0].authenticated_as == "user@example.com"

    run(main())


def test_starttls_required_but_not_offered_never_falls_back() -> None:
    async def main() -> None:
        async with FaultServer() as server:
            session = SMTPSession(loopback_connection(server.port, security="starttls"))
            with pytest.raises(PermanentSMTPError, match="does not offer STARTTLS") as info:
                await session.connect()
            assert "never fall back to plaintext" in str(info.value)
            assert session.stage is Stage.STARTTLS
        assert server.sessions[0].commands == ["EHLO [127.0.0.1]"]

    run(main())


@pytest.mark.parametrize(
    ("problem", "reason"),
    [
        ("unknown_issuer", 20),
        ("self_signed", 18),
        ("expired", 10),
        ("wrong_host", 64),
    ],
)
def test_untrusted_certificates_are_refused(problem: str, reason: int, ca: LocalCA) -> None:
    context = ca.flawed_server_context(problem)

    async def main() -> None:
        async with FaultServer(tls_context=context) as server:
            conn = loopback_connection(server.port, security="tls", ca_file=ca.ca_file)
            session = SMTPSession(conn)
            with pytest.raises(PermanentSMTPError, match="TLS certificate not trusted") as info:
                await session.connect()
            cause = info.value.__cause__
            assert isinstance(cause, ssl.SSLCertVerificationError)
            assert cause.verify_code == reason
            assert session.stage is Stage.TLS
            # without verification the same server is reachable (the user's explicit choice)
            insecure = loopback_connection(server.port, security="tls", verify_tls=False)
            async with SMTPSession(insecure) as session:
                assert session.tls is not None and not session.tls.verified
                assert session.tls.certificate is not None

    run(main())


def test_implicit_tls_against_a_plaintext_port_fails_in_the_handshake() -> None:
    async def main() -> None:
        async with FaultServer() as server:
            session = SMTPSession(
                loopback_connection(server.port, security="tls", verify_tls=False)
            )
            with pytest.raises(PermanentSMTPError, match="TLS handshake failed") as info:
                await session.connect()
            assert isinstance(info.value.__cause__, ssl.SSLError)
            assert "WRONG_VERSION_NUMBER" in str(info.value.__cause__).upper().replace(" ", "_")

    run(main())


def test_tls_handshake_timeout() -> None:
    async def main() -> None:
        async with FaultServer(faults={("BANNER", "*"): "hang"}) as server:
            conn = loopback_connection(server.port, security="tls", timeout_ms=300)
            session = SMTPSession(conn)
            with pytest.raises(TransientSMTPError, match="during the TLS handshake"):
                await session.connect()
            assert session.stage is Stage.TLS

    run(main())


async def connect_after_starttls_reply(
    ca: LocalCA, reply: str, error: type[Exception]
) -> tuple[SMTPSession, pytest.ExceptionInfo[Exception]]:
    """Connect with STARTTLS to a server whose reply to STARTTLS is ``reply``; the connect
    must fail with ``error``."""
    faults = {("STARTTLS", 1): reply}
    async with FaultServer(starttls_context=ca.server_context(), faults=faults) as server:
        conn = loopback_connection(server.port, security="starttls", ca_file=ca.ca_file)
        session = SMTPSession(conn)
        with pytest.raises(error) as caught:
            await session.connect()
        return session, caught


def test_starttls_then_close(ca: LocalCA) -> None:
    async def main() -> None:
        reply = "220 2.0.0 Ready; drop"
        session, _ = await connect_after_starttls_reply(ca, reply, TransientSMTPError)
        assert session.stage is Stage.STARTTLS and not session.is_open

    run(main())


def test_plaintext_injected_after_starttls_is_refused(ca: LocalCA) -> None:
    async def main() -> None:
        reply = "220 2.0.0 Ready\r\n250 2.0.0 injected"
        _, caught = await connect_after_starttls_reply(ca, reply, PermanentSMTPError)
        caught.match("possible injection")

    run(main())


def test_missing_ca_file_is_a_config_error(tmp_path: Path) -> None:
    async def main() -> None:
        async with FaultServer() as server:
            conn = loopback_connection(
                server.port, security="tls", ca_file=str(tmp_path / "missing.pem")
            )
            with pytest.raises(ConfigError, match="ca_file"):
                await SMTPSession(conn).connect()

    run(main())

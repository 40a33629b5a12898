"""SMTP AUTH (RFC 4954): every mechanism, rejections, and transcripts that keep secrets out."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
from typing import Any

import pytest

from mailconduit.config import Connection
from mailconduit.errors import AuthenticationError, TransientSMTPError
from mailconduit.smtp import DeliveryStatus, SMTPSession, Stage, Transcript
from mailconduit.smtp.replies import ReplyAction, classify
from mailconduit.testing import FaultServer, loopback_connection, run

USER = "mailer@example.com"
PASSWORD = "Tr0ub4dor&3-sekret"
MESSAGE = b"Subject: hi\r\n\r\nbody\r\n"


def signing_in(server: FaultServer, *, password: str = PASSWORD, **fields: Any) -> Connection:
    """A loopback connection to ``server`` that signs in as USER with ``password``."""
    return loopback_connection(server.port, username=USER, password=password, **fields)


def secret_forms(user: str, password: str) -> list[str]:
    """Every way the password could leak into text: clear, and in each AUTH payload."""

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    return [
        password,
        b64(password),
        b64(f"\0{user}\0{password}"),
        b64(f"user={user}\x01auth=Bearer {password}\x01\x01"),
        b64(password)[:12],
    ]


@pytest.mark.parametrize("mechanism", ["plain", "login", "cram-md5", "xoauth2"])
def test_every_mechanism_logs_in_and_the_transcript_is_redacted(mechanism: str) -> None:
    async def main() -> None:
        transcript = Transcript()
        async with FaultServer(credentials={USER: PASSWORD}) as server:
            conn = signing_in(server, auth_mechanism=mechanism)
            async with SMTPSession(conn, transcript=transcript) as session:
                assert session.authenticated_as == USER
                assert (await session.send(USER, ["b@example.com"], MESSAGE)).sent
        assert server.sessions[0].authenticated_as == USER
        assert server.sessions[0].commands[1] == f"AUTH {mechanism.upper()}"
        text = transcript.text()
        assert f"C: AUTH {mechanism.upper()}" in text
        for form in secret_forms(USER, PASSWORD):
            assert form not in text
        assert "<redacted>" in text
        assert "S: 235" in text

    run(main())


def test_cram_md5_sends_no_reusable_secret() -> None:
    async def main() -> None:
        async with FaultServer(credentials={USER: PASSWORD}) as server:
            conn = signing_in(server, auth_mechanism="cram-md5")
            async with SMTPSession(conn):
                pass
        wire = b"".join(server.sessions[0].reads).decode()
        assert PASSWORD not in wire and base64.b64encode(PASSWORD.encode()).decode() not in wire
        response = base64.b64decode(wire.split("AUTH CRAM-MD5\r\n")[1].split("\r\n")[0]).decode()
        user, digest = response.rsplit(" ", 1)
        assert user == USER and re.fullmatch(r"[0-9a-f]{32}", digest)
        assert digest != hmac.new(PASSWORD.encode(), b"", hashlib.md5).hexdigest()

    run(main())


def test_auto_prefers_cram_md5_then_plain_then_login() -> None:
    async def main() -> list[str]:
        chosen = []
        for offered in (("LOGIN", "PLAIN", "CRAM-MD5"), ("LOGIN", "PLAIN"), ("LOGIN",)):
            async with FaultServer(credentials={USER: PASSWORD}, auth_mechanisms=offered) as server:
                conn = signing_in(server)
                async with SMTPSession(conn):
                    pass
                chosen.append(server.sessions[0].commands[1])
        return chosen

    assert run(main()) == ["AUTH CRAM-MD5", "AUTH PLAIN", "AUTH LOGIN"]


@pytest.mark.parametrize("mechanism", ["plain", "login", "cram-md5", "xoauth2"])
def test_wrong_password_is_an_authentication_error_with_the_reply(mechanism: str) -> None:
    async def main() -> None:
        transcript = Transcript()
        async with FaultServer(credentials={USER: PASSWORD}) as server:
            conn = signing_in(server, password="wrong-" + PASSWORD, auth_mechanism=mechanism)
            session = SMTPSession(conn, transcript=transcript)
            with pytest.raises(AuthenticationError) as info:
                await session.connect()
            error = info.value
            assert (error.code, error.enhanced) == (535, "5.7.8")
            assert "credentials invalid" in error.reply or "not accepted" in error.reply
            assert error.command == f"AUTH {mechanism.upper()}"
            assert classify(error.code, error.enhanced, error.reply) is ReplyAction.ABORT_RUN
            assert session.stage is Stage.AUTH and not session.is_open
            for form in secret_forms(USER, "wrong-" + PASSWORD):
                assert form not in str(error) and form not in transcript.text()

    run(main())


def test_mechanism_not_offered_names_the_offered_ones() -> None:
    async def main() -> None:
        async with FaultServer(
            credentials={USER: PASSWORD}, auth_mechanisms=("PLAIN", "LOGIN")
        ) as server:
            conn = signing_in(server, auth_mechanism="xoauth2")
            with pytest.raises(AuthenticationError, match=r"XOAUTH2 is not offered.*PLAIN, LOGIN"):
                await SMTPSession(conn).connect()
        assert not any(c.startswith("AUTH") for c in server.sessions[0].commands)

    run(main())


def test_credentials_but_no_auth_offered_is_a_clear_error() -> None:
    async def main() -> None:
        async with FaultServer() as server:
            conn = signing_in(server)
            with pytest.raises(AuthenticationError, match="offers no AUTH") as info:
                await SMTPSession(conn).connect()
            assert "auth_mechanism to none" in str(info.value)

    run(main())


def test_auth_none_skips_auth_and_a_server_that_requires_it_fails_the_row() -> None:
    async def main() -> None:
        async with FaultServer(credentials={USER: PASSWORD}) as server:
            conn = loopback_connection(server.port, auth_mechanism="none")
            async with SMTPSession(conn) as session:
                assert session.authenticated_as == ""
                outcome = await session.send(USER, ["b@example.com"], MESSAGE)
        assert outcome.status is DeliveryStatus.FAILED
        assert isinstance(outcome.error, AuthenticationError) and outcome.code == 530
        assert not any(c.startswith("AUTH") for c in server.sessions[0].commands)
        assert not server.messages

    run(main())


def test_temporary_auth_failure_is_transient() -> None:
    async def main() -> None:
        faults = {("AUTH", 1): "454 4.7.0 Temporary authentication failure"}
        async with FaultServer(credentials={USER: PASSWORD}, faults=faults) as server:
            conn = signing_in(server)
            with pytest.raises(TransientSMTPError) as info:
                await SMTPSession(conn).connect()
            assert not isinstance(info.value, AuthenticationError)
            assert info.value.code == 454

    run(main())


def test_auth_only_after_tls_is_explained_when_security_is_none() -> None:
    async def main() -> None:
        async with FaultServer(credentials={USER: PASSWORD}, auth_require_tls=True) as server:
            conn = signing_in(server)
            with pytest.raises(AuthenticationError, match="only after STARTTLS"):
                await SMTPSession(conn).connect()

    run(main())


def test_the_test_servers_read_xoauth2_the_same_way() -> None:
    # The fault server and the XOAUTH2 test server share one reader: a blob that is not
    # base64 gets 501, and the "Bearer" scheme is matched whatever its case (RFC 6750).
    async def say(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: str) -> bytes:
        writer.write(line.encode() + b"\r\n")
        await writer.drain()
        reply = b""
        for _ in range(20):  # a multi-line reply ends with "NNN " (at most a few lines here)
            got = await asyncio.wait_for(reader.readline(), 10)
            reply += got
            if got[3:4] != b"-":
                break
        return reply

    async def main() -> None:
        async with FaultServer(credentials={USER: PASSWORD}) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            try:
                assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"220")
                assert b"XOAUTH2" in await say(reader, writer, "EHLO client.test")
                assert (await say(reader, writer, "AUTH XOAUTH2 not*base64")).startswith(b"501")
                blob = base64.b64encode(f"user={USER}\x01auth=bearer {PASSWORD}\x01\x01".encode())
                assert (await say(reader, writer, f"AUTH XOAUTH2 {blob.decode()}")).startswith(
                    b"235"
                )
            finally:
                writer.close()
                await writer.wait_closed()
        assert server.sessions[0].authenticated_as == USER

    run(main())

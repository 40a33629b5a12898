"""Setting up a session: DNS, TCP, TLS, the greeting, EHLO, STARTTLS and AUTH.

The :class:`Handshake` writes how far it got and what the server said to its session
(a :class:`SetupRecord`) as it goes, so Test Connection can tell which stage failed.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
from collections.abc import Callable
from typing import Final, Protocol

from mailconduit.config import Connection, Secret, Security, is_loopback_host
from mailconduit.errors import (
    AuthenticationError,
    PermanentSMTPError,
    SMTPError,
    TransientSMTPError,
)
from mailconduit.smtp.auth import AuthExchange, choose_mechanism, retry_with_new_token
from mailconduit.smtp.channel import Channel
from mailconduit.smtp.connect import (
    AddressPolicy,
    default_ehlo_name,
    open_tcp,
    resolve,
    start_tls,
    where,
)
from mailconduit.smtp.esmtp import Capabilities, parse_ehlo
from mailconduit.smtp.protocol import ReplyStream
from mailconduit.smtp.replies import MalformedReplyError, Reply, error_for
from mailconduit.smtp.tls import TLSInfo, tls_info
from mailconduit.smtp.transcript import Transcript

__all__ = ["GREETING_CODES", "Handshake", "SetupRecord", "Stage"]

#: RFC 5321 3.1 and 4.2.3: a server greets with 220, or refuses the session with 554 or 421.
GREETING_CODES: Final = frozenset({220, 421, 554})


class Stage(enum.StrEnum):
    """How far a session got; Test Connection reports the stage that failed."""

    NEW = "new"
    DNS = "dns"
    TCP = "tcp"
    TLS = "tls"
    BANNER = "banner"
    EHLO = "ehlo"
    STARTTLS = "starttls"
    AUTH = "auth"
    READY = "ready"
    CLOSED = "closed"


class SetupRecord(Protocol):
    """The session a handshake sets up: the settings it reads, and where it writes how far
    it got and what it learnt."""

    conn: Connection
    host: str
    port: int
    timeout: float
    data_timeout: float
    transcript: Transcript | None
    allow_address: AddressPolicy | None

    stage: Stage
    banner: str
    capabilities: Capabilities
    tls: TLSInfo | None
    peer: tuple[str, int] | None
    authenticated_as: str


class Handshake:
    """Owns the setup of one connection, from the name to a logged-in, ready channel.

    Every step's failure is raised as a ``mailconduit.errors`` instance (see
    :mod:`mailconduit.smtp.client`); ``channel`` is set as soon as TCP is up, so the
    session can close it after a failure.
    """

    def __init__(self, session: SetupRecord, *, on_lost: Callable[[SMTPError], None]) -> None:
        self._session = session
        self._on_lost = on_lost
        self._loop = asyncio.get_running_loop()
        self._ehlo_name = ""
        #: The connection, once TCP is up.
        self.channel: Channel | None = None

    async def run(self) -> Channel:
        """Resolve, connect, TLS, greeting, EHLO, STARTTLS, AUTH: the ready channel, or raise."""
        record = self._session
        conn = record.conn
        record.stage = Stage.DNS
        addresses = await resolve(
            self._loop,
            record.host,
            record.port,
            timeout=record.timeout,
            allow_address=record.allow_address,
        )
        record.stage = Stage.TCP
        channel = await self._connect_tcp(addresses)
        if conn.security is Security.TLS:
            record.stage = Stage.TLS
            await self._start_tls(channel)
        record.stage = Stage.BANNER
        greeting = await self._greeting(channel)
        if greeting.code != 220:
            raise self._setup_error(greeting, "the greeting")
        record.stage = Stage.EHLO
        await self._ehlo(channel)
        if conn.security is Security.STARTTLS:
            record.stage = Stage.STARTTLS
            await self._starttls(channel)
            record.stage = Stage.EHLO
            await self._ehlo(channel)
        if conn.logs_in:
            record.stage = Stage.AUTH
            await self._authenticate(channel)
        record.stage = Stage.READY
        return channel

    async def _connect_tcp(self, addresses: list[tuple[int, str]]) -> Channel:
        loop, session = self._loop, self._session
        host, port, timeout = session.host, session.port, session.timeout
        transcript = session.transcript
        protocol = ReplyStream(
            loop,
            tick=min(timeout, session.data_timeout),
            host=host,
            on_lost=self._on_lost,
            transcript=transcript,
        )
        ip = await open_tcp(loop, protocol, host, port, addresses, timeout=timeout)
        channel = self.channel = Channel(loop, protocol, timeout=timeout, transcript=transcript)
        session.peer = (ip, port)
        if transcript is not None:
            transcript.note(f"connected to {where(host, port, ip)}")
        return channel

    async def _start_tls(self, channel: Channel) -> None:
        session = self._session
        new_transport = await start_tls(
            self._loop,
            channel.protocol,
            session.host,
            timeout=session.timeout,
            verify=session.conn.verify_tls,
            ca_file=session.conn.ca_file,
        )
        tls = session.tls = tls_info(
            new_transport.get_extra_info("ssl_object"), verified=session.conn.verify_tls
        )
        if session.transcript is not None and tls is not None:
            session.transcript.note(f"TLS established: {tls.version} {tls.cipher}")

    async def _greeting(self, channel: Channel) -> Reply:
        """The server's greeting: 220, or a 421/554 refusal. A peer that answers anything else
        is "not an SMTP server", and nothing it sent is repeated or kept in the transcript
        (Test Connection must not read other services' banners)."""
        session, protocol = self._session, channel.protocol
        protocol.transcript = None
        try:
            greeting = await channel.reply(session.timeout, "the greeting")
        except TransientSMTPError as exc:
            if isinstance(exc.__cause__, MalformedReplyError):
                raise self._not_smtp() from exc.__cause__
            raise
        finally:
            protocol.transcript = session.transcript
        if greeting.code not in GREETING_CODES:
            raise self._not_smtp() from MalformedReplyError(str(greeting).encode())
        if session.transcript is not None:
            session.transcript.server(greeting.code, greeting.lines)
        session.banner = greeting.text
        return greeting

    def _not_smtp(self) -> TransientSMTPError:
        host, port, peer = self._session.host, self._session.port, self._session.peer
        shown = where(host, port, peer[0]) if peer else f"{host}:{port}"
        return TransientSMTPError(0, f"{shown} did not answer as an SMTP server", host=host)

    def _setup_error(self, reply: Reply, command: str) -> SMTPError:
        return error_for(reply, command=command, host=self._session.host)

    async def _ehlo(self, channel: Channel) -> None:
        session = self._session
        if not self._ehlo_name:
            transport = channel.protocol.transport
            sockname = transport.get_extra_info("sockname") if transport else None
            self._ehlo_name = default_ehlo_name(session.conn.ehlo_hostname, sockname)
        name = self._ehlo_name
        reply = await channel.command(b"EHLO " + name.encode("ascii") + b"\r\n", "EHLO")
        if reply.code == 250:
            session.capabilities = parse_ehlo(reply.lines)
            return
        if 500 <= reply.code < 600 and session.conn.security is Security.NONE:
            reply = await channel.command(b"HELO " + name.encode("ascii") + b"\r\n", "HELO")
            if reply.code == 250:
                session.capabilities = Capabilities(esmtp=False)
                return
            raise self._setup_error(reply, "HELO")
        raise self._setup_error(reply, "EHLO")

    async def _starttls(self, channel: Channel) -> None:
        """STARTTLS, refused unless offered and clean: we never fall back to plaintext."""
        session = self._session
        if not session.capabilities.starttls:
            raise PermanentSMTPError(
                0,
                f"{session.host}:{session.port} does not offer STARTTLS, and security is starttls: "
                "refusing to continue without TLS (we never fall back to plaintext)",
                command="EHLO",
                host=session.host,
            )
        reply = await channel.command(b"STARTTLS\r\n", "STARTTLS")
        if reply.code != 220:
            raise self._setup_error(reply, "STARTTLS")
        if channel.protocol.has_unread_input:
            raise PermanentSMTPError(
                0,
                "the server sent data after agreeing to STARTTLS (possible injection); "
                "refusing to continue",
                command="STARTTLS",
                host=session.host,
            )
        await self._start_tls(channel)

    async def _authenticate(self, channel: Channel) -> None:
        record = self._session
        conn = record.conn
        peer_loopback = record.peer is not None and ipaddress.ip_address(record.peer[0]).is_loopback
        mechanism = choose_mechanism(
            conn.auth_mechanism,
            record.capabilities.auth_mechanisms,
            encrypted=record.tls is not None,
            cleartext_allowed=conn.allow_insecure_auth
            or is_loopback_host(record.host)
            or peer_loopback,
        )
        tokens = conn.token_source if mechanism == "XOAUTH2" else None
        if tokens is None:
            assert conn.password is not None
            reply = await self._sasl(channel, mechanism, conn.password)
        else:
            token = await tokens.bearer()
            reply = await self._sasl(channel, mechanism, token)
            if retry_with_new_token(reply):
                await tokens.refused(token)
                reply = await self._sasl(channel, mechanism, await tokens.bearer())
        if 200 <= reply.code < 300:
            record.authenticated_as = conn.username
            return
        if 400 <= reply.code < 500:
            raise error_for(reply, command=f"AUTH {mechanism}", host=record.host)
        raise AuthenticationError(
            reply.code,
            reply.message,
            enhanced=reply.enhanced,
            command=f"AUTH {mechanism}",
            host=self._session.host,
        )

    async def _sasl(self, channel: Channel, mechanism: str, secret: Secret) -> Reply:
        """One AUTH exchange; the server's final reply."""
        exchange = AuthExchange(mechanism, self._session.conn.username, secret.reveal())
        shown = f"AUTH {mechanism}" + (" <redacted>" if exchange.has_initial_response else "")
        reply = await channel.command(exchange.command(), "AUTH", shown=shown)
        while reply.code == 334:
            reply = await channel.command(exchange.respond(reply.text), "AUTH", shown=None)
        return reply

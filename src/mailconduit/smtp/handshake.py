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
    """Where a handshake writes how far it got and what it learnt (the session)."""

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

    def __init__(
        self,
        conn: Connection,
        record: SetupRecord,
        *,
        host: str,
        port: int,
        timeout: float,
        tick: float,
        transcript: Transcript | None,
        allow_address: AddressPolicy | None,
        on_lost: Callable[[SMTPError], None],
    ) -> None:
        self._conn = conn
        self._record = record
        self._host = host
        self._port = port
        self._timeout = timeout
        self._tick = tick
        self._transcript = transcript
        self._allow_address = allow_address
        self._on_lost = on_lost
        self._loop = asyncio.get_running_loop()
        self._ehlo_name = ""
        #: The connection, once TCP is up.
        self.channel: Channel | None = None

    async def run(self) -> Channel:
        """Resolve, connect, TLS, greeting, EHLO, STARTTLS, AUTH: the ready channel, or raise."""
        conn, record = self._conn, self._record
        record.stage = Stage.DNS
        addresses = await resolve(
            self._loop,
            self._host,
            self._port,
            timeout=self._timeout,
            allow_address=self._allow_address,
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
        loop = self._loop
        protocol = ReplyStream(
            loop,
            tick=self._tick,
            host=self._host,
            on_lost=self._on_lost,
            transcript=self._transcript,
        )
        ip = await open_tcp(
            loop, protocol, self._host, self._port, addresses, timeout=self._timeout
        )
        channel = self.channel = Channel(
            loop, protocol, timeout=self._timeout, transcript=self._transcript
        )
        self._record.peer = (ip, self._port)
        if self._transcript is not None:
            self._transcript.note(f"connected to {where(self._host, self._port, ip)}")
        return channel

    async def _start_tls(self, channel: Channel) -> None:
        new_transport = await start_tls(
            self._loop,
            channel.protocol,
            self._host,
            timeout=self._timeout,
            verify=self._conn.verify_tls,
            ca_file=self._conn.ca_file,
        )
        tls = self._record.tls = tls_info(
            new_transport.get_extra_info("ssl_object"), verified=self._conn.verify_tls
        )
        if self._transcript is not None and tls is not None:
            self._transcript.note(f"TLS established: {tls.version} {tls.cipher}")

    async def _greeting(self, channel: Channel) -> Reply:
        """The server's greeting: 220, or a 421/554 refusal. A peer that answers anything else
        is "not an SMTP server", and nothing it sent is repeated or kept in the transcript
        (Test Connection must not read other services' banners)."""
        protocol = channel.protocol
        protocol.transcript = None
        try:
            greeting = await channel.reply(self._timeout, "the greeting")
        except TransientSMTPError as exc:
            if isinstance(exc.__cause__, MalformedReplyError):
                raise self._not_smtp() from exc.__cause__
            raise
        finally:
            protocol.transcript = self._transcript
        if greeting.code not in GREETING_CODES:
            raise self._not_smtp() from MalformedReplyError(str(greeting).encode())
        if self._transcript is not None:
            self._transcript.server(greeting.code, greeting.lines)
        self._record.banner = greeting.text
        return greeting

    def _not_smtp(self) -> TransientSMTPError:
        peer = self._record.peer
        shown = where(self._host, self._port, peer[0]) if peer else f"{self._host}:{self._port}"
        return TransientSMTPError(0, f"{shown} did not answer as an SMTP server", host=self._host)

    def _setup_error(self, reply: Reply, command: str) -> SMTPError:
        return error_for(reply, command=command, host=self._host)

    async def _ehlo(self, channel: Channel) -> None:
        if not self._ehlo_name:
            transport = channel.protocol.transport
            sockname = transport.get_extra_info("sockname") if transport else None
            self._ehlo_name = default_ehlo_name(self._conn.ehlo_hostname, sockname)
        name = self._ehlo_name
        reply = await channel.command(b"EHLO " + name.encode("ascii") + b"\r\n", "EHLO")
        if reply.code == 250:
            self._record.capabilities = parse_ehlo(reply.lines)
            return
        if 500 <= reply.code < 600 and self._conn.security is Security.NONE:
            reply = await channel.command(b"HELO " + name.encode("ascii") + b"\r\n", "HELO")
            if reply.code == 250:
                self._record.capabilities = Capabilities(esmtp=False)
                return
            raise self._setup_error(reply, "HELO")
        raise self._setup_error(reply, "EHLO")

    async def _starttls(self, channel: Channel) -> None:
        """STARTTLS, refused unless offered and clean: we never fall back to plaintext."""
        if not self._record.capabilities.starttls:
            raise PermanentSMTPError(
                0,
                f"{self._host}:{self._port} does not offer STARTTLS, and security is starttls: "
                "refusing to continue without TLS (we never fall back to plaintext)",
                command="EHLO",
                host=self._host,
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
                host=self._host,
            )
        await self._start_tls(channel)

    async def _authenticate(self, channel: Channel) -> None:
        conn, record = self._conn, self._record
        peer_loopback = record.peer is not None and ipaddress.ip_address(record.peer[0]).is_loopback
        mechanism = choose_mechanism(
            conn.auth_mechanism,
            record.capabilities.auth_mechanisms,
            encrypted=record.tls is not None,
            cleartext_allowed=conn.allow_insecure_auth
            or is_loopback_host(self._host)
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
            raise error_for(reply, command=f"AUTH {mechanism}", host=self._host)
        raise AuthenticationError(
            reply.code,
            reply.message,
            enhanced=reply.enhanced,
            command=f"AUTH {mechanism}",
            host=self._host,
        )

    async def _sasl(self, channel: Channel, mechanism: str, secret: Secret) -> Reply:
        """One AUTH exchange; the server's final reply."""
        exchange = AuthExchange(mechanism, self._conn.username, secret.reveal())
        shown = f"AUTH {mechanism}" + (" <redacted>" if exchange.has_initial_response else "")
        reply = await channel.command(exchange.command(), "AUTH", shown=shown)
        while reply.code == 334:
            reply = await channel.command(exchange.respond(reply.text), "AUTH", shown=None)
        return reply

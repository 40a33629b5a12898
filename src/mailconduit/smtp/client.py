"""The SMTP session: the only code in mailconduit that talks SMTP on a socket.

A lean ``asyncio.Protocol`` client (RFC 5321, 2920, 3207, 4954, 6531, 3463) built for
two things the usual libraries do not do: a few microseconds of CPU per message, and
ESMTP PIPELINING across transactions, so a busy session costs one round trip per
message (the previous message's content and "." travel in the same write as the next
MAIL/RCPT/DATA group; RFC 2920 section 3.1 allows the content to start a group).

The session is the one class; the steps it is made of are pure helpers beside it:
:mod:`~mailconduit.smtp.connect` (DNS, TCP, TLS), :mod:`~mailconduit.smtp.protocol`
(bytes to replies, timeouts), :mod:`~mailconduit.smtp.transaction` (one message's
replies and its outcome), :mod:`~mailconduit.smtp.envelope` and
:mod:`~mailconduit.smtp.outcome` (what goes in and what comes out).

Errors from the socket, TLS and the server become ``mailconduit.errors`` inside this
package and nowhere else. What they mean for a caller that opens a session:

* ``TransientSMTPError`` (and ``ThrottledError``): try again later (timeouts, refused
  TCP connections, 4xx greetings, drops);
* ``AuthenticationError``: the credentials (or the mechanism) do not work; abort the run;
* other ``PermanentSMTPError``: the session cannot be set up as configured (TLS
  certificate, STARTTLS missing, 5xx greeting); abort the run;
* ``ConfigError``: the host does not resolve, or its address is not allowed.

Once a session is open, what happens to each message is data, a :class:`SendOutcome`,
never an exception.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import ipaddress
from collections.abc import Callable, Iterable
from typing import Final

from mailconduit.config import Connection, Secret, Security, is_loopback_host
from mailconduit.errors import (
    AddressError,
    AuthenticationError,
    PermanentSMTPError,
    RowError,
    SMTPError,
    TransientSMTPError,
)
from mailconduit.smtp.auth import AuthExchange, choose_mechanism, retry_with_new_token
from mailconduit.smtp.connect import (
    AddressPolicy,
    default_ehlo_name,
    open_tcp,
    resolve,
    start_tls,
    where,
)
from mailconduit.smtp.envelope import Envelope, MessageSource
from mailconduit.smtp.esmtp import Capabilities, mail_command, parse_ehlo, rcpt_command, wire_data
from mailconduit.smtp.outcome import DeliveryStatus, SendOutcome, StreamEnd, StreamResult
from mailconduit.smtp.protocol import ReplyCallback, ReplyStream, future_callback
from mailconduit.smtp.replies import MalformedReplyError, Reply, error_for
from mailconduit.smtp.tls import TLSInfo, tls_info
from mailconduit.smtp.transaction import Transaction, decide_outcome
from mailconduit.smtp.transcript import Transcript

__all__ = ["SMTPSession", "Stage"]

#: RFC 5321 4.5.3.2.6: wait at least 10 minutes for the reply to the final ".".
RFC_DATA_TIMEOUT: Final = 600.0
#: QUIT is a courtesy: never wait longer than this for its reply.
QUIT_TIMEOUT: Final = 2.0
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


class _Lost:
    """Marker: the connection ended while we waited for a message."""


_LOST: Final = _Lost()
_LABEL_DOT: Final = "the reply to the end of DATA"
_LABEL_RSET: Final = "the reply to RSET"
_LABEL_MAIL: Final = "the reply to MAIL FROM"
_LABEL_RCPT: Final = "the reply to RCPT TO"
_LABEL_DATA: Final = "the reply to DATA"
_EMPTY: Final = object()


class SMTPSession:
    """One SMTP connection configured by a :class:`~mailconduit.config.Connection`.

    Use ``async with SMTPSession(conn) as session:`` (or :meth:`connect` and
    :meth:`quit`), then :meth:`send` one message or :meth:`stream` many. ``stage``,
    ``banner``, ``capabilities`` and ``tls`` say how far the setup got, also after a
    failure (Test Connection reads them).
    """

    def __init__(
        self,
        conn: Connection,
        *,
        data_timeout: float | None = None,
        transcript: Transcript | None = None,
        allow_address: AddressPolicy | None = None,
        messages_per_connection: int | None = None,
        send_gate: Callable[[], bool] | None = None,
    ) -> None:
        self.conn = conn
        #: Asked right before a message's content goes out; False closes the session
        #: instead (the message is not delivered): an agent whose lease ran out while it
        #: was frozen mid-transaction must not complete it on waking.
        self.send_gate = send_gate
        self.host = conn.host
        self.port = conn.port
        self.timeout = conn.timeout
        self.data_timeout = (
            data_timeout if data_timeout is not None else max(conn.timeout, RFC_DATA_TIMEOUT)
        )
        if self.data_timeout <= 0:
            raise ValueError("data_timeout must be positive")
        self.transcript = transcript
        self.allow_address = allow_address
        self.max_messages = (
            conn.messages_per_connection
            if messages_per_connection is None
            else messages_per_connection
        )
        self.stage = Stage.NEW
        self.banner = ""
        self.capabilities = Capabilities(esmtp=False)
        self.tls: TLSInfo | None = None
        self.peer: tuple[str, int] | None = None
        self.authenticated_as = ""
        self.messages_started = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._protocol: ReplyStream | None = None
        self._inflight: collections.deque[Transaction] = collections.deque()
        self._idle: asyncio.Future[None] | None = None
        self._lost_waiter: asyncio.Future[None] | None = None
        self._need_rset = False
        self._on_outcome: Callable[[SendOutcome], None] | None = None
        self._callback_error: BaseException | None = None
        self._streaming = False
        self._source: MessageSource | None = None
        self._taken = 0
        self._pump: asyncio.Future[StreamEnd | None] | None = None
        self._ehlo_name = ""

    # -- lifecycle -------------------------------------------------------------------
    async def __aenter__(self) -> SMTPSession:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc is None:
            await self.quit()
        else:
            self.close()

    @property
    def is_open(self) -> bool:
        """True while the session can carry messages."""
        p = self._protocol
        return self.stage is Stage.READY and p is not None and p.error is None

    @property
    def encrypted(self) -> bool:
        return self.tls is not None

    async def connect(self) -> None:
        """Resolve, connect, TLS, greeting, EHLO, STARTTLS, AUTH: ready to send, or raise."""
        if self.stage is not Stage.NEW:
            raise RuntimeError("an SMTPSession connects once; open a new one to reconnect")
        self._loop = asyncio.get_running_loop()
        try:
            await self._setup()
        except BaseException:
            self.close()
            raise

    async def _setup(self) -> None:
        conn = self.conn
        self.stage = Stage.DNS
        addresses = await self._resolve()
        self.stage = Stage.TCP
        await self._connect_tcp(addresses)
        if conn.security is Security.TLS:
            self.stage = Stage.TLS
            await self._start_tls()
        self.stage = Stage.BANNER
        greeting = await self._greeting()
        if greeting.code != 220:
            raise self._setup_error(greeting, "the greeting")
        self.stage = Stage.EHLO
        await self._ehlo()
        if conn.security is Security.STARTTLS:
            self.stage = Stage.STARTTLS
            if not self.capabilities.starttls:
                raise PermanentSMTPError(
                    0,
                    f"{self.host}:{self.port} does not offer STARTTLS, and security is starttls: "
                    "refusing to continue without TLS (we never fall back to plaintext)",
                    command="EHLO",
                    host=self.host,
                )
            reply = await self._command(b"STARTTLS\r\n", "STARTTLS")
            if reply.code != 220:
                raise self._setup_error(reply, "STARTTLS")
            if self._require_protocol().has_unread_input:
                raise PermanentSMTPError(
                    0,
                    "the server sent data after agreeing to STARTTLS (possible injection); "
                    "refusing to continue",
                    command="STARTTLS",
                    host=self.host,
                )
            await self._start_tls()
            self.stage = Stage.EHLO
            await self._ehlo()
        if conn.logs_in:
            self.stage = Stage.AUTH
            await self._authenticate()
        self.stage = Stage.READY

    async def _greeting(self) -> Reply:
        """The server's greeting: 220, or a 421/554 refusal. A peer that answers anything else
        is "not an SMTP server", and nothing it sent is repeated or kept in the transcript
        (Test Connection must not read other services' banners)."""
        protocol = self._require_protocol()
        protocol.transcript = None
        try:
            greeting = await self._reply(self.timeout, "the greeting")
        except TransientSMTPError as exc:
            if isinstance(exc.__cause__, MalformedReplyError):
                raise self._not_smtp() from exc.__cause__
            raise
        finally:
            protocol.transcript = self.transcript
        if greeting.code not in GREETING_CODES:
            raise self._not_smtp() from MalformedReplyError(str(greeting).encode())
        if self.transcript is not None:
            self.transcript.server(greeting.code, greeting.lines)
        self.banner = greeting.text
        return greeting

    def _not_smtp(self) -> TransientSMTPError:
        shown = (
            where(self.host, self.port, self.peer[0]) if self.peer else f"{self.host}:{self.port}"
        )
        return TransientSMTPError(0, f"{shown} did not answer as an SMTP server", host=self.host)

    def _setup_error(self, reply: Reply, command: str) -> SMTPError:
        return error_for(reply, command=command, host=self.host)

    async def _resolve(self) -> list[tuple[int, str]]:
        return await resolve(
            self._require_loop(),
            self.host,
            self.port,
            timeout=self.timeout,
            allow_address=self.allow_address,
        )

    async def _connect_tcp(self, addresses: list[tuple[int, str]]) -> None:
        loop = self._require_loop()
        protocol = ReplyStream(
            loop,
            tick=min(self.timeout, self.data_timeout),
            host=self.host,
            on_lost=self._on_lost,
            transcript=self.transcript,
        )
        ip = await open_tcp(loop, protocol, self.host, self.port, addresses, timeout=self.timeout)
        self._protocol = protocol
        self.peer = (ip, self.port)
        if self.transcript is not None:
            self.transcript.note(f"connected to {where(self.host, self.port, ip)}")

    async def _start_tls(self) -> None:
        new_transport = await start_tls(
            self._require_loop(),
            self._require_protocol(),
            self.host,
            timeout=self.timeout,
            verify=self.conn.verify_tls,
            ca_file=self.conn.ca_file,
        )
        self.tls = tls_info(
            new_transport.get_extra_info("ssl_object"), verified=self.conn.verify_tls
        )
        if self.transcript is not None and self.tls is not None:
            self.transcript.note(f"TLS established: {self.tls.version} {self.tls.cipher}")

    async def _ehlo(self) -> None:
        if not self._ehlo_name:
            transport = self._require_protocol().transport
            sockname = transport.get_extra_info("sockname") if transport else None
            self._ehlo_name = default_ehlo_name(self.conn.ehlo_hostname, sockname)
        name = self._ehlo_name
        reply = await self._command(b"EHLO " + name.encode("ascii") + b"\r\n", "EHLO")
        if reply.code == 250:
            self.capabilities = parse_ehlo(reply.lines)
            return
        if 500 <= reply.code < 600 and self.conn.security is Security.NONE:
            reply = await self._command(b"HELO " + name.encode("ascii") + b"\r\n", "HELO")
            if reply.code == 250:
                self.capabilities = Capabilities(esmtp=False)
                return
            raise self._setup_error(reply, "HELO")
        raise self._setup_error(reply, "EHLO")

    async def _authenticate(self) -> None:
        conn = self.conn
        peer_loopback = self.peer is not None and ipaddress.ip_address(self.peer[0]).is_loopback
        mechanism = choose_mechanism(
            conn.auth_mechanism,
            self.capabilities.auth_mechanisms,
            encrypted=self.encrypted,
            cleartext_allowed=conn.allow_insecure_auth
            or is_loopback_host(self.host)
            or peer_loopback,
        )
        tokens = conn.token_source if mechanism == "XOAUTH2" else None
        if tokens is None:
            assert conn.password is not None
            reply = await self._sasl(mechanism, conn.password)
        else:
            token = await tokens.bearer()
            reply = await self._sasl(mechanism, token)
            if retry_with_new_token(reply):
                await tokens.refused(token)
                reply = await self._sasl(mechanism, await tokens.bearer())
        if 200 <= reply.code < 300:
            self.authenticated_as = conn.username
            return
        if 400 <= reply.code < 500:
            raise error_for(reply, command=f"AUTH {mechanism}", host=self.host)
        raise AuthenticationError(
            reply.code,
            reply.message,
            enhanced=reply.enhanced,
            command=f"AUTH {mechanism}",
            host=self.host,
        )

    async def _sasl(self, mechanism: str, secret: Secret) -> Reply:
        """One AUTH exchange; the server's final reply."""
        exchange = AuthExchange(mechanism, self.conn.username, secret.reveal())
        shown = f"AUTH {mechanism}" + (" <redacted>" if exchange.has_initial_response else "")
        reply = await self._command(exchange.command(), "AUTH", shown=shown)
        while reply.code == 334:
            reply = await self._command(exchange.respond(reply.text), "AUTH", shown=None)
        return reply

    # -- commands ---------------------------------------------------------------------
    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the session is not connected")
        return self._loop

    def _require_protocol(self) -> ReplyStream:
        if self._protocol is None:
            raise RuntimeError("the session is not connected")
        return self._protocol

    async def _reply(self, timeout: float, label: str) -> Reply:
        future: asyncio.Future[Reply] = self._require_loop().create_future()
        self._require_protocol().expect_reply(future_callback(future), timeout, label)
        return await future

    async def _command(
        self,
        line: bytes,
        name: str,
        *,
        shown: str | None = "",
        timeout: float | None = None,
        record: ReplyCallback | None = None,
    ) -> Reply:
        """Write one command and wait for its reply. ``shown`` is the transcript text:
        "" records the line itself, None records it as a secret."""
        protocol = self._require_protocol()
        if protocol.error is not None:
            raise protocol.error
        future: asyncio.Future[Reply] = self._require_loop().create_future()
        protocol.expect_reply(
            future_callback(future, record), timeout or self.timeout, f"the reply to {name}"
        )
        transport = protocol.transport
        assert transport is not None
        transport.write(line)
        if self.transcript is not None:
            if shown is None:
                self.transcript.client_secret()
            else:
                self.transcript.client(shown or line.decode("utf-8", "replace").rstrip("\r\n"))
        return await future

    def _ready_protocol(self) -> ReplyStream:
        protocol = self._protocol
        if self.stage is not Stage.READY or protocol is None:
            raise TransientSMTPError(
                0, f"the session is not open (stage {self.stage.value})", host=self.host
            )
        if protocol.error is not None:
            raise protocol.error
        return protocol

    def _idle_protocol(self) -> ReplyStream:
        """The protocol, for a command outside any transaction (none may be in flight)."""
        protocol = self._ready_protocol()
        if self._streaming or self._inflight:
            raise RuntimeError("a command cannot interleave with messages being streamed")
        return protocol

    async def rset(self) -> Reply:
        """Abort the current transaction (RFC 5321 4.1.1.5)."""
        self._idle_protocol()
        reply = await self._command(b"RSET\r\n", "RSET")
        self._need_rset = False
        return reply

    async def noop(self) -> Reply:
        """Check the session is alive."""
        self._idle_protocol()
        return await self._command(b"NOOP\r\n", "NOOP")

    async def quit(self, *, wait: bool = True) -> None:
        """Say goodbye (waiting at most a couple of seconds for 221) and close.

        ``wait=False`` sends QUIT and closes without waiting for the 221, as Postfix does
        by default (``smtp_skip_quit_response``): nothing is in flight any more, and the
        end of a run is then one round trip shorter.
        """
        protocol = self._protocol
        if protocol is not None and protocol.error is None and not self._inflight:
            if wait:
                with contextlib.suppress(SMTPError):
                    await self._command(
                        b"QUIT\r\n", "QUIT", timeout=min(self.timeout, QUIT_TIMEOUT)
                    )
            elif protocol.transport is not None and not protocol.transport.is_closing():
                if self.transcript is not None:
                    self.transcript.client("QUIT")
                protocol.transport.write(b"QUIT\r\n")
        self.close()

    def close(self) -> None:
        """Close now, without QUIT; messages in flight get RETRY or UNCERTAIN outcomes."""
        protocol = self._protocol
        if protocol is not None and protocol.error is None:
            protocol.fail(
                TransientSMTPError(0, "the session was closed", host=self.host), abort=False
            )
        elif (
            protocol is not None
            and protocol.transport is not None
            and not protocol.transport.is_closing()
        ):
            protocol.transport.close()
        if self.stage is Stage.READY:
            self.stage = Stage.CLOSED

    # -- sending ---------------------------------------------------------------------
    def preflight(self, envelope: Envelope) -> tuple[bytes, RowError | None]:
        """The wire form of the data, or the reason this server cannot take the message."""
        caps = self.capabilities
        if envelope.smtputf8 and not caps.smtputf8:
            bad = next(
                (a for a in (envelope.sender, *envelope.recipients) if not a.isascii()),
                envelope.sender,
            )
            return b"", AddressError(
                f"{self.host} does not offer SMTPUTF8, which address {bad!r} needs; "
                "the message was not sent (it would have to be altered)",
                address=bad,
            )
        wire = wire_data(envelope.data, crlf=envelope.crlf)
        if caps.size and len(wire) > caps.size:
            return b"", RowError(
                f"the message is {len(wire)} bytes and {self.host} accepts at most {caps.size} "
                "bytes (SIZE); it was not sent"
            )
        if not caps.eightbitmime and not envelope.smtputf8 and not wire.isascii():
            return b"", RowError(
                f"the message holds 8-bit data and {self.host} does not offer 8BITMIME; "
                "encode it as 7-bit (quoted-printable or base64)"
            )
        return wire, None

    async def send(
        self,
        sender: str,
        recipients: Iterable[str],
        data: bytes,
        *,
        smtputf8: bool = False,
        token: object = None,
    ) -> SendOutcome:
        """Send one message and return its outcome (sent, failed, retry or uncertain).

        Raises ``AddressError`` for an unsafe envelope address and ``RowError`` when the
        server cannot take the message as it is (SIZE, SMTPUTF8, 8BITMIME): nothing is
        written then. Server replies are never raised: they are in the outcome.
        """
        envelope = Envelope(sender, tuple(recipients), data, smtputf8, token)
        self._ready_protocol()
        _, error = self.preflight(envelope)
        if error is not None:
            raise error
        source: asyncio.Queue[Envelope | None] = asyncio.Queue()
        source.put_nowait(envelope)
        source.put_nowait(None)
        outcomes: list[SendOutcome] = []
        await self.stream(source, outcomes.append)
        if not outcomes:  # the message cap was already reached
            raise TransientSMTPError(0, "the session reached its message cap", host=self.host)
        return outcomes[0]

    async def stream(
        self, source: MessageSource, on_outcome: Callable[[SendOutcome], None]
    ) -> StreamResult:
        """Send messages from ``source`` until it ends (``None``), the cap, or the connection ends.

        Every message taken from the source gets exactly one outcome through
        ``on_outcome`` (called as soon as it is known, possibly from inside the event
        loop's read callback: keep it short). With PIPELINING each message costs one
        round trip: its content and "." go in the same write as the next message's
        MAIL/RCPT/DATA, or alone when no next message is ready.
        """
        protocol = self._ready_protocol()
        if self._streaming:
            raise RuntimeError("a session streams one source at a time")
        self._streaming = True
        self._on_outcome = on_outcome
        self._callback_error = None
        self._source = source
        self._taken = 0
        try:
            if self.capabilities.pipelining:
                reason = await self._stream_pipelined()
            else:
                reason = await self._stream_lockstep()
            await self._wait_idle()
        except asyncio.CancelledError:
            self.close()  # messages in flight still get their outcome
            raise
        finally:
            self._streaming = False
            self._on_outcome = None
            self._source = None
        taken = self._taken
        if self._callback_error is not None:
            raise self._callback_error
        error = protocol.error
        if error is not None and reason is not StreamEnd.CAP_REACHED:
            reason = StreamEnd.SERVER_CLOSING if error.code == 421 else StreamEnd.CONNECTION_LOST
            self.stage = Stage.CLOSED
            return StreamResult(reason, taken, error)
        if reason is StreamEnd.CAP_REACHED:
            await self.quit()
        return StreamResult(reason, taken, None)

    def _cap_reached(self) -> bool:
        return bool(self.max_messages) and self.messages_started >= self.max_messages

    def _take_nowait(self, source: MessageSource) -> object:
        try:
            envelope = source.get_nowait()
        except asyncio.QueueEmpty:
            return _EMPTY
        if envelope is None:
            source.put_nowait(None)
        return envelope

    async def _take(self, source: MessageSource) -> Envelope | _Lost | None:
        """Wait for the next message, or for the connection to end meanwhile."""
        protocol = self._require_protocol()
        if protocol.error is not None:
            return _LOST
        loop = self._require_loop()
        if self._lost_waiter is None or self._lost_waiter.done():
            self._lost_waiter = loop.create_future()
        getter = asyncio.ensure_future(source.get())
        await asyncio.wait((getter, self._lost_waiter), return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():
            getter.cancel()
            return _LOST
        envelope = getter.result()
        if envelope is None:
            source.put_nowait(None)
        return envelope

    def _admit(self, envelope: Envelope) -> Transaction | None:
        """A transaction for ``envelope``, or None after reporting why this server can't take it."""
        self._taken += 1
        wire, error = self.preflight(envelope)
        if error is not None:
            self._emit(SendOutcome(envelope, DeliveryStatus.FAILED, error=error))
            return None
        return Transaction(self, envelope, wire)

    async def _next_transaction(self) -> tuple[Transaction | None, StreamEnd]:
        """Wait for the next sendable message (the cap, the end of the source, or a drop end it)."""
        source = self._source
        assert source is not None
        protocol = self._require_protocol()
        while True:
            if self._cap_reached():
                return None, StreamEnd.CAP_REACHED
            item = self._take_nowait(source)
            if item is _EMPTY:
                item = await self._take(source)
            if item is None:
                return None, StreamEnd.SOURCE_EXHAUSTED
            if isinstance(item, _Lost):
                return None, StreamEnd.CONNECTION_LOST
            assert isinstance(item, Envelope)
            lost = protocol.error
            if lost is not None:  # the connection ended while we waited for this message
                self._taken += 1
                self._emit(
                    SendOutcome(item, DeliveryStatus.RETRY, lost.code, "", lost.reply, (), lost)
                )
                return None, StreamEnd.CONNECTION_LOST
            txn = self._admit(item)
            if txn is not None:
                return txn, StreamEnd.SOURCE_EXHAUSTED

    async def _stream_pipelined(self) -> StreamEnd:
        """Start the pump with one message; the read callbacks keep it going (see data_replied)."""
        loop = self._require_loop()
        while True:
            txn, end = await self._next_transaction()
            if txn is None:
                return end
            pump: asyncio.Future[StreamEnd | None] = loop.create_future()
            self._pump = pump
            self._write_group(None, txn)
            end_or_none = await pump
            self._pump = None
            if end_or_none is not None:
                return end_or_none

    def data_replied(self, txn: Transaction) -> None:
        """The reply to ``txn``'s DATA arrived (pipelined mode): after a refusal, end ``txn``
        and RSET before the next one; after 354, send its content. In the same write go the
        next message's commands if one is ready; otherwise wake the streaming coroutine.

        Part of :class:`~mailconduit.smtp.transaction.TransactionEvents`.
        """
        pending: Transaction | None = txn
        if txn.data_refused:
            self._need_rset = True
            self.transaction_ended(txn, None)
            pending = None
        source = self._source
        protocol = self._protocol
        end: StreamEnd | None
        while True:
            if protocol is None or protocol.error is not None or source is None:
                return  # _on_lost woke the coroutine
            if self._cap_reached():
                end = StreamEnd.CAP_REACHED
                break
            item = self._take_nowait(source)
            if item is _EMPTY:
                end = None
                break
            if item is None:
                end = StreamEnd.SOURCE_EXHAUSTED
                break
            assert isinstance(item, Envelope)
            following = self._admit(item)
            if following is not None:
                self._write_group(pending, following)
                return
        if pending is not None:
            self._write_group(pending, None)
        pump = self._pump
        if pump is not None and not pump.done():
            pump.set_result(end)

    def _write_group(self, pending: Transaction | None, txn: Transaction | None) -> None:
        """One write: the previous message's content and ".", then RSET/MAIL/RCPT*/DATA."""
        protocol = self._require_protocol()
        transport = protocol.transport
        assert transport is not None
        transcript = self.transcript
        timeout = self.timeout
        parts: list[bytes] = []
        expected: list[tuple[ReplyCallback, float, str]] = []
        if pending is not None and self.send_gate is not None and not self.send_gate():
            self.close()
            return
        if pending is not None:
            parts.append(pending.content())
            pending.dot_written = True
            expected.append((pending.on_dot, self.data_timeout, _LABEL_DOT))
            if transcript is not None:
                if pending.accepted:
                    transcript.client_data(len(pending.envelope.data))
                transcript.client(".")
        if txn is not None:
            envelope = txn.envelope
            start = len(parts)
            if self._need_rset:
                self._need_rset = False
                parts.append(b"RSET\r\n")
                expected.append((_ignore_reply, timeout, _LABEL_RSET))
            parts.append(self._mail_line(envelope, len(txn.wire)))
            expected.append((txn.on_mail, timeout, _LABEL_MAIL))
            on_rcpt = (txn.on_rcpt, timeout, _LABEL_RCPT)
            utf8 = envelope.smtputf8
            for recipient in envelope.recipients:
                parts.append(rcpt_command(recipient, smtputf8=utf8))
                expected.append(on_rcpt)
            parts.append(b"DATA\r\n")
            expected.append((txn.on_data, timeout, _LABEL_DATA))
            self._inflight.append(txn)
            self.messages_started += 1
            if transcript is not None:
                for part in parts[start:]:
                    transcript.client(part.decode("utf-8", "replace").rstrip("\r\n"))
        protocol.expect_all(expected)
        # One writev, so the content is not copied into a joined buffer.
        # Receipt (bench/RESULTS.md, invoice): with one MIME join, 5 → 3 copies of 138 KB.
        transport.writelines(parts)

    def _mail_line(self, envelope: Envelope, size: int) -> bytes:
        caps = self.capabilities
        return mail_command(
            envelope.sender,
            size=size if caps.size is not None else None,
            smtputf8=envelope.smtputf8,
            eight_bit=caps.eightbitmime and not envelope.data.isascii(),
        )

    async def _stream_lockstep(self) -> StreamEnd:
        protocol = self._require_protocol()
        while True:
            txn, end = await self._next_transaction()
            if txn is None:
                return end
            self._inflight.append(txn)
            self.messages_started += 1
            with contextlib.suppress(SMTPError):  # the protocol failed: _on_lost reported it
                await self._transact_lockstep(txn)
            if protocol.error is not None:
                return StreamEnd.CONNECTION_LOST

    async def _transact_lockstep(self, txn: Transaction) -> None:
        """MAIL, each RCPT, DATA, content: waiting for every reply (no PIPELINING)."""
        envelope = txn.envelope
        if self._need_rset:
            await self._command(b"RSET\r\n", "RSET")
            self._need_rset = False
        mail = self._mail_line(envelope, len(txn.wire))
        reply = await self._command(mail, "MAIL FROM", record=txn.on_mail)
        if not 200 <= reply.code < 300:
            self.transaction_ended(txn, None)
            return
        for recipient in envelope.recipients:
            line = rcpt_command(recipient, smtputf8=envelope.smtputf8)
            await self._command(line, "RCPT TO", record=txn.on_rcpt)
        if not txn.accepted:
            self._need_rset = True
            self.transaction_ended(txn, None)
            return
        reply = await self._command(b"DATA\r\n", "DATA", record=txn.record_data)
        if reply.code != 354:
            self._need_rset = True
            self.transaction_ended(txn, None)
            return
        if self.send_gate is not None and not self.send_gate():
            self.close()
            return
        future: asyncio.Future[Reply] = self._require_loop().create_future()
        protocol = self._require_protocol()
        protocol.expect_reply(
            future_callback(future, txn.on_dot),
            self.data_timeout,
            "the reply to the end of DATA",
        )
        txn.dot_written = True
        assert protocol.transport is not None
        protocol.transport.write(txn.wire)
        if self.transcript is not None:
            self.transcript.client_data(len(envelope.data))
            self.transcript.client(".")
        await future

    # -- outcomes ---------------------------------------------------------------------
    def transaction_ended(
        self, txn: Transaction, final: Reply | None, lost: SMTPError | None = None
    ) -> None:
        """Decide and report the outcome of ``txn`` (once) from what the server said.

        Part of :class:`~mailconduit.smtp.transaction.TransactionEvents`.
        """
        if txn.done:
            return
        txn.done = True
        inflight = self._inflight
        if inflight and inflight[0] is txn:
            inflight.popleft()
        else:
            with contextlib.suppress(ValueError):
                inflight.remove(txn)
        if not inflight and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)
        self._emit(decide_outcome(txn, final, lost, host=self.host))

    def _emit(self, outcome: SendOutcome) -> None:
        callback = self._on_outcome
        if callback is None:
            return
        try:
            callback(outcome)
        except Exception as exc:  # the caller's bug must not leave messages without outcome
            if self._callback_error is None:
                self._callback_error = exc
            self._on_outcome = None
            protocol = self._protocol
            if protocol is not None:
                protocol.fail(TransientSMTPError(0, "the outcome callback failed", host=self.host))

    def _on_lost(self, error: SMTPError) -> None:
        for txn in list(self._inflight):
            self.transaction_ended(txn, None, error)
        pump = self._pump
        if pump is not None and not pump.done():
            pump.set_result(StreamEnd.CONNECTION_LOST)
        if self._lost_waiter is not None and not self._lost_waiter.done():
            self._lost_waiter.set_result(None)
        if self._idle is not None and not self._idle.done():
            self._idle.set_result(None)
        if self.stage is Stage.READY:
            self.stage = Stage.CLOSED

    async def _wait_idle(self) -> None:
        if not self._inflight:
            return
        self._idle = self._require_loop().create_future()
        await self._idle
        self._idle = None


def _ignore_reply(reply: Reply | None, error: SMTPError | None) -> None:
    """RSET's reply changes nothing (a 421 is handled by the protocol itself)."""

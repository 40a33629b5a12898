"""The SMTP session: the only code in mailconduit that talks SMTP on a socket.

A lean ``asyncio.Protocol`` client (RFC 5321, 2920, 3207, 4954, 6531, 3463) built for
two things the usual libraries do not do: a few microseconds of CPU per message, and
ESMTP PIPELINING across transactions, so a busy session costs one round trip per
message (the previous message's content and "." travel in the same write as the next
MAIL/RCPT/DATA group; RFC 2920 section 3.1 allows the content to start a group).

Errors from the socket, TLS and the server are translated here, at one boundary, into
``mailconduit.errors``. What they mean for a caller that opens a session:

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
import errno
import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol, cast

from mailconduit.config import Connection, Security, is_loopback_host
from mailconduit.errors import (
    AddressError,
    AuthenticationError,
    ConfigError,
    FieldError,
    MailconduitError,
    NetworkPolicyError,
    PermanentSMTPError,
    RowError,
    SMTPError,
    ThrottledError,
    TransientSMTPError,
)
from mailconduit.smtp.auth import AuthExchange, choose_mechanism
from mailconduit.smtp.esmtp import (
    Capabilities,
    check_envelope_address,
    mail_command,
    parse_ehlo,
    rcpt_command,
    wire_data,
)
from mailconduit.smtp.replies import (
    MalformedReplyError,
    Reply,
    ReplyAction,
    ReplyParser,
    classify,
    error_for,
)
from mailconduit.smtp.tls import TLSInfo, client_context, tls_info
from mailconduit.smtp.transcript import Transcript

__all__ = [
    "AddressPolicy",
    "DeliveryStatus",
    "Envelope",
    "MessageSource",
    "RecipientResult",
    "RecipientStatus",
    "SMTPSession",
    "SendOutcome",
    "Stage",
    "StreamEnd",
    "StreamResult",
]

#: RFC 5321 4.5.3.2.6: wait at least 10 minutes for the reply to the final ".".
RFC_DATA_TIMEOUT: Final = 600.0
#: QUIT is a courtesy: never wait longer than this for its reply.
QUIT_TIMEOUT: Final = 2.0
#: Bytes asked of the kernel per read (the default 256 KiB buffer costs allocator churn).
READ_SIZE: Final = 65536
#: RFC 5321 3.1 and 4.2.3: a server greets with 220, or refuses the session with 554 or 421.
GREETING_CODES: Final = frozenset({220, 421, 554})

AddressPolicy = Callable[[ipaddress.IPv4Address | ipaddress.IPv6Address], bool]


class MessageSource(Protocol):
    """Where a streaming session takes messages from; an ``asyncio.Queue`` is one.

    ``get_nowait`` raises ``asyncio.QueueEmpty`` when nothing is ready yet. ``None``
    marks the end; a session puts it back, so every session sharing the source sees it.
    """

    def get_nowait(self) -> Envelope | None: ...

    async def get(self) -> Envelope | None: ...

    def put_nowait(self, item: Envelope | None, /) -> None: ...


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


class DeliveryStatus(enum.StrEnum):
    """The fate of one message on one attempt."""

    SENT = "sent"  # 250 to the final "."
    FAILED = "failed"  # 5xx, or refused before sending (row error): do not retry
    RETRY = "retry"  # 4xx, timeout or drop before the final "." was written
    UNCERTAIN = "uncertain"  # "." written, no reply: it may have been delivered


class RecipientStatus(enum.StrEnum):
    """One recipient's fate within a transaction."""

    ACCEPTED = "accepted"
    REFUSED = "refused"  # 5xx: never for this message
    DEFERRED = "deferred"  # 4xx (e.g. 452 too many recipients): retry in a new transaction


#: Not frozen: one is built per message, and a frozen dataclass costs ~3 us to build
#: (object.__setattr__ per field) against ~0.5 us. Treat it as read-only all the same.
@dataclass(slots=True)
class Envelope:
    """One message to send: envelope sender, recipients and the data (CRLF, not dot-stuffed).

    ``token`` is the caller's own reference (e.g. the row key), handed back in the
    outcome. Addresses that could inject an SMTP command are refused here, before
    anything can be written. A non-ASCII address turns ``smtputf8`` on.
    """

    sender: str
    recipients: tuple[str, ...]
    data: bytes
    smtputf8: bool = False
    token: object = None
    #: True when ``data`` has CRLF line ends only, as ``mailconduit.message`` builds it
    #: (its property tests hold it to that): they are then not normalised a second time.
    crlf: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.recipients, str):
            raise TypeError("recipients must be a sequence of addresses, not one string")
        if not isinstance(self.recipients, tuple):
            object.__setattr__(self, "recipients", tuple(self.recipients))
        if not self.recipients:
            raise AddressError("a message needs at least one recipient")
        check_envelope_address(self.sender, role="sender")
        ascii_only = self.sender.isascii()
        for recipient in self.recipients:
            check_envelope_address(recipient, role="recipient")
            ascii_only = ascii_only and recipient.isascii()
        if not ascii_only and not self.smtputf8:
            object.__setattr__(self, "smtputf8", True)


class RecipientResult(NamedTuple):
    """The server's answer to one RCPT TO."""

    address: str
    status: RecipientStatus
    code: int
    enhanced: str = ""
    text: str = ""


#: Not frozen: one is built per message, and a frozen dataclass costs ~3 us to build
#: (object.__setattr__ per field) against ~0.5 us. Treat it as read-only all the same.
@dataclass(slots=True)
class SendOutcome:
    """What happened to one message: status, the deciding reply, and every recipient's answer.

    ``error`` is the ``mailconduit.errors`` instance behind a status other than SENT
    (its class says what to do next: throttle, retry, fail the row, abort the run).
    """

    envelope: Envelope
    status: DeliveryStatus
    code: int = 0
    enhanced: str = ""
    text: str = ""
    recipients: tuple[RecipientResult, ...] = ()
    error: MailconduitError | None = None

    @property
    def token(self) -> object:
        return self.envelope.token

    @property
    def sent(self) -> bool:
        return self.status is DeliveryStatus.SENT

    @property
    def accepted_recipients(self) -> tuple[str, ...]:
        return self._with(RecipientStatus.ACCEPTED)

    @property
    def refused_recipients(self) -> tuple[str, ...]:
        return self._with(RecipientStatus.REFUSED)

    @property
    def deferred_recipients(self) -> tuple[str, ...]:
        """Recipients to try again in a new transaction (4xx on RCPT, e.g. 452)."""
        return self._with(RecipientStatus.DEFERRED)

    def _with(self, status: RecipientStatus) -> tuple[str, ...]:
        return tuple(r.address for r in self.recipients if r.status is status)

    def raise_for_status(self) -> None:
        """Raise :attr:`error` unless the message was sent."""
        if self.status is not DeliveryStatus.SENT:
            raise self.error or TransientSMTPError(0, f"message {self.status.value}")


class StreamEnd(enum.StrEnum):
    """Why :meth:`SMTPSession.stream` returned."""

    SOURCE_EXHAUSTED = "source exhausted"  # the session stays open
    CAP_REACHED = "message cap reached"  # QUIT sent; open a new session for more
    SERVER_CLOSING = "server closing (421)"  # closed; reconnect later, slower
    CONNECTION_LOST = "connection lost"  # drop or timeout; reconnect


@dataclass(frozen=True, slots=True)
class StreamResult:
    reason: StreamEnd
    messages: int  # messages taken from the source (each got exactly one outcome)
    error: SMTPError | None = None


# --------------------------------------------------------------------------- protocol

_ReplyCallback = Callable[[Reply | None, SMTPError | None], None]


def _future_callback(
    future: asyncio.Future[Reply], record: _ReplyCallback | None = None
) -> _ReplyCallback:
    """Resolve ``future`` with the reply; ``record`` sees it first, synchronously (so a
    421 that ends the session right after is already on the transaction's books)."""

    def deliver(reply: Reply | None, error: SMTPError | None) -> None:
        if record is not None and reply is not None:
            record(reply, None)
        if future.done():
            return
        if reply is not None:
            future.set_result(reply)
        else:
            future.set_exception(error or TransientSMTPError(0, "connection lost"))

    return deliver


class _ReplyStream(asyncio.Protocol):
    """Bytes in, replies out, in order, each to the callback registered for it.

    Keeps one lazily re-armed timer for the reply at the head of the queue (each
    reply has its own timeout, counted from when the previous one arrived), and
    fails every pending callback at once when the connection ends.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        tick: float,
        host: str,
        on_lost: Callable[[SMTPError], None],
        transcript: Transcript | None,
    ) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = ReplyParser()
        self.expect: collections.deque[tuple[_ReplyCallback, float, str]] = collections.deque()
        self.unclaimed: collections.deque[Reply] = collections.deque()
        self.error: SMTPError | None = None
        self.host = host
        self.tick = tick
        self.deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.on_lost = on_lost
        self.transcript = transcript
        self.eof = False

    # asyncio.Protocol -----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they have its methods.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        if getattr(transport, "max_size", 0) > READ_SIZE:
            transport.max_size = READ_SIZE  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.error is not None:
            return
        try:
            replies = self.parser.feed(data)
        except MalformedReplyError as exc:
            error = TransientSMTPError(0, str(exc), host=self.host)
            error.__cause__ = exc
            self.fail(error)
            return
        expect = self.expect
        transcript = self.transcript
        for reply in replies:
            if transcript is not None:
                transcript.server(reply.code, reply.lines)
            if expect:
                callback = expect.popleft()[0]
                if expect:
                    self.deadline = self.loop.time() + expect[0][1]
                callback(reply, None)
            else:
                self.unclaimed.append(reply)
            if self.error is not None:
                return
            if reply.code == 421:
                self.fail(
                    ThrottledError(421, reply.message, enhanced=reply.enhanced, host=self.host),
                    abort=False,
                )
                return

    def eof_received(self) -> bool:
        self.eof = True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.error is None:
            detail = f": {exc}" if exc else ""
            self.fail(
                TransientSMTPError(0, f"the server closed the connection{detail}", host=self.host)
            )
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    # our side ---------------------------------------------------------------------
    def expect_reply(self, callback: _ReplyCallback, timeout: float, label: str) -> None:
        """Register who gets the next reply not yet claimed, and how long it may take."""
        if self.error is not None:
            callback(None, self.error)
            return
        if self.unclaimed:
            callback(self.unclaimed.popleft(), None)
            return
        if not self.expect:
            self.deadline = self.loop.time() + timeout
            if self.timer is None:
                self.timer = self.loop.call_at(
                    min(self.deadline, self.loop.time() + self.tick), self._on_timer
                )
        self.expect.append((callback, timeout, label))

    def expect_all(self, items: list[tuple[_ReplyCallback, float, str]]) -> None:
        """:meth:`expect_reply` for a pipelined group, in order."""
        if self.error is not None or self.unclaimed or not items:
            for callback, timeout, label in items:
                self.expect_reply(callback, timeout, label)
            return
        if not self.expect:
            now = self.loop.time()
            self.deadline = now + items[0][1]
            if self.timer is None:
                self.timer = self.loop.call_at(min(self.deadline, now + self.tick), self._on_timer)
        self.expect.extend(items)

    def _on_timer(self) -> None:
        self.timer = None
        if not self.expect or self.error is not None:
            return
        now = self.loop.time()
        if now >= self.deadline:
            _, timeout, label = self.expect[0]
            error = TransientSMTPError(
                0, f"timed out after {timeout:g} s waiting for {label}", host=self.host
            )
            error.__cause__ = TimeoutError(f"no reply within {timeout:g} s")
            self.fail(error)
        else:
            self.timer = self.loop.call_at(min(self.deadline, now + self.tick), self._on_timer)

    def fail(self, error: SMTPError, *, abort: bool = True) -> None:
        """End the conversation: every pending reply fails with ``error`` (once)."""
        if self.error is not None:
            return
        self.error = error
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if abort:
                transport.abort()
            else:
                transport.close()
        pending = list(self.expect)
        self.expect.clear()
        for callback, _, _ in pending:
            callback(None, error)
        self.on_lost(error)


# --------------------------------------------------------------------------- transactions


class _Transaction:
    """One message in flight: the replies so far and whether its "." has been written."""

    __slots__ = (
        "accepted",
        "data_reply",
        "done",
        "dot_written",
        "envelope",
        "mail_reply",
        "rcpt_replies",
        "session",
        "wire",
    )

    def __init__(self, session: SMTPSession, envelope: Envelope, wire: bytes) -> None:
        self.session = session
        self.envelope = envelope
        self.wire = wire
        self.mail_reply: Reply | None = None
        self.rcpt_replies: list[Reply] = []
        self.accepted = 0
        self.data_reply: Reply | None = None
        self.dot_written = False
        self.done = False

    def on_mail(self, reply: Reply | None, error: SMTPError | None) -> None:
        if reply is not None:
            self.mail_reply = reply

    def on_rcpt(self, reply: Reply | None, error: SMTPError | None) -> None:
        if reply is not None:
            self.rcpt_replies.append(reply)
            if 200 <= reply.code < 300:
                self.accepted += 1

    def record_data(self, reply: Reply | None, error: SMTPError | None) -> None:
        if reply is not None:
            self.data_reply = reply

    def on_data(self, reply: Reply | None, error: SMTPError | None) -> None:
        """Pipelined mode: 354 → content goes out; anything else ends the transaction."""
        if reply is None:
            return
        self.data_reply = reply
        session = self.session
        if reply.code != 354:
            session._need_rset = True
            session._finish(self, None)
        session._after_data(self)

    def on_dot(self, reply: Reply | None, error: SMTPError | None) -> None:
        if reply is not None:
            self.session._finish(self, reply)

    def content(self) -> bytes:
        """What follows a 354: the message, or a bare "." when no recipient was accepted."""
        return self.wire if self.accepted else b".\r\n"


def _status_for(action: ReplyAction) -> DeliveryStatus:
    if action in (ReplyAction.RETRY, ReplyAction.THROTTLE):
        return DeliveryStatus.RETRY
    return DeliveryStatus.FAILED


_ACCEPTED: Final = RecipientStatus.ACCEPTED


def _recipient_results(txn: _Transaction) -> tuple[RecipientResult, ...]:
    """Each recipient's answer. After a refused MAIL the RCPT replies (503, bad sequence)
    mean nothing: every recipient then shares the MAIL reply's fate."""
    mail = txn.mail_reply
    if mail is not None and not 200 <= mail.code < 300:
        shared = RecipientStatus.DEFERRED if 400 <= mail.code < 500 else RecipientStatus.REFUSED
        return tuple(
            RecipientResult(address, shared, mail.code, mail.enhanced, mail.message)
            for address in txn.envelope.recipients
        )
    replies = txn.rcpt_replies
    recipients = txn.envelope.recipients
    if len(recipients) == 1 and len(replies) == 1 and 200 <= replies[0].code < 300:
        reply = replies[0]  # the usual case: one recipient, accepted
        return (
            RecipientResult(recipients[0], _ACCEPTED, reply.code, reply.enhanced, reply.message),
        )
    results = []
    for index, address in enumerate(recipients):
        if index < len(replies):
            reply = replies[index]
            code = reply.code
            if 200 <= code < 300:
                status = RecipientStatus.ACCEPTED
            elif 400 <= code < 500:
                status = RecipientStatus.DEFERRED
            else:
                status = RecipientStatus.REFUSED
            results.append(RecipientResult(address, status, code, reply.enhanced, reply.message))
        else:
            results.append(RecipientResult(address, RecipientStatus.DEFERRED, 0, "", "no reply"))
    return tuple(results)


# --------------------------------------------------------------------------- the session


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
        self._protocol: _ReplyStream | None = None
        self._inflight: collections.deque[_Transaction] = collections.deque()
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
            protocol = self._require_protocol()
            if protocol.unclaimed or protocol.parser.has_partial:
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
        where = self._where(self.peer[0]) if self.peer else f"{self.host}:{self.port}"
        return TransientSMTPError(0, f"{where} did not answer as an SMTP server", host=self.host)

    def _setup_error(self, reply: Reply, command: str) -> SMTPError:
        return error_for(reply, command=command, host=self.host)

    async def _resolve(self) -> list[tuple[int, str]]:
        host = self.host
        try:
            ip = ipaddress.ip_address(host)
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            candidates: list[tuple[int, str]] = [(int(family), str(ip))]
        except ValueError:
            loop = self._require_loop()
            try:
                async with asyncio.timeout(self.timeout):
                    infos = await loop.getaddrinfo(
                        host, self.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
                    )
            except TimeoutError as exc:
                raise TransientSMTPError(
                    0, f"timed out after {self.timeout:g} s resolving {host}", host=host
                ) from exc
            except socket.gaierror as exc:
                if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
                    raise ConfigError(
                        f"host {host} does not resolve (no such name in DNS)",
                        (FieldError("server_url", f"{host} does not resolve"),),
                    ) from exc
                raise TransientSMTPError(
                    0, f"cannot resolve {host}: {exc.strerror}", host=host
                ) from exc
            candidates = []
            for family, _, _, _, sockaddr in infos:
                address = (int(family), str(sockaddr[0]))
                if address not in candidates:
                    candidates.append(address)
        if self.allow_address is not None:
            allowed = [c for c in candidates if self.allow_address(ipaddress.ip_address(c[1]))]
            if not allowed:
                refused = ", ".join(c[1] for c in candidates)
                raise NetworkPolicyError(
                    f"connecting to {host} ({refused}) is not allowed by the network policy",
                    (
                        FieldError(
                            "server_url", f"{host} resolves to a forbidden address ({refused})"
                        ),
                    ),
                )
            candidates = allowed
        return candidates

    async def _connect_tcp(self, addresses: list[tuple[int, str]]) -> None:
        loop = self._require_loop()
        protocol = _ReplyStream(
            loop,
            tick=min(self.timeout, self.data_timeout),
            host=self.host,
            on_lost=self._on_lost,
            transcript=self.transcript,
        )
        last: OSError | None = None
        timed_out = False
        deadline = loop.time() + self.timeout
        for index, (family, ip) in enumerate(addresses):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            # a dead first address (often IPv6) must leave time for the others
            budget = remaining / (len(addresses) - index)
            try:
                async with asyncio.timeout(budget):
                    await loop.create_connection(lambda: protocol, ip, self.port, family=family)
            except TimeoutError:
                timed_out = True
                continue
            except OSError as exc:
                last = exc
                continue
            self._protocol = protocol
            self.peer = (ip, self.port)
            if self.transcript is not None:
                self.transcript.note(f"connected to {self._where(ip)}")
            return
        if last is None or timed_out:
            where = (
                self._where(addresses[0][1]) if len(addresses) == 1 else f"{self.host}:{self.port}"
            )
            raise TransientSMTPError(
                0, f"timed out after {self.timeout:g} s connecting to {where}", host=self.host
            ) from TimeoutError(errno.ETIMEDOUT, "connect timed out")
        if isinstance(last, ConnectionRefusedError):
            why = "connection refused (nothing listens on that port, or a firewall rejects it)"
        elif last.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            why = f"unreachable ({last.strerror})"
        else:
            why = last.strerror or str(last)
        where = self._where(addresses[-1][1]) if addresses else f"{self.host}:{self.port}"
        raise TransientSMTPError(0, f"cannot connect to {where}: {why}", host=self.host) from last

    def _where(self, ip: str) -> str:
        shown = f"[{ip}]" if ":" in ip else ip
        if ip != self.host:
            return f"{self.host}:{self.port} ({shown})"
        return f"{shown}:{self.port}"

    async def _start_tls(self) -> None:
        loop = self._require_loop()
        protocol = self._require_protocol()
        transport = protocol.transport
        assert transport is not None
        context = client_context(verify=self.conn.verify_tls, ca_file=self.conn.ca_file)
        try:
            async with asyncio.timeout(self.timeout):
                new_transport = await loop.start_tls(
                    transport,
                    protocol,
                    context,
                    server_hostname=self.host,
                    ssl_handshake_timeout=self.timeout * 2,
                )
        except TimeoutError as exc:
            error: SMTPError = TransientSMTPError(
                0, f"timed out after {self.timeout:g} s during the TLS handshake", host=self.host
            )
            error.__cause__ = exc
            protocol.fail(error)
            raise error from exc
        except ssl.SSLCertVerificationError as exc:
            error = PermanentSMTPError(
                0, f"TLS certificate not trusted: {exc.verify_message or exc}", host=self.host
            )
            protocol.fail(error)
            raise error from exc
        except ssl.SSLError as exc:
            error = PermanentSMTPError(
                0, f"TLS handshake failed: {exc.reason or exc}", host=self.host
            )
            protocol.fail(error)
            raise error from exc
        except (OSError, EOFError) as exc:
            error = TransientSMTPError(
                0, f"the connection closed during the TLS handshake: {exc}", host=self.host
            )
            protocol.fail(error)
            raise error from exc
        if new_transport is None:  # pragma: no cover - start_tls returns a transport or raises
            raise TransientSMTPError(0, "TLS could not be started", host=self.host)
        protocol.transport = new_transport
        self.tls = tls_info(
            new_transport.get_extra_info("ssl_object"), verified=self.conn.verify_tls
        )
        if self.transcript is not None and self.tls is not None:
            self.transcript.note(f"TLS established: {self.tls.version} {self.tls.cipher}")

    async def _ehlo(self) -> None:
        name = self._ehlo_name or self._compute_ehlo_name()
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

    def _compute_ehlo_name(self) -> str:
        name = self.conn.ehlo_hostname
        if not name:
            local = socket.gethostname()
            if "." in local and local.isascii() and not local.endswith(".localdomain"):
                name = local
            else:
                protocol = self._require_protocol()
                sockname = (
                    protocol.transport.get_extra_info("sockname") if protocol.transport else None
                )
                ip = str(sockname[0]) if sockname else "127.0.0.1"
                name = f"[IPv6:{ip}]" if ":" in ip else f"[{ip}]"
        self._ehlo_name = name
        return name

    async def _authenticate(self) -> None:
        conn = self.conn
        assert conn.password is not None
        peer_loopback = self.peer is not None and ipaddress.ip_address(self.peer[0]).is_loopback
        mechanism = choose_mechanism(
            conn.auth_mechanism,
            self.capabilities.auth_mechanisms,
            encrypted=self.encrypted,
            cleartext_allowed=conn.allow_insecure_auth
            or is_loopback_host(self.host)
            or peer_loopback,
        )
        exchange = AuthExchange(mechanism, conn.username, conn.password.reveal())
        shown = f"AUTH {mechanism}" + (" <redacted>" if exchange.has_initial_response else "")
        reply = await self._command(exchange.command(), "AUTH", shown=shown)
        while reply.code == 334:
            reply = await self._command(exchange.respond(reply.text), "AUTH", shown=None)
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

    # -- commands ---------------------------------------------------------------------
    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the session is not connected")
        return self._loop

    def _require_protocol(self) -> _ReplyStream:
        if self._protocol is None:
            raise RuntimeError("the session is not connected")
        return self._protocol

    async def _reply(self, timeout: float, label: str) -> Reply:
        future: asyncio.Future[Reply] = self._require_loop().create_future()
        self._require_protocol().expect_reply(_future_callback(future), timeout, label)
        return await future

    async def _command(
        self,
        line: bytes,
        name: str,
        *,
        shown: str | None = "",
        timeout: float | None = None,
        record: _ReplyCallback | None = None,
    ) -> Reply:
        """Write one command and wait for its reply. ``shown`` is the transcript text:
        "" records the line itself, None records it as a secret."""
        protocol = self._require_protocol()
        if protocol.error is not None:
            raise protocol.error
        future: asyncio.Future[Reply] = self._require_loop().create_future()
        protocol.expect_reply(
            _future_callback(future, record), timeout or self.timeout, f"the reply to {name}"
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

    def _ready_protocol(self) -> _ReplyStream:
        protocol = self._protocol
        if self.stage is not Stage.READY or protocol is None:
            raise TransientSMTPError(
                0, f"the session is not open (stage {self.stage.value})", host=self.host
            )
        if protocol.error is not None:
            raise protocol.error
        return protocol

    def _idle_protocol(self) -> _ReplyStream:
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

    def _admit(self, envelope: Envelope) -> _Transaction | None:
        """A transaction for ``envelope``, or None after reporting why this server can't take it."""
        self._taken += 1
        wire, error = self.preflight(envelope)
        if error is not None:
            self._emit(SendOutcome(envelope, DeliveryStatus.FAILED, error=error))
            return None
        return _Transaction(self, envelope, wire)

    async def _next_transaction(self) -> tuple[_Transaction | None, StreamEnd]:
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
        """Start the pump with one message; the read callbacks keep it going (see _after_data)."""
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

    def _after_data(self, txn: _Transaction) -> None:
        """The reply to ``txn``'s DATA arrived: send its content and, in the same write, the
        next message's commands if one is ready; otherwise wake the streaming coroutine."""
        reply = txn.data_reply
        pending = txn if reply is not None and reply.code == 354 else None
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

    def _write_group(self, pending: _Transaction | None, txn: _Transaction | None) -> None:
        """One write: the previous message's content and ".", then RSET/MAIL/RCPT*/DATA."""
        protocol = self._require_protocol()
        transport = protocol.transport
        assert transport is not None
        transcript = self.transcript
        timeout = self.timeout
        parts: list[bytes] = []
        expected: list[tuple[_ReplyCallback, float, str]] = []
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
        transport.writelines(parts)  # one writev: the content is not copied into a joined buffer

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

    async def _transact_lockstep(self, txn: _Transaction) -> None:
        """MAIL, each RCPT, DATA, content: waiting for every reply (no PIPELINING)."""
        envelope = txn.envelope
        if self._need_rset:
            await self._command(b"RSET\r\n", "RSET")
            self._need_rset = False
        mail = self._mail_line(envelope, len(txn.wire))
        reply = await self._command(mail, "MAIL FROM", record=txn.on_mail)
        if not 200 <= reply.code < 300:
            self._finish(txn, None)
            return
        for recipient in envelope.recipients:
            line = rcpt_command(recipient, smtputf8=envelope.smtputf8)
            await self._command(line, "RCPT TO", record=txn.on_rcpt)
        if not txn.accepted:
            self._need_rset = True
            self._finish(txn, None)
            return
        reply = await self._command(b"DATA\r\n", "DATA", record=txn.record_data)
        if reply.code != 354:
            self._need_rset = True
            self._finish(txn, None)
            return
        if self.send_gate is not None and not self.send_gate():
            self.close()
            return
        future: asyncio.Future[Reply] = self._require_loop().create_future()
        protocol = self._require_protocol()
        protocol.expect_reply(
            _future_callback(future, txn.on_dot),
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
    def _finish(
        self, txn: _Transaction, final: Reply | None, lost: SMTPError | None = None
    ) -> None:
        """Decide and report the outcome of ``txn`` (once) from what the server said."""
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
        self._emit(self._outcome(txn, final, lost))

    def _outcome(
        self, txn: _Transaction, final: Reply | None, lost: SMTPError | None
    ) -> SendOutcome:
        envelope = txn.envelope
        recipients = _recipient_results(txn)
        decisive: Reply | None = None
        command = ""
        all_refused = False
        mail = txn.mail_reply
        if mail is not None and not 200 <= mail.code < 300:
            decisive, command = mail, "MAIL FROM"
        elif len(txn.rcpt_replies) == len(envelope.recipients) and not txn.accepted:
            deferred = [r for r in txn.rcpt_replies if 400 <= r.code < 500]
            decisive = deferred[0] if deferred else txn.rcpt_replies[0]
            command = "RCPT TO"
            all_refused = not deferred
        elif txn.data_reply is not None and txn.data_reply.code != 354:
            decisive, command = txn.data_reply, "DATA"
        elif final is not None:
            if 200 <= final.code < 300:
                return SendOutcome(
                    envelope,
                    DeliveryStatus.SENT,
                    final.code,
                    final.enhanced,
                    final.message,
                    recipients,
                )
            decisive, command = final, "end of DATA"
        if decisive is not None:
            error = error_for(
                decisive, command=command, host=self.host, recipient_refused=all_refused
            )
            status = _status_for(classify(decisive.code, decisive.enhanced, decisive.text))
            return SendOutcome(
                envelope,
                status,
                decisive.code,
                decisive.enhanced,
                decisive.message,
                recipients,
                error,
            )
        cause = lost or TransientSMTPError(0, "the connection ended", host=self.host)
        if txn.dot_written:
            unsure = TransientSMTPError(
                0,
                f"no reply to the final '.' ({cause.reply}); the message may have been delivered",
                command="end of DATA",
                host=self.host,
            )
            return SendOutcome(
                envelope, DeliveryStatus.UNCERTAIN, 0, "", unsure.reply, recipients, unsure
            )
        return SendOutcome(
            envelope,
            DeliveryStatus.RETRY,
            cause.code,
            cause.enhanced,
            cause.reply,
            recipients,
            cause,
        )

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
            self._finish(txn, None, error)
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

"""The SMTP session: the only code in mailconduit that talks SMTP on a socket.

A lean ``asyncio.Protocol`` client (RFC 5321, 2920, 3207, 4954, 6531, 3463) built for
two things the usual libraries do not do: a few microseconds of CPU per message, and
ESMTP PIPELINING across transactions, so a busy session costs one round trip per
message (the previous message's content and "." travel in the same write as the next
MAIL/RCPT/DATA group; RFC 2920 section 3.1 allows the content to start a group).

The session is the one public class. It owns the connection's lifetime (connect, RSET,
NOOP, QUIT, close) and hands the work to parts beside it, each owning its own state:
:mod:`~mailconduit.smtp.handshake` (DNS, TCP, TLS, greeting, EHLO, STARTTLS, AUTH),
:mod:`~mailconduit.smtp.channel` (a command and its reply), :mod:`~mailconduit.smtp.pipeline`
(the messages of a stream, pipelined or lockstep), :mod:`~mailconduit.smtp.flight`
(transactions in flight and their outcomes), and the pure helpers
:mod:`~mailconduit.smtp.connect`, :mod:`~mailconduit.smtp.protocol`,
:mod:`~mailconduit.smtp.transaction`, :mod:`~mailconduit.smtp.envelope` and
:mod:`~mailconduit.smtp.outcome`.

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
import contextlib
from collections.abc import Callable, Iterable
from typing import Final

from mailconduit.config import Connection
from mailconduit.errors import RowError, SMTPError, TransientSMTPError
from mailconduit.smtp.channel import Channel
from mailconduit.smtp.connect import AddressPolicy
from mailconduit.smtp.envelope import Envelope, MessageSource, preflight
from mailconduit.smtp.esmtp import Capabilities
from mailconduit.smtp.handshake import Handshake, Stage
from mailconduit.smtp.outcome import SendOutcome, StreamEnd, StreamResult
from mailconduit.smtp.pipeline import Pipeline
from mailconduit.smtp.replies import Reply
from mailconduit.smtp.tls import TLSInfo
from mailconduit.smtp.transcript import Transcript

__all__ = ["SMTPSession", "Stage"]

#: RFC 5321 4.5.3.2.6: wait at least 10 minutes for the reply to the final ".".
RFC_DATA_TIMEOUT: Final = 600.0
#: QUIT is a courtesy: never wait longer than this for its reply.
QUIT_TIMEOUT: Final = 2.0


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
        # What the handshake writes as it goes (see handshake.SetupRecord).
        self.stage = Stage.NEW
        self.banner = ""
        self.capabilities = Capabilities(esmtp=False)
        self.tls: TLSInfo | None = None
        self.peer: tuple[str, int] | None = None
        self.authenticated_as = ""
        self._channel: Channel | None = None
        self._pipeline: Pipeline | None = None
        self._streaming = False

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
        channel = self._channel
        return self.stage is Stage.READY and channel is not None and channel.protocol.error is None

    @property
    def encrypted(self) -> bool:
        return self.tls is not None

    @property
    def messages_started(self) -> int:
        """Transactions started on this connection (the cap counts them)."""
        return 0 if self._pipeline is None else self._pipeline.messages_started

    async def connect(self) -> None:
        """Resolve, connect, TLS, greeting, EHLO, STARTTLS, AUTH: ready to send, or raise."""
        if self.stage is not Stage.NEW:
            raise RuntimeError("an SMTPSession connects once; open a new one to reconnect")
        handshake = Handshake(self, on_lost=self._on_lost)
        try:
            channel = await handshake.run()
        except BaseException:
            self._channel = handshake.channel
            self.close()
            raise
        self._channel = channel
        self._pipeline = Pipeline(
            channel,
            self.capabilities,
            host=self.host,
            data_timeout=self.data_timeout,
            max_messages=self.max_messages,
            send_gate=self.send_gate,
            close=self.close,
        )

    def _on_lost(self, error: SMTPError) -> None:
        if self._pipeline is not None:
            self._pipeline.lose(error)
        if self.stage is Stage.READY:
            self.stage = Stage.CLOSED

    # -- commands ---------------------------------------------------------------------
    def _ready(self) -> tuple[Channel, Pipeline]:
        channel, pipeline = self._channel, self._pipeline
        if self.stage is not Stage.READY or channel is None or pipeline is None:
            raise TransientSMTPError(
                0, f"the session is not open (stage {self.stage.value})", host=self.host
            )
        if channel.protocol.error is not None:
            raise channel.protocol.error
        return channel, pipeline

    def _idle(self) -> tuple[Channel, Pipeline]:
        """The channel, for a command outside any transaction (none may be in flight)."""
        channel, pipeline = self._ready()
        if self._streaming or pipeline.flight:
            raise RuntimeError("a command cannot interleave with messages being streamed")
        return channel, pipeline

    async def rset(self) -> Reply:
        """Abort the current transaction (RFC 5321 4.1.1.5)."""
        channel, pipeline = self._idle()
        reply = await channel.command(b"RSET\r\n", "RSET")
        pipeline.rset_sent()
        return reply

    async def noop(self) -> Reply:
        """Check the session is alive."""
        channel, _ = self._idle()
        return await channel.command(b"NOOP\r\n", "NOOP")

    async def quit(self, *, wait: bool = True) -> None:
        """Say goodbye (waiting at most a couple of seconds for 221) and close.

        ``wait=False`` sends QUIT and closes without waiting for the 221, as Postfix does
        by default (``smtp_skip_quit_response``): nothing is in flight any more, and the
        end of a run is then one round trip shorter.
        """
        channel, pipeline = self._channel, self._pipeline
        busy = pipeline is not None and bool(pipeline.flight)
        if channel is not None and channel.protocol.error is None and not busy:
            transport = channel.protocol.transport
            if wait:
                with contextlib.suppress(SMTPError):
                    await channel.command(
                        b"QUIT\r\n", "QUIT", timeout=min(self.timeout, QUIT_TIMEOUT)
                    )
            elif transport is not None and not transport.is_closing():
                if self.transcript is not None:
                    self.transcript.client("QUIT")
                transport.write(b"QUIT\r\n")
        self.close()

    def close(self) -> None:
        """Close now, without QUIT; messages in flight get RETRY or UNCERTAIN outcomes."""
        protocol = self._channel.protocol if self._channel is not None else None
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
        return preflight(envelope, self.capabilities, host=self.host)

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
        self._ready()
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
        channel, pipeline = self._ready()
        if self._streaming:
            raise RuntimeError("a session streams one source at a time")
        self._streaming = True
        pipeline.open(source, on_outcome)
        try:
            reason = await pipeline.run()
        except asyncio.CancelledError:
            self.close()  # messages in flight still get their outcome
            raise
        finally:
            self._streaming = False
            pipeline.close()
        taken = pipeline.taken
        if pipeline.flight.callback_error is not None:
            raise pipeline.flight.callback_error
        error = channel.protocol.error
        if error is not None and reason is not StreamEnd.CAP_REACHED:
            reason = StreamEnd.SERVER_CLOSING if error.code == 421 else StreamEnd.CONNECTION_LOST
            self.stage = Stage.CLOSED
            return StreamResult(reason, taken, error)
        if reason is StreamEnd.CAP_REACHED:
            await self.quit()
        return StreamResult(reason, taken, None)

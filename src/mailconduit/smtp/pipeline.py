"""Sending messages over one ready connection: pipelined groups (RFC 2920), or one
command at a time for a server without PIPELINING.

With PIPELINING a busy session costs one round trip per message: the previous message's
content and "." travel in the same write as the next MAIL/RCPT/DATA group, written from
inside the read callback that brought the reply to DATA (:meth:`Pipeline.data_replied`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Final

from mailconduit.errors import SMTPError
from mailconduit.smtp.channel import Channel
from mailconduit.smtp.envelope import Envelope, MessageSource, mail_line, preflight
from mailconduit.smtp.esmtp import Capabilities, rcpt_command
from mailconduit.smtp.flight import Flight
from mailconduit.smtp.outcome import DeliveryStatus, SendOutcome, StreamEnd
from mailconduit.smtp.protocol import ReplyCallback, future_callback
from mailconduit.smtp.replies import Reply
from mailconduit.smtp.transaction import Transaction

__all__ = ["Pipeline"]


class _Lost:
    """Marker: the connection ended while we waited for a message."""


_LOST: Final = _Lost()
_LABEL_DOT: Final = "the reply to the end of DATA"
_LABEL_RSET: Final = "the reply to RSET"
_LABEL_MAIL: Final = "the reply to MAIL FROM"
_LABEL_RCPT: Final = "the reply to RCPT TO"
_LABEL_DATA: Final = "the reply to DATA"
_EMPTY: Final = object()


class Pipeline:
    """Owns the sending over one ready connection: messages taken from the source, the
    message cap, the RSET owed after a refused transaction, the send gate, and the writes
    (pipelined or lockstep). Transactions report to it (:class:`TransactionEvents`); their
    outcomes go out through its :class:`~mailconduit.smtp.flight.Flight`."""

    def __init__(
        self,
        channel: Channel,
        caps: Capabilities,
        *,
        host: str,
        data_timeout: float,
        max_messages: int,
        send_gate: Callable[[], bool] | None,
        close: Callable[[], None],
    ) -> None:
        self._channel = channel
        self._protocol = channel.protocol
        self._caps = caps
        self._host = host
        self._timeout = channel.timeout
        self._data_timeout = data_timeout
        self._max_messages = max_messages
        self._send_gate = send_gate
        self._close = close
        self.flight = Flight(channel.protocol, host=host)
        #: Transactions started on this connection (the cap counts them).
        self.messages_started = 0
        #: Messages taken from the source in the stream in progress.
        self.taken = 0
        self._need_rset = False
        self._source: MessageSource | None = None
        self._pump: asyncio.Future[StreamEnd | None] | None = None
        self._lost_waiter: asyncio.Future[None] | None = None

    # -- the stream -------------------------------------------------------------------
    def open(self, source: MessageSource, on_outcome: Callable[[SendOutcome], None]) -> None:
        """A stream starts: messages from ``source``, outcomes to ``on_outcome``."""
        self.flight.open(on_outcome)
        self._source = source
        self.taken = 0

    def close(self) -> None:
        """The stream is over (after its last outcome, or after the connection closed)."""
        self.flight.close()
        self._source = None

    async def run(self) -> StreamEnd:
        """Send until the source ends, the cap, or the connection ends; then wait for the
        replies still due."""
        if self._caps.pipelining:
            reason = await self._stream_pipelined()
        else:
            reason = await self._stream_lockstep()
        await self.flight.wait_idle(self._channel.loop)
        return reason

    def rset_sent(self) -> None:
        """An RSET went out between streams: none is owed any more."""
        self._need_rset = False

    def lose(self, error: SMTPError) -> None:
        """The connection ended: end the transactions in flight, wake whoever waits."""
        self.flight.lose(error)
        pump = self._pump
        if pump is not None and not pump.done():
            pump.set_result(StreamEnd.CONNECTION_LOST)
        if self._lost_waiter is not None and not self._lost_waiter.done():
            self._lost_waiter.set_result(None)
        self.flight.wake()

    # -- taking messages --------------------------------------------------------------
    def _cap_reached(self) -> bool:
        return bool(self._max_messages) and self.messages_started >= self._max_messages

    async def _take(self, source: MessageSource) -> Envelope | _Lost | None:
        """Wait for the next message, or for the connection to end meanwhile."""
        if self._protocol.error is not None:
            return _LOST
        if self._lost_waiter is None or self._lost_waiter.done():
            self._lost_waiter = self._channel.loop.create_future()
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
        self.taken += 1
        wire, error = preflight(envelope, self._caps, host=self._host)
        if error is not None:
            self.flight.emit(SendOutcome(envelope, DeliveryStatus.FAILED, error=error))
            return None
        return Transaction(self, envelope, wire)

    async def _next_transaction(self) -> tuple[Transaction | None, StreamEnd]:
        """Wait for the next sendable message (the cap, the end of the source, or a drop end it)."""
        source = self._source
        assert source is not None
        protocol = self._protocol
        while True:
            if self._cap_reached():
                return None, StreamEnd.CAP_REACHED
            item = _take_nowait(source)
            if item is _EMPTY:
                item = await self._take(source)
            if item is None:
                return None, StreamEnd.SOURCE_EXHAUSTED
            if isinstance(item, _Lost):
                return None, StreamEnd.CONNECTION_LOST
            assert isinstance(item, Envelope)
            lost = protocol.error
            if lost is not None:  # the connection ended while we waited for this message
                self.taken += 1
                self.flight.emit(
                    SendOutcome(item, DeliveryStatus.RETRY, lost.code, "", lost.reply, (), lost)
                )
                return None, StreamEnd.CONNECTION_LOST
            txn = self._admit(item)
            if txn is not None:
                return txn, StreamEnd.SOURCE_EXHAUSTED

    # -- pipelined --------------------------------------------------------------------
    async def _stream_pipelined(self) -> StreamEnd:
        """Start the pump with one message; the read callbacks keep it going (see data_replied)."""
        loop = self._channel.loop
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
            self.flight.end(txn, None)
            pending = None
        source = self._source
        protocol = self._protocol
        end: StreamEnd | None
        while True:
            if protocol.error is not None or source is None:
                return  # lose() woke the coroutine
            if self._cap_reached():
                end = StreamEnd.CAP_REACHED
                break
            item = _take_nowait(source)
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

    def transaction_ended(self, txn: Transaction, final: Reply | None) -> None:
        """``txn`` is over: its outcome goes out (once).

        Part of :class:`~mailconduit.smtp.transaction.TransactionEvents`.
        """
        self.flight.end(txn, final)

    def _write_group(self, pending: Transaction | None, txn: Transaction | None) -> None:
        """One write: the previous message's content and ".", then RSET/MAIL/RCPT*/DATA."""
        protocol = self._protocol
        transport = protocol.transport
        assert transport is not None
        transcript = self._channel.transcript
        timeout = self._timeout
        parts: list[bytes] = []
        expected: list[tuple[ReplyCallback, float, str]] = []
        if pending is not None and self._send_gate is not None and not self._send_gate():
            self._close()
            return
        if pending is not None:
            parts.append(pending.content())
            pending.dot_written = True
            expected.append((pending.on_dot, self._data_timeout, _LABEL_DOT))
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
            parts.append(mail_line(envelope, self._caps, len(txn.wire)))
            expected.append((txn.on_mail, timeout, _LABEL_MAIL))
            on_rcpt = (txn.on_rcpt, timeout, _LABEL_RCPT)
            utf8 = envelope.smtputf8
            for recipient in envelope.recipients:
                parts.append(rcpt_command(recipient, smtputf8=utf8))
                expected.append(on_rcpt)
            parts.append(b"DATA\r\n")
            expected.append((txn.on_data, timeout, _LABEL_DATA))
            self.flight.add(txn)
            self.messages_started += 1
            if transcript is not None:
                for part in parts[start:]:
                    transcript.client(part.decode("utf-8", "replace").rstrip("\r\n"))
        protocol.expect_all(expected)
        # One writev, so the content is not copied into a joined buffer.
        # Receipt (bench/RESULTS.md, invoice): with one MIME join, 5 → 3 copies of 138 KB.
        transport.writelines(parts)

    # -- lockstep ---------------------------------------------------------------------
    async def _stream_lockstep(self) -> StreamEnd:
        protocol = self._protocol
        while True:
            txn, end = await self._next_transaction()
            if txn is None:
                return end
            self.flight.add(txn)
            self.messages_started += 1
            with contextlib.suppress(SMTPError):  # the protocol failed: lose() reported it
                await self._transact_lockstep(txn)
            if protocol.error is not None:
                return StreamEnd.CONNECTION_LOST

    async def _transact_lockstep(self, txn: Transaction) -> None:
        """MAIL, each RCPT, DATA, content: waiting for every reply (no PIPELINING)."""
        channel = self._channel
        envelope = txn.envelope
        if self._need_rset:
            await channel.command(b"RSET\r\n", "RSET")
            self._need_rset = False
        mail = mail_line(envelope, self._caps, len(txn.wire))
        reply = await channel.command(mail, "MAIL FROM", record=txn.on_mail)
        if not 200 <= reply.code < 300:
            self.flight.end(txn, None)
            return
        for recipient in envelope.recipients:
            line = rcpt_command(recipient, smtputf8=envelope.smtputf8)
            await channel.command(line, "RCPT TO", record=txn.on_rcpt)
        if not txn.accepted:
            self._need_rset = True
            self.flight.end(txn, None)
            return
        reply = await channel.command(b"DATA\r\n", "DATA", record=txn.record_data)
        if reply.code != 354:
            self._need_rset = True
            self.flight.end(txn, None)
            return
        if self._send_gate is not None and not self._send_gate():
            self._close()
            return
        future: asyncio.Future[Reply] = channel.loop.create_future()
        protocol = self._protocol
        protocol.expect_reply(
            future_callback(future, txn.on_dot),
            self._data_timeout,
            "the reply to the end of DATA",
        )
        txn.dot_written = True
        assert protocol.transport is not None
        protocol.transport.write(txn.wire)
        if channel.transcript is not None:
            channel.transcript.client_data(len(envelope.data))
            channel.transcript.client(".")
        await future


def _take_nowait(source: MessageSource) -> object:
    """The next message if one is ready (``_EMPTY`` if not); the end marker is put back."""
    try:
        envelope = source.get_nowait()
    except asyncio.QueueEmpty:
        return _EMPTY
    if envelope is None:
        source.put_nowait(None)
    return envelope


def _ignore_reply(reply: Reply | None, error: SMTPError | None) -> None:
    """RSET's reply changes nothing (a 421 is handled by the protocol itself)."""

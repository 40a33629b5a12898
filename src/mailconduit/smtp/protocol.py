"""Bytes in, replies out: the session's ``asyncio.Protocol`` and its per-reply timer.

Every failure of the connection (drop, timeout, malformed reply, 421) becomes one
``mailconduit.errors`` instance, handed to every reply still awaited.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import cast

from mailconduit.errors import SMTPError, ThrottledError, TransientSMTPError
from mailconduit.smtp.replies import MalformedReplyError, Reply, ReplyParser
from mailconduit.smtp.transcript import Transcript

__all__ = ["ReplyCallback", "ReplyStream", "future_callback"]

#: Who gets one reply: called with the reply, or with None and the error that ended the session.
ReplyCallback = Callable[[Reply | None, SMTPError | None], None]


def future_callback(
    future: asyncio.Future[Reply], record: ReplyCallback | None = None
) -> ReplyCallback:
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


class ReplyStream(asyncio.Protocol):
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
        self.expect: collections.deque[tuple[ReplyCallback, float, str]] = collections.deque()
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
        self.transport = cast(asyncio.Transport, transport)

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
    @property
    def has_unread_input(self) -> bool:
        """The server sent bytes nobody asked for yet: a reply unclaimed, or part of one."""
        return bool(self.unclaimed) or self.parser.has_partial

    def expect_reply(self, callback: ReplyCallback, timeout: float, label: str) -> None:
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

    def expect_all(self, items: list[tuple[ReplyCallback, float, str]]) -> None:
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

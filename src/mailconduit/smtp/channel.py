"""One connected SMTP conversation: a command written, its reply awaited."""

from __future__ import annotations

import asyncio

from mailconduit.smtp.protocol import ReplyCallback, ReplyStream, future_callback
from mailconduit.smtp.replies import Reply
from mailconduit.smtp.transcript import Transcript

__all__ = ["Channel"]


class Channel:
    """Owns a connection once TCP is up: its loop, its :class:`ReplyStream` (bytes in,
    replies out) and the writing of single commands that wait for their reply. The
    handshake and the session's own commands (RSET, NOOP, QUIT, lockstep sending) go
    through it; pipelined groups are written to ``protocol`` directly."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        protocol: ReplyStream,
        *,
        timeout: float,
        transcript: Transcript | None,
    ) -> None:
        self.loop = loop
        self.protocol = protocol
        self.timeout = timeout
        self.transcript = transcript

    async def reply(self, timeout: float, label: str) -> Reply:
        """The next reply nobody asked for yet (the greeting)."""
        future: asyncio.Future[Reply] = self.loop.create_future()
        self.protocol.expect_reply(future_callback(future), timeout, label)
        return await future

    async def command(
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
        protocol = self.protocol
        if protocol.error is not None:
            raise protocol.error
        future: asyncio.Future[Reply] = self.loop.create_future()
        protocol.expect_reply(
            future_callback(future, record), timeout or self.timeout, f"the reply to {name}"
        )
        transport = protocol.transport
        assert transport is not None
        transport.write(line)
        transcript = self.transcript
        if transcript is not None:
            if shown is None:
                transcript.client_secret()
            else:
                transcript.client(shown or line.decode("utf-8", "replace").rstrip("\r\n"))
        return await future

"""Small helpers for tests that talk to a local SMTP server."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from mailconduit.config.connection import Connection, validate_connection
from mailconduit.smtp import (
    Envelope,
    MessageSource,
    SendOutcome,
    SMTPSession,
    StreamResult,
)

__all__ = [
    "loopback_connection",
    "message_source",
    "numbered_envelopes",
    "run",
    "stream_messages",
]

T = TypeVar("T")


def loopback_connection(port: int, **fields: Any) -> Connection:
    """A validated connection to 127.0.0.1:``port``; no AUTH unless credentials are given."""
    data: dict[str, Any] = {"name": "test", "server_url": "127.0.0.1", "port": port}
    if "username" not in fields and "auth_mechanism" not in fields:
        data["auth_mechanism"] = "none"
    data.update(fields)
    return validate_connection(data)


def run(coro: Coroutine[Any, Any, T], *, timeout: float = 30.0) -> T:
    """Run ``coro`` in a fresh event loop, failing with TimeoutError after ``timeout`` seconds."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


def numbered_envelopes(count: int, *, start: int = 0) -> list[Envelope]:
    """Small distinct messages: message ``i`` goes to ``rcpt{i}@example.com``, token ``i``."""
    return [
        Envelope(
            "sender@example.com",
            (f"rcpt{i}@example.com",),
            f"Subject: message {i}\r\n\r\nbody of message {i}\r\n".encode(),
            token=i,
        )
        for i in range(start, start + count)
    ]


def message_source(envelopes: list[Envelope], *, end: bool = True) -> MessageSource:
    """A queue holding ``envelopes`` and, unless ``end`` is false, the end marker."""
    source: MessageSource = asyncio.Queue()
    for envelope in envelopes:
        source.put_nowait(envelope)
    if end:
        source.put_nowait(None)
    return source


async def stream_messages(
    conn: Connection, envelopes: Sequence[Envelope], *, sessions: int = 1, **options: Any
) -> tuple[list[StreamResult], list[SendOutcome]]:
    """Stream ``envelopes`` through ``sessions`` new sessions sharing one source, then QUIT.

    ``options`` go to each :class:`SMTPSession`. Returns each session's result and every
    outcome in the order they came.
    """
    source = message_source(list(envelopes))
    outcomes: list[SendOutcome] = []
    opened = [SMTPSession(conn, **options) for _ in range(sessions)]
    try:
        await asyncio.gather(*(session.connect() for session in opened))
        results = await asyncio.gather(
            *(session.stream(source, outcomes.append) for session in opened)
        )
        await asyncio.gather(*(session.quit() for session in opened))
    finally:
        for session in opened:
            session.close()
    return list(results), outcomes

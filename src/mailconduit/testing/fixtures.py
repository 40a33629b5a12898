"""Small helpers for tests that talk to a local SMTP server."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from mailconduit.config import Connection, validate_connection

__all__ = ["loopback_connection", "run"]

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

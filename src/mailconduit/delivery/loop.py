"""The event loop an export runs on: uvloop when it is installed, else asyncio's own.

uvloop's transports and scheduler are written in C: on loopback an export spends about
a tenth less CPU per message with it (bench/RESULTS.md). ``MAILCONDUIT_EVENT_LOOP=asyncio``
forces asyncio's loop (both are tested).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["loop_name", "run"]

T = TypeVar("T")


def _factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    if os.environ.get("MAILCONDUIT_EVENT_LOOP", "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:  # an optional speed-up: asyncio's loop does the same work
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def loop_name() -> str:
    """``uvloop`` or ``asyncio``: the loop :func:`run` would use now."""
    return "asyncio" if _factory() is None else "uvloop"


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a new loop (as ``asyncio.run`` does)."""
    with asyncio.Runner(loop_factory=_factory()) as runner:
        return runner.run(coro)

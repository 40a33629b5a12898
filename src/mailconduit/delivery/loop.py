"""The event loop an export runs on: uvloop when it is installed, else asyncio's own.

uvloop's transports and scheduler are written in C: on loopback an export spends about
a tenth less CPU per message with it (bench/RESULTS.md). ``MAILCONDUIT_EVENT_LOOP=asyncio``
forces asyncio's loop (both are tested).

Synchronous callers (the CLI, ``mailconduit.export``) go through :func:`run`, which also
works where a loop is already running in the calling thread (a notebook cell, an async
web handler): that loop cannot be entered again, so the work gets a loop of its own in a
worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

__all__ = ["blocking", "loop_name", "run"]

T = TypeVar("T")
P = ParamSpec("P")


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
    """Run ``coro`` to completion on a new loop and return its result, blocking the caller.

    Without a running loop in this thread, as ``asyncio.run`` does; inside one, in a worker
    thread (see :func:`_run_in_worker`).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        with asyncio.Runner(loop_factory=_factory()) as runner:
            return runner.run(coro)
    return _run_in_worker(coro)


def _run_in_worker(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a new loop in a worker thread while this thread waits for it.

    Ctrl-C in the waiting thread (interrupting a notebook cell) cancels ``coro``, which
    stops gracefully; the KeyboardInterrupt is raised here once it has.
    """
    ready = threading.Event()  # the task runs (or the worker ended before it could)
    done = threading.Event()
    running: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[T]]] = []
    outcome: list[tuple[bool, Any]] = []

    async def tracked() -> T:
        task = asyncio.current_task()
        assert task is not None
        running.append((asyncio.get_running_loop(), task))
        ready.set()
        return await coro

    def work() -> None:
        try:
            with asyncio.Runner(loop_factory=_factory()) as runner:
                outcome.append((True, runner.run(tracked())))
        except BaseException as exc:  # handed to the waiting thread, which raises it
            outcome.append((False, exc))
        finally:
            ready.set()
            done.set()

    # The caller's context variables are seen by ``coro``, as they would be on its own loop.
    worker = threading.Thread(
        target=contextvars.copy_context().run, args=(work,), name="mailconduit-loop", daemon=True
    )
    worker.start()
    # An Event, not Thread.join: on Python 3.11 a join interrupted by Ctrl-C takes the
    # thread for finished, and a second join would return at once.
    try:
        done.wait()
    except KeyboardInterrupt:
        ready.wait()
        if running:
            loop, task = running[0]
            with contextlib.suppress(RuntimeError):  # its loop closed already: nothing to stop
                loop.call_soon_threadsafe(task.cancel)
        done.wait()
        raise
    ok, value = outcome[0]
    if ok:
        result: T = value
        return result
    raise value


def blocking(
    function: Callable[P, Coroutine[Any, Any, T]], *, name: str, doc: str
) -> Callable[P, T]:
    """The synchronous form ``name`` of a coroutine function: the same parameters, run with
    :func:`run`. One implementation, so the two forms cannot drift apart."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            coro = function(*args, **kwargs)
        except TypeError:
            # Only the arguments can be wrong here (no line of the body has run): say which,
            # naming this function rather than the coroutine function the caller never called.
            try:
                signature.bind(*args, **kwargs)
            except TypeError as wrong:
                raise TypeError(f"{name}(): {wrong}") from None
            raise
        return run(coro)

    call.__name__ = name
    call.__qualname__ = name
    call.__doc__ = doc
    return call

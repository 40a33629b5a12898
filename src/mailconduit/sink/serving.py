"""What every aiosmtpd server of ours shares: the sink's and the test servers'.

The sink behind a command that uses the ``local`` connection and the test servers of
:mod:`mailconduit.testing` (``with FaultServer() as server``) start a server whose
``start``/``stop`` are coroutines from synchronous code (:class:`ServerThread`: a start
that fails is raised in the caller's thread, a stop that hangs is bounded), advertise
PIPELINING (:class:`PipeliningHandler`) and close their open sessions when they stop
(:func:`close_listeners`); the test servers are used with ``async with`` in the caller's
loop or ``with`` in a thread of their own (:class:`ContextServer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import ClassVar, Generic, Self, TypeVar

from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = ["ContextServer", "PipeliningHandler", "ServerThread", "close_listeners"]

T = TypeVar("T")


class ServerThread(Generic[T]):
    """Runs ``start()`` on a new loop in a daemon thread, then ``stop()`` when told to.

    :meth:`begin` returns what ``start()`` returned, or raises what it raised;
    :meth:`end` has the loop run ``stop()`` and waits for the thread (at most ``timeout``).
    An error after the start (``stop()`` failed, the loop crashed) goes to ``on_error``
    when it happens, or without one is raised by :meth:`end`. ``what`` names the server in
    the TimeoutError of a start that never finished.
    """

    def __init__(
        self,
        start: Callable[[], Awaitable[T]],
        stop: Callable[[], Awaitable[None]],
        *,
        what: str,
        name: str,
        timeout: float,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._start = start
        self._stop = stop
        self._what = what
        self._on_error = on_error
        self.timeout = timeout
        self._ready = threading.Event()
        self._result: list[T] = []
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._late_error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def begin(self) -> T:
        """Start the thread and wait until the server listens; TimeoutError after ``timeout``."""
        self._thread.start()
        if not self._ready.wait(self.timeout):
            raise TimeoutError(f"{self._what} did not start within {self.timeout:.0f} s")
        if self._error is not None:
            self._thread.join(self.timeout)
            raise self._error
        return self._result[0]

    def end(self) -> bool:
        """Stop the server and its loop; False if the thread is still alive after ``timeout``.

        Raises the error that ended the loop after the start, unless ``on_error`` took it.
        """
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stopping.set)
        if self._thread.ident is not None:
            self._thread.join(self.timeout)
        if self._late_error is not None:
            error, self._late_error = self._late_error, None
            raise error
        return not self._thread.is_alive()

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            if not self._ready.is_set():
                self._error = exc
            elif self._on_error is not None:
                self._on_error(exc)
            else:
                self._late_error = exc
        finally:
            self._loop = None
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._result.append(await self._start())
        try:
            self._ready.set()
            await self._stopping.wait()
        finally:
            await self._stop()


class ContextServer:
    """A server with coroutine ``start``/``stop``: ``async with`` runs it in the caller's loop,
    ``with`` in a :class:`ServerThread` named by ``thread_name`` (``what`` in its errors)."""

    what: ClassVar[str] = "the server"
    thread_name: ClassVar[str] = "mailconduit-server"
    _thread: ServerThread[None] | None = None

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __enter__(self) -> Self:
        """Run the server in a background thread with its own event loop."""
        self._thread = ServerThread(
            self.start, self.stop, what=self.what, name=self.thread_name, timeout=10
        )
        self._thread.begin()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            thread, self._thread = self._thread, None
            thread.end()


class PipeliningHandler:
    """aiosmtpd hooks base: EHLO also advertises PIPELINING.

    aiosmtpd reads one command at a time from a buffered stream, so clients may pipeline
    (RFC 2920); it just does not say so.
    """

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]


async def close_listeners(
    servers: Iterable[asyncio.Server], sessions: Iterable[SMTP], *, timeout: float | None = None
) -> None:
    """Stop listening, close every open session, wait (at most ``timeout``) for the listeners."""
    servers = list(servers)
    for server in servers:
        server.close()
    for smtp in list(sessions):
        if smtp.transport is not None:
            smtp.transport.close()
    for server in servers:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), timeout)

"""A run's SMTP sessions: opened, fed, and opened again after a drop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from mailconduit.delivery.feed import Feed
from mailconduit.delivery.parts import RunParts
from mailconduit.errors import AuthenticationError, MailconduitError, SMTPError
from mailconduit.journal import RunStatus
from mailconduit.smtp import SendOutcome, SMTPSession, StreamEnd, StreamResult

__all__ = ["MAX_CONNECT_FAILURES", "SessionOpener", "SessionPool"]

#: Consecutive failed connection attempts (with back-off) before the run gives up.
MAX_CONNECT_FAILURES = 5

SessionOpener = Callable[[], Awaitable[SMTPSession]]


class SessionPool:
    """Owns a run's sessions: each worker opens one, streams the feed through it, and opens
    another after a drop (backing off, slowing the limiter after a 421), until the feed
    ends or the run stops. Consecutive connection failures are counted across workers."""

    def __init__(
        self,
        open_session: SessionOpener,
        parts: RunParts,
        *,
        feed: Feed,
        on_send: Callable[[SendOutcome], None],
        logs_in: bool,
        keep: Callable[[SMTPSession], bool] | None = None,
    ) -> None:
        self._open_session = open_session
        self._feed = feed
        self._control = parts.control
        self._limiter = parts.limiter
        self._on_send = on_send
        self._keep = keep
        self._connect_failures = 0
        #: The exception that ended a worker, if one did.
        self.crash: BaseException | None = None
        # The first session logs in alone: bad credentials then cost one refused AUTH,
        # not one per session (providers lock accounts after a few). Without credentials
        # there is nothing to protect: every session connects at once.
        self._first_login = asyncio.Event()
        if not logs_in:
            self._first_login.set()

    def start(self, count: int) -> list[asyncio.Task[None]]:
        """Start ``count`` workers, one session at a time each."""
        return [asyncio.create_task(self._worker(i)) for i in range(count)]

    async def _worker(self, index: int) -> None:
        try:
            if index > 0 and not await self._control.until(self._first_login):
                return
            await self._sessions()
        except Exception as exc:
            self.crash = exc
            self._control.stop(RunStatus.FAILED, f"internal error in a session: {exc!r}")
            raise
        finally:
            if index == 0:
                self._first_login.set()  # e.g. nothing to send: never keep the others waiting

    async def _sessions(self) -> None:
        """Open a session and stream through it, again and again, until there is no more."""
        control = self._control
        while not control.stopping:
            if self._feed.ended:
                return
            session = await self._open()
            if session is None:
                if control.stopping:
                    return
                continue
            try:
                result = await session.stream(self._feed, self._on_send)
            except BaseException:
                await self._release(session)
                raise
            if not self._kept(session, result):
                await self._release(session)
            if result.reason is StreamEnd.SOURCE_EXHAUSTED:
                return
            if result.reason is StreamEnd.SERVER_CLOSING:
                if self._limiter is not None:
                    self._limiter.throttle()
                await control.pause(1.0)
            elif result.reason is StreamEnd.CONNECTION_LOST:
                await control.pause(0.2)

    async def _release(self, session: SMTPSession) -> None:
        """Close a session after its stream (saying QUIT when there is nothing left to send)."""
        if session.is_open and self._feed.ended:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.quit(wait=False), 5)
        session.close()

    def _kept(self, session: SMTPSession, result: StreamResult) -> bool:
        """Whether ``keep`` took the session: only one whose stream ran out of messages,
        with nothing in flight and the connection still up (an agent's next chunk)."""
        return (
            self._keep is not None
            and result.reason is StreamEnd.SOURCE_EXHAUSTED
            and session.is_open
            and self._keep(session)
        )

    async def _open(self) -> SMTPSession | None:
        """A connected session; None after a failure (the run is stopped when it must end)."""
        control = self._control
        try:
            session = await self._open_session()
        except AuthenticationError as exc:
            control.refused_credentials(exc)
            return None
        except (SMTPError, OSError) as exc:
            self._first_login.set()  # not a credentials problem: the others may try
            self._connect_failures += 1
            if self._connect_failures >= MAX_CONNECT_FAILURES:
                control.stop(RunStatus.INTERRUPTED, f"cannot open an SMTP session: {exc}")
                return None
            await control.pause(min(30.0, 0.25 * 2 ** min(self._connect_failures, 7)))
            return None
        except MailconduitError as exc:
            control.stop(RunStatus.ABORTED, str(exc))
            return None
        self._connect_failures = 0
        self._first_login.set()
        return session

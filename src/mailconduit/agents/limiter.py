"""One rate limit for a whole connection, whatever the number of workers sending through it.

Every grant is one transaction on the shared journal (a GCRA per configured window, the
daily cap as an atomic count), so three workers capped at 20/s send 20/s together. The
slow-down after a 421 / 4.7.x is a row of its own: the first complaint cuts the shared
rate once and pauses every worker; complaints heard during that pause cut nothing more.
Before each grant the limiter asks its ``gate`` whether this worker may still send at all
(its chunk's lease): a worker that lost its lease stops before the next message.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

from mailconduit.config import RateLimit
from mailconduit.delivery.ratelimit import RateLimiter
from mailconduit.errors import RunAbortedError
from mailconduit.journal.agents import AgentStore

__all__ = ["SharedLimiter"]

#: How often a worker without a configured rate looks for a shared slow-down.
THROTTLE_POLL_SECONDS = 0.5
#: What try_acquire() asks to wait when the journal cannot be reached for a moment.
_UNREACHABLE_WAIT = 0.5
_PAUSE, _MAX_PAUSE, _DECREASE, _MIN_RATE = 2.0, 60.0, 0.5, 0.1
_RECOVERY_INTERVAL, _RECOVERY_FRACTION = 10.0, 0.1


class SharedLimiter(RateLimiter):
    """A :class:`RateLimiter` whose buckets, daily cap and slow-down live in the journal."""

    def __init__(
        self,
        limit: RateLimit,
        *,
        store: AgentStore,
        connection: str,
        gate: Callable[[], str],
    ) -> None:
        super().__init__(limit)
        self._store = store
        self._connection = connection
        self._gate = gate
        self._limit = limit
        self._windows: list[tuple[str, float, float]] = []
        for name, per_window, window in (
            ("second", limit.per_second, 1.0),
            ("minute", limit.per_minute, 60.0),
            ("hour", limit.per_hour, 3600.0),
        ):
            if per_window:
                interval = window / per_window
                burst = 1.0 if window == 1.0 else max(1.0, per_window)
                self._windows.append((name, interval, (burst - 1.0) * interval))
        self._configured = min((1.0 / w[1] for w in self._windows), default=None)
        self._polled = float("-inf")
        self._slowed = False
        self._grants: collections.deque[float] = collections.deque(maxlen=2048)

    def try_acquire(self) -> float:
        reason = self._gate()
        if reason:
            raise RunAbortedError(reason)
        if not self._windows and not self._limit.per_day and not self._shared_slowdown():
            self._grants.append(time.monotonic())
            return 0.0
        try:
            wait, exhausted = self._store.acquire(
                self._connection,
                self._windows,
                daily_cap=self._limit.per_day,
                min_rate=_MIN_RATE,
                recovery_interval=_RECOVERY_INTERVAL,
            )
        except Exception:  # psycopg.Error or a dropped connection: ask again shortly
            return _UNREACHABLE_WAIT
        if exhausted:
            raise RunAbortedError(
                f"daily cap of {self._limit.per_day} messages reached for today (UTC) on "
                f"connection {self._connection!r}; resume the run tomorrow"
            )
        if wait <= 0.0:
            self._grants.append(time.monotonic())
        return wait

    async def acquire(self) -> None:
        while (wait := self.try_acquire()) > 0.0:
            await asyncio.sleep(wait)

    def throttle(self) -> None:
        """The server asked to slow down: cut the connection's shared rate, once for all."""
        base = self._configured or self._measured()
        try:
            self._store.throttle(
                self._connection,
                base_rate=base,
                pause=_PAUSE,
                max_pause=_MAX_PAUSE,
                decrease=_DECREASE,
                min_rate=_MIN_RATE,
                recovery_fraction=_RECOVERY_FRACTION,
            )
        except Exception:  # the journal is unreachable: this worker slows down alone
            super().throttle()
            return
        self._slowed = True
        self._polled = time.monotonic()

    def _shared_slowdown(self) -> bool:
        now = time.monotonic()
        if now - self._polled >= THROTTLE_POLL_SECONDS:
            self._polled = now
            try:
                self._slowed = self._store.throttled_until(self._connection) is not None
            except Exception:
                self._slowed = False
        return self._slowed

    def _measured(self) -> float:
        """This worker's grants per second over the last ten seconds."""
        now = time.monotonic()
        recent = [t for t in self._grants if now - t <= 10.0]
        if len(recent) < 2:
            return _MIN_RATE * 10
        return max(_MIN_RATE, len(recent) / max(now - recent[0], 0.1))

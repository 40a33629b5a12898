"""Pool-wide pacing of sends: token buckets, a daily cap and adaptive back-off.

One :class:`RateLimiter` is shared by every session of a run. ``await acquire()``
before each message waits (one computed sleep, cancellable) until every configured
bucket holds a token. Bursts: a per-second rate is paced evenly, one token at a
time, so no one-second span ever carries more than the rate (providers count per
second); longer windows hold their whole window's worth, so ``per_minute=60``
allows 60 at once and then one per second. Over any span of ``T`` seconds a bucket admits
at most ``burst + rate * T`` messages (so up to twice the rate in the first window);
combine a per-second rate with a per-minute one to smooth bursts.

When a server answers 421 or 4.7.x the runner calls :meth:`RateLimiter.throttle`:
the whole pool pauses, the effective rate is halved (never below a floor), and it
grows back by a fixed step after each quiet period (AIMD, as TCP does). Without a
configured rate the cut starts from the send rate measured over the last seconds.
The daily cap counts granted sends per UTC day; the caller persists
:meth:`RateLimiter.daily_usage` and hands it back to the next limiter.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mailconduit.config import RateLimit
from mailconduit.errors import ConfigError, FieldError, RunAbortedError
from mailconduit.journal import DailyUsage

__all__ = ["RateLimiter", "RateLimiterStats"]

_SECONDS_PER_DAY = 86_400
#: A measurement sample (monotonic time, grants so far) is taken every this many grants.
_SAMPLE_EVERY = 64
#: How far back the "recent" send rate looks.
_MEASURE_WINDOW_S = 10.0
#: A bucket this close to a whole token has one: float rounding must not cause a
#: second, sub-microsecond sleep (or, on a fake clock, an endless one).
_TOKEN_EPSILON = 1e-6
#: What try_acquire() asks to wait while an acquire() holds the line.
_RETRY_LOCKED = 0.001


@dataclass(frozen=True, slots=True)
class RateLimiterStats:
    """A snapshot for progress displays.

    ``effective_rate`` is in messages per second, ``None`` when nothing limits the pool;
    ``paused_for`` is how long the current throttling pause still lasts.
    """

    effective_rate: float | None
    configured_rate: float | None
    throttled: int
    paused_for: float
    daily_count: int
    daily_cap: int
    exhausted: bool


class _TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; refilled lazily on use."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, *, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = now

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def wait_for_token(self, now: float) -> float:
        """Seconds until one token is available (0 if it is now)."""
        self.refill(now)
        return 0.0 if self.tokens >= 1.0 - _TOKEN_EPSILON else (1.0 - self.tokens) / self.rate


class RateLimiter:
    """Decides when the next message of the pool may go; shared by all sessions.

    ``clock`` (monotonic seconds), ``wall_clock`` (epoch seconds, for the calendar day)
    and ``sleep`` are injectable so tests run on a fake clock. The back-off knobs:
    ``pause`` is the first pool-wide pause after a throttle (doubling on repeated
    throttles, up to ``max_pause``), ``decrease`` the multiplicative cut, ``min_rate``
    the floor (msg/s), ``recovery_interval`` the quiet time before each additive step
    of ``recovery_fraction`` times the rate in force before the first cut.
    """

    def __init__(
        self,
        limit: RateLimit | None = None,
        *,
        daily_usage: DailyUsage | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        pause: float = 2.0,
        max_pause: float = 60.0,
        decrease: float = 0.5,
        min_rate: float = 0.1,
        recovery_interval: float = 10.0,
        recovery_fraction: float = 0.1,
    ) -> None:
        limit = limit or RateLimit()
        _validate(
            limit,
            pause=pause,
            max_pause=max_pause,
            decrease=decrease,
            min_rate=min_rate,
            recovery_interval=recovery_interval,
            recovery_fraction=recovery_fraction,
        )
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._pause = pause
        self._max_pause = max_pause
        self._decrease = decrease
        self._min_rate = min_rate
        self._recovery_interval = recovery_interval
        self._recovery_fraction = recovery_fraction

        now = clock()
        self._buckets: list[_TokenBucket] = []
        for per_window, window in (
            (limit.per_second, 1.0),
            (limit.per_minute, 60.0),
            (limit.per_hour, 3600.0),
        ):
            if per_window:
                self._buckets.append(
                    # Per second: paced evenly (a burst of one), so no one-second span ever
                    # sees more than the rate. Longer windows hold their whole allowance.
                    _TokenBucket(
                        rate=per_window / window,
                        burst=1.0 if window == 1.0 else max(1.0, per_window),
                        now=now,
                    )
                )
        self._configured_rate = min((b.rate for b in self._buckets), default=None)

        self._daily_cap = limit.per_day
        self._day = self._today()
        self._daily_count = 0
        if daily_usage is not None and daily_usage.day == self._day_date():
            self._daily_count = daily_usage.count

        # Adaptive back-off state: the extra bucket exists only while throttled.
        self._adaptive: _TokenBucket | None = None
        self._ceiling = 0.0  # the rate the adaptive bucket recovers towards
        self._step = 0.0
        self._last_change = now
        self._paused_until = now
        self._current_pause = pause
        self._throttled = 0

        self._granted = 0
        self._samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=64)
        self._samples.append((now, 0))
        self._lock = asyncio.Lock()
        self._free = not self._buckets and not self._daily_cap

    # ------------------------------------------------------------------ public API

    async def acquire(self) -> None:
        """Wait until the next message may go, then count it.

        Raises :class:`~mailconduit.errors.RunAbortedError` once the daily cap is
        exhausted. Cancelling the wait consumes nothing.
        """
        if self._free:
            self._granted += 1
            if not self._granted % _SAMPLE_EVERY:
                self._samples.append((self._clock(), self._granted))
            return
        async with self._lock:
            while True:
                now = self._clock()
                self._check_daily()
                wait = self._wait_seconds(now)
                if wait <= 0.0:
                    self._take(now)
                    return
                await self._sleep(wait)

    def try_acquire(self) -> float:
        """Count the next message and return 0.0 if it may go now; otherwise take nothing
        and return the seconds to wait before asking again.

        The non-blocking form of :meth:`acquire`, for callers that pull messages from
        inside the event loop. Raises :class:`~mailconduit.errors.RunAbortedError` once
        the daily cap is exhausted.
        """
        if self._free:
            self._granted += 1
            if not self._granted % _SAMPLE_EVERY:
                self._samples.append((self._clock(), self._granted))
            return 0.0
        if self._lock.locked():
            return _RETRY_LOCKED  # an acquire() is waiting: it is first in line
        now = self._clock()
        self._check_daily()
        wait = self._wait_seconds(now)
        if wait <= 0.0:
            self._take(now)
            return 0.0
        return wait

    def throttle(self) -> None:
        """The server asked us to slow down (421, 4.7.x): pause the pool and cut its rate.

        Calls during a pause already in force are counted but cut nothing more, so
        sixteen sessions hit by the same 421 slow the pool down once.
        """
        now = self._clock()
        self._throttled += 1
        if now < self._paused_until:
            return
        self._recover(now)
        if self._adaptive is None:
            base = self._configured_rate or self._measured_rate(now)
            self._ceiling = base
            self._step = max(base * self._recovery_fraction, self._min_rate)
            self._current_pause = self._pause
        else:
            base = self._adaptive.rate
            self._current_pause = min(self._current_pause * 2.0, self._max_pause)
        rate = max(base * self._decrease, min(self._min_rate, base))
        burst = max(1.0, rate / 10.0)
        self._adaptive = _TokenBucket(rate=rate, burst=burst, now=now)
        self._adaptive.tokens = 1.0
        self._paused_until = now + self._current_pause
        self._adaptive.updated = self._paused_until
        self._last_change = self._paused_until
        self._free = False

    def stats(self) -> RateLimiterStats:
        """Current effective rate, throttle count, pause left and daily usage."""
        now = self._clock()
        self._recover(now)
        self._check_daily()
        rates = [r for r in (self._configured_rate, self._adaptive_rate()) if r is not None]
        return RateLimiterStats(
            effective_rate=min(rates) if rates else None,
            configured_rate=self._configured_rate,
            throttled=self._throttled,
            paused_for=max(0.0, self._paused_until - now),
            daily_count=self._daily_count,
            daily_cap=self._daily_cap,
            exhausted=self.exhausted,
        )

    @property
    def exhausted(self) -> bool:
        """True once today's cap is used up: nothing more may be sent until tomorrow (UTC)."""
        self._check_daily()
        return bool(self._daily_cap) and self._daily_count >= self._daily_cap

    def daily_usage(self) -> DailyUsage:
        """Today's count, for the caller to persist and hand to the next limiter."""
        self._check_daily()
        return DailyUsage(day=self._day_date(), count=self._daily_count)

    # ------------------------------------------------------------------ internals

    def _wait_seconds(self, now: float) -> float:
        if self.exhausted:
            raise RunAbortedError(
                f"daily cap of {self._daily_cap} messages reached for "
                f"{self._day_date().isoformat()} (UTC); resume the run tomorrow"
            )
        wait = self._paused_until - now
        self._recover(now)
        for bucket in self._buckets:
            wait = max(wait, bucket.wait_for_token(now))
        if self._adaptive is not None:
            wait = max(wait, self._adaptive.wait_for_token(now))
        return wait

    def _take(self, now: float) -> None:
        for bucket in self._buckets:
            bucket.tokens -= 1.0
        if self._adaptive is not None:
            self._adaptive.tokens -= 1.0
        self._daily_count += 1
        self._granted += 1
        if not self._granted % _SAMPLE_EVERY:
            self._samples.append((now, self._granted))

    def _recover(self, now: float) -> None:
        """Additive increase: one step per quiet ``recovery_interval`` since the last change."""
        bucket = self._adaptive
        if bucket is None or now < self._last_change + self._recovery_interval:
            return
        steps = math.floor((now - self._last_change) / self._recovery_interval)
        rate = bucket.rate + steps * self._step
        self._last_change += steps * self._recovery_interval
        if rate >= self._ceiling:
            self._adaptive = None
            self._free = not self._buckets and not self._daily_cap
            return
        bucket.refill(now)
        bucket.rate = rate
        bucket.burst = max(1.0, rate / 10.0)

    def _adaptive_rate(self) -> float | None:
        return None if self._adaptive is None else self._adaptive.rate

    def _measured_rate(self, now: float) -> float:
        """Grants per second over roughly the last ``_MEASURE_WINDOW_S`` seconds."""
        start_t, start_n = self._samples[0]
        for t, n in self._samples:
            if now - t <= _MEASURE_WINDOW_S:
                break
            start_t, start_n = t, n
        elapsed = now - start_t
        sent = self._granted - start_n
        if elapsed <= 0.0 or sent <= 0:
            return self._min_rate
        return max(self._min_rate, sent / elapsed)

    def _today(self) -> int:
        return int(self._wall_clock() // _SECONDS_PER_DAY)

    def _day_date(self) -> dt.date:
        return dt.date(1970, 1, 1) + dt.timedelta(days=self._day)

    def _check_daily(self) -> None:
        if not self._daily_cap:
            return
        today = self._today()
        if today != self._day:
            self._day = today
            self._daily_count = 0


def _validate(limit: RateLimit, **knobs: float) -> None:
    errors = [
        FieldError(f"rate.{name}", "must not be negative (0 means no limit)")
        for name in ("per_second", "per_minute", "per_hour", "per_day")
        if getattr(limit, name) < 0 or not math.isfinite(getattr(limit, name))
    ]
    errors += [
        FieldError(name, "must be a positive number")
        for name, value in knobs.items()
        if not (math.isfinite(value) and value > 0)
    ]
    if knobs["decrease"] >= 1:
        errors.append(FieldError("decrease", "must be below 1 (it cuts the rate)"))
    if errors:
        raise ConfigError.for_fields("rate limit", errors)

"""The pool-wide rate limiter: token buckets, daily cap, adaptive back-off.

Every test runs on a fake clock whose sleep advances time (the only mocking allowed).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import tracemalloc
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from mailconduit.config import RateLimit
from mailconduit.delivery.ratelimit import RateLimiter
from mailconduit.errors import ConfigError, RunAbortedError
from mailconduit.journal import DailyUsage

DAY = 86_400.0
# 2026-11-29 12:00:00 UTC
NOON = dt.datetime(2026, 11, 29, 12, tzinfo=dt.UTC).timestamp()


def run_async(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test body in a fresh event loop, bounded by a timeout."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 20))

    return wrapper


class FakeClock:
    """Monotonic and wall time that only move when told to, or when a sender sleeps."""

    def __init__(self, wall: float = NOON) -> None:
        self.now = 1000.0
        self.wall_start = wall
        self.sleeps: list[float] = []
        self.clock_calls = 0

    def monotonic(self) -> float:
        self.clock_calls += 1
        return self.now

    def wall(self) -> float:
        return self.wall_start + (self.now - 1000.0)

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        assert seconds > 0, "the limiter must never sleep for nothing"
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def limiter_on(clock: FakeClock, limit: RateLimit | None = None, **kw: object) -> RateLimiter:
    return RateLimiter(
        limit, clock=clock.monotonic, wall_clock=clock.wall, sleep=clock.sleep, **kw  # type: ignore[arg-type]
    )


async def grant_times(limiter: RateLimiter, clock: FakeClock, count: int) -> list[float]:
    times = []
    for _ in range(count):
        await limiter.acquire()
        times.append(clock.now)
    return times


@run_async
async def test_unlimited_acquire_never_sleeps_and_rarely_reads_the_clock() -> None:
    clock = FakeClock()
    limiter = limiter_on(clock)
    calls_after_init = clock.clock_calls
    for _ in range(6400):
        await limiter.acquire()
    assert clock.sleeps == []
    assert clock.clock_calls - calls_after_init == 6400 // 64
    stats = limiter.stats()
    assert stats.effective_rate is None and stats.configured_rate is None
    assert stats.throttled == 0 and not stats.exhausted


@run_async
async def test_unlimited_acquire_allocates_nothing_that_stays() -> None:
    clock = FakeClock()
    limiter = limiter_on(clock)
    for _ in range(64 * 64):  # fill the bounded sample ring first
        await limiter.acquire()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(50_000):
            await limiter.acquire()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 4096
    assert peak - before < 16_384


@run_async
async def test_per_minute_allows_its_burst_then_one_per_second() -> None:
    clock = FakeClock()
    limiter = limiter_on(clock, RateLimit(per_minute=60))
    times = await grant_times(limiter, clock, 63)
    assert times[:60] == [1000.0] * 60
    assert times[60:] == pytest.approx([1001.0, 1002.0, 1003.0])
    assert clock.sleeps == pytest.approx([1.0, 1.0, 1.0])  # one sleep per wait, no polling
    assert limiter.stats().effective_rate == pytest.approx(1.0)


@run_async
async def test_fractional_per_second_holds_one_token() -> None:
    clock = FakeClock()
    limiter = limiter_on(clock, RateLimit(per_second=0.5))
    times = await grant_times(limiter, clock, 3)
    assert times == pytest.approx([1000.0, 1002.0, 1004.0])


@run_async
async def test_combined_buckets_obey_the_tightest_one_at_each_moment() -> None:
    clock = FakeClock()
    limiter = limiter_on(clock, RateLimit(per_second=10, per_minute=30))
    times = await grant_times(limiter, clock, 40)
    # the per-second bucket paces evenly, one every 0.1 s, while the minute bucket lasts ...
    assert times[:10] == pytest.approx([1000.0 + 0.1 * i for i in range(10)])
    # ... then the minute bucket's refill, one every 2 s, is the limit
    assert [b - a for a, b in zip(times[-4:], times[-3:], strict=False)] == pytest.approx([2.0] * 3)
    for i, start in enumerate(times):
        assert sum(1 for t in times[i:] if t - start < 1.0) <= 10  # never above 10 in any second
        for j in range(i, len(times)):
            span = times[j] - start
            assert j - i + 1 <= 30 + 0.5 * span + 1e-9  # the minute bucket: burst + rate x T


@run_async
async def test_idle_time_refills_up_to_the_burst_only() -> None:
    clock = FakeClock()
    limiter = limiter_on(clock, RateLimit(per_second=5, per_minute=100))
    await grant_times(limiter, clock, 5)
    clock.advance(3600)
    rested = clock.now
    times = await grant_times(limiter, clock, 6)
    # a long rest never lets more than the per-second rate through in a second
    assert times == pytest.approx([rested + 0.2 * i for i in range(6)])


@run_async
async def test_concurrent_senders_are_served_in_turn_without_exceeding_the_rate() -> None:
    clock = FakeClock()
    limiter = limiter_on(clock, RateLimit(per_second=4))
    granted: list[tuple[int, float]] = []

    async def sender(n: int) -> None:
        for _ in range(3):
            await limiter.acquire()
            granted.append((n, clock.now))

    await asyncio.wait_for(asyncio.gather(*(sender(n) for n in range(8))), 5)
    times = [t for _, t in granted]
    assert len(times) == 24
    assert times == sorted(times)
    assert times == pytest.approx([1000.0 + i / 4 for i in range(24)])
    assert {n for n, _ in granted} == set(range(8))


@run_async
async def test_cancelled_wait_consumes_no_token() -> None:
    clock = FakeClock()
    never = asyncio.Event()

    async def blocking_sleep(seconds: float) -> None:
        clock.sleeps.append(seconds)
        await never.wait()

    limiter = RateLimiter(
        RateLimit(per_second=1, per_day=100),
        clock=clock.monotonic,
        wall_clock=clock.wall,
        sleep=blocking_sleep,
    )
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert clock.sleeps == [pytest.approx(1.0)]
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter.stats().daily_count == 1
    clock.advance(1.0)
    await asyncio.wait_for(limiter.acquire(), 1)  # the token is still there, lock released
    assert limiter.stats().daily_count == 2
    assert len(clock.sleeps) == 1


@run_async
async def test_throttle_pauses_the_pool_halves_the_rate_and_recovers_additively() -> None:
    clock = FakeClock()
    limiter = limiter_on(
        clock, RateLimit(per_second=10), pause=2.0, recovery_interval=10.0, recovery_fraction=0.1
    )
    await grant_times(limiter, clock, 10)
    throttled_at = clock.now
    limiter.throttle()
    stats = limiter.stats()
    assert stats.throttled == 1
    assert stats.effective_rate == pytest.approx(5.0)
    assert stats.paused_for == pytest.approx(2.0)
    times = await grant_times(limiter, clock, 3)
    resumed = throttled_at + 2.0
    assert times[0] == pytest.approx(resumed)  # nobody sends during the pause
    assert times[1] - times[0] == pytest.approx(0.2)  # then 5/s, not 10/s
    assert times[2] - times[1] == pytest.approx(0.2)
    # +1 msg/s (10 % of 10) per quiet 10 s after the pause
    clock.now = resumed + 10.0
    assert limiter.stats().effective_rate == pytest.approx(6.0)
    clock.now = resumed + 39.0
    assert limiter.stats().effective_rate == pytest.approx(8.0)
    clock.now = resumed + 50.0
    stats = limiter.stats()
    assert stats.effective_rate == pytest.approx(10.0)  # back to the configured rate
    assert stats.throttled == 1


@run_async
async def test_throttles_during_a_pause_are_counted_but_cut_once() -> None:
    clock = FakeClock()
    limiter = limiter_on(clock, RateLimit(per_second=8))
    for _ in range(16):  # sixteen sessions get the same 421
        limiter.throttle()
    stats = limiter.stats()
    assert stats.throttled == 16
    assert stats.effective_rate == pytest.approx(4.0)


@run_async
async def test_repeated_throttling_cuts_again_doubles_the_pause_and_keeps_a_floor() -> None:
    clock = FakeClock()
    limiter = limiter_on(clock, RateLimit(per_second=1), pause=1.0, max_pause=4.0, min_rate=0.1)
    pauses = []
    for _ in range(8):
        limiter.throttle()
        pauses.append(limiter.stats().paused_for)
        clock.advance(pauses[-1])
    assert pauses == pytest.approx([1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0])
    assert limiter.stats().effective_rate == pytest.approx(0.1)  # 1 → 0.5 → ... floor 0.1


@run_async
async def test_without_a_configured_rate_throttling_imposes_half_the_measured_rate() -> None:
    clock = FakeClock()
    limiter = limiter_on(clock, recovery_interval=5.0, recovery_fraction=0.25)
    for _ in range(30 * 20):  # 20 msg/s for 30 s
        await limiter.acquire()
        clock.advance(0.05)
    assert clock.sleeps == []
    limiter.throttle()
    throttled_at = clock.now
    stats = limiter.stats()
    assert stats.configured_rate is None
    assert stats.effective_rate == pytest.approx(10.0, rel=0.1)
    times = await grant_times(limiter, clock, 3)
    assert times[0] == pytest.approx(throttled_at + 2.0)  # the default pause
    assert stats.effective_rate is not None
    assert times[2] - times[1] == pytest.approx(1 / stats.effective_rate)
    # recovered to the measured rate after enough quiet time: no limit again
    clock.advance(5.0 * 5)
    assert limiter.stats().effective_rate is None
    sleeps = len(clock.sleeps)
    for _ in range(100):
        await limiter.acquire()
    assert len(clock.sleeps) == sleeps


@run_async
async def test_throttle_before_anything_was_sent_uses_the_floor() -> None:
    clock = FakeClock()
    limiter = limiter_on(clock, min_rate=0.5)
    limiter.throttle()
    assert limiter.stats().effective_rate == pytest.approx(0.5)


@run_async
async def test_daily_cap_stops_at_the_cap_and_resets_at_utc_midnight() -> None:
    clock = FakeClock()
    limiter = limiter_on(clock, RateLimit(per_day=3))
    await grant_times(limiter, clock, 3)
    assert limiter.exhausted
    with pytest.raises(RunAbortedError, match=r"daily cap of 3 .*2026-11-29"):
        await limiter.acquire()
    assert limiter.daily_usage() == DailyUsage(dt.date(2026, 11, 29), 3)
    clock.advance(DAY / 2)  # midnight UTC
    assert not limiter.exhausted
    assert limiter.stats().daily_count == 0
    await limiter.acquire()
    assert limiter.daily_usage() == DailyUsage(dt.date(2026, 11, 30), 1)
    assert not limiter.stats().exhausted


@run_async
async def test_daily_usage_from_today_is_restored_and_from_yesterday_ignored() -> None:
    clock = FakeClock()
    today = dt.date(2026, 11, 29)
    limiter = limiter_on(clock, RateLimit(per_day=5), daily_usage=DailyUsage(today, 4))
    await limiter.acquire()
    with pytest.raises(RunAbortedError):
        await limiter.acquire()
    fresh = limiter_on(
        clock, RateLimit(per_day=5), daily_usage=DailyUsage(today - dt.timedelta(days=1), 5)
    )
    await grant_times(fresh, clock, 5)
    assert fresh.daily_usage().count == 5


@pytest.mark.parametrize(
    ("limit", "knobs", "field"),
    [
        (RateLimit(per_second=-1), {}, "rate.per_second"),
        (RateLimit(per_hour=float("nan")), {}, "rate.per_hour"),
        (RateLimit(), {"decrease": 1.0}, "decrease"),
        (RateLimit(), {"min_rate": 0.0}, "min_rate"),
        (RateLimit(), {"pause": -1.0}, "pause"),
    ],
)
def test_bad_settings_are_refused(limit: RateLimit, knobs: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        RateLimiter(limit, **knobs)  # type: ignore[arg-type]
    assert field in {e.field for e in info.value.errors}


@run_async
async def test_real_clock_paces_a_small_rate() -> None:
    limiter = RateLimiter(RateLimit(per_second=50))
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(60):  # burst of 50, then 10 more at 20 ms each
        await asyncio.wait_for(limiter.acquire(), 2)
    elapsed = loop.time() - start
    assert elapsed >= 0.17  # paced; no upper bound: a loaded machine may run late

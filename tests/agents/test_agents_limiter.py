"""The connection-wide limiter of agents on the real journal (PostgreSQL): two limiters stand
for two workers of one connection; they share its rate, its daily cap and its slow-down."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailconduit.agents.limiter import SharedLimiter
from mailconduit.config import RateLimit
from mailconduit.errors import RunAbortedError
from mailconduit.journal.agents import AgentStore

pytestmark = pytest.mark.postgres


@pytest.fixture
def stores(pg_url: str) -> Iterator[tuple[AgentStore, AgentStore]]:
    a, b = AgentStore(pg_url), AgentStore(pg_url)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def pair(stores: tuple[AgentStore, AgentStore], limit: RateLimit) -> list[SharedLimiter]:
    return [SharedLimiter(limit, store=s, connection="relay", gate=lambda: "") for s in stores]


def test_two_workers_share_one_rate(stores: tuple[AgentStore, AgentStore]) -> None:
    a, b = pair(stores, RateLimit(per_second=20))
    assert a.try_acquire() == 0.0
    wait = b.try_acquire()  # the other worker's grant counts here too
    assert 0.0 < wait <= 0.05
    # Granted as fast as they ask, alternating: one grant per 1/20 s of the shared clock.
    granted: list[float] = []
    while len(granted) < 10:
        for limiter in (a, b):
            if limiter.try_acquire() == 0.0:
                granted.append(stores[0].now())
    assert granted[-1] - granted[0] >= 9 * 0.05 - 0.01


def test_the_daily_cap_is_counted_once_for_all_workers(
    stores: tuple[AgentStore, AgentStore],
) -> None:
    a, b = pair(stores, RateLimit(per_day=5))
    grants = [limiter.try_acquire() for limiter in (a, b, a, b, a)]
    assert grants == [0.0] * 5
    for limiter in (a, b):
        with pytest.raises(RunAbortedError, match="daily cap of 5"):
            limiter.try_acquire()


def test_one_complaint_slows_the_whole_connection_once(
    stores: tuple[AgentStore, AgentStore],
) -> None:
    a, b = pair(stores, RateLimit(per_second=50))
    assert a.try_acquire() == 0.0
    a.throttle()  # a 421 heard by one worker
    assert b.try_acquire() > 1.0  # the other one pauses too
    b.throttle()
    a.throttle()  # complaints heard during the pause cut nothing more
    assert stores[0].throttle_state("relay") == (25.0, 3)


def test_a_worker_whose_lease_ran_out_gets_no_grant(stores: tuple[AgentStore, AgentStore]) -> None:
    limiter = SharedLimiter(
        RateLimit(), store=stores[0], connection="relay", gate=lambda: "stopped: lease lost"
    )
    with pytest.raises(RunAbortedError, match="lease lost"):
        limiter.try_acquire()

"""Retry timing (exponential back-off, full jitter, budgets) and error classification."""

from __future__ import annotations

import random

import pytest

from mailconduit.config import RetryPolicy
from mailconduit.delivery.retry import check_retry_policy, classify, next_delay
from mailconduit.errors import (
    AddressError,
    AuthenticationError,
    ConfigError,
    MailconduitError,
    PermanentSMTPError,
    RecipientRefusedError,
    RenderError,
    RunAbortedError,
    SMTPError,
    SourceError,
    ThrottledError,
    TransientSMTPError,
)
from mailconduit.smtp.replies import ReplyAction

ALMOST_ONE = 1.0 - 2**-53


def test_ceiling_doubles_from_initial_delay_up_to_max_delay() -> None:
    policy = RetryPolicy(max_attempts=10, max_seconds=1e9, initial_delay=1.5, max_delay=20.0)
    delays = [next_delay(policy, n, random=lambda: ALMOST_ONE) for n in range(1, 10)]
    assert delays == pytest.approx([1.5, 3.0, 6.0, 12.0, 20.0, 20.0, 20.0, 20.0, 20.0])


def test_full_jitter_scales_the_ceiling_by_the_random_draw() -> None:
    draws = iter([0.0, 0.25, 0.5])
    policy = RetryPolicy(max_attempts=5, initial_delay=2.0, max_delay=60.0)
    assert next_delay(policy, 1, random=lambda: next(draws)) == 0.0
    assert next_delay(policy, 2, random=lambda: next(draws)) == pytest.approx(1.0)  # 0.25 * 4
    assert next_delay(policy, 3, random=lambda: next(draws)) == pytest.approx(4.0)  # 0.5 * 8


def test_jittered_delays_stay_within_their_ceilings_and_spread() -> None:
    rng = random.Random(1234)
    policy = RetryPolicy(max_attempts=8, initial_delay=1.0, max_delay=30.0)
    for attempt in range(1, 8):
        ceiling = min(30.0, 2.0 ** (attempt - 1))
        delays = [next_delay(policy, attempt, random=rng.random) for _ in range(400)]
        assert all(d is not None and 0.0 <= d <= ceiling for d in delays)
        spread = [d for d in delays if d is not None]
        assert min(spread) < ceiling * 0.1 and max(spread) > ceiling * 0.9


def test_gives_up_after_max_attempts_counting_the_first() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert next_delay(policy, 1) is not None
    assert next_delay(policy, 2) is not None
    assert next_delay(policy, 3) is None
    assert next_delay(RetryPolicy(max_attempts=1), 1) is None


def test_time_budget_caps_the_delay_then_gives_up() -> None:
    policy = RetryPolicy(max_attempts=100, max_seconds=60.0, initial_delay=10.0, max_delay=40.0)
    def top(attempt: int, elapsed: float) -> float | None:
        return next_delay(policy, attempt, elapsed=elapsed, random=lambda: ALMOST_ONE)

    assert top(3, 10.0) == pytest.approx(40.0)
    assert top(3, 45.0) == pytest.approx(15.0)  # lands on the budget
    assert top(1, 60.0) is None
    assert top(1, 75.0) is None


def test_huge_attempt_numbers_do_not_overflow() -> None:
    policy = RetryPolicy(max_attempts=10**6, max_seconds=1e12, max_delay=300.0)
    assert next_delay(policy, 5000, random=lambda: ALMOST_ONE) == pytest.approx(300.0)


def test_attempt_numbers_start_at_one() -> None:
    with pytest.raises(ValueError, match="starts at 1"):
        next_delay(RetryPolicy(), 0)


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        (RetryPolicy(max_attempts=0), "retry.max_attempts"),
        (RetryPolicy(max_seconds=-1.0), "retry.max_seconds"),
        (RetryPolicy(initial_delay=float("inf")), "retry.initial_delay"),
        (RetryPolicy(initial_delay=10.0, max_delay=5.0), "retry.max_delay"),
    ],
)
def test_bad_policies_are_refused(policy: RetryPolicy, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_retry_policy(policy)
    assert [e.field for e in info.value.errors] == [field]
    with pytest.raises(ConfigError):
        next_delay(policy, 1)


@pytest.mark.parametrize(
    ("error", "action"),
    [
        (ThrottledError(421, "Too many connections"), ReplyAction.THROTTLE),
        (TransientSMTPError(450, "rate limited, slow down"), ReplyAction.THROTTLE),
        (TransientSMTPError(451, "try later", enhanced="4.7.1"), ReplyAction.THROTTLE),
        (TransientSMTPError(421, "closing"), ReplyAction.THROTTLE),
        (TransientSMTPError(451, "local error", enhanced="4.3.0"), ReplyAction.RETRY),
        (TransientSMTPError(452, "too many recipients", enhanced="4.5.3"), ReplyAction.RETRY),
        (TransientSMTPError(0, "connection lost after the final dot"), ReplyAction.RETRY),
        (TransientSMTPError(0, "timed out"), ReplyAction.RETRY),
        (ThrottledError(0, "pool told to slow down"), ReplyAction.THROTTLE),
        (PermanentSMTPError(550, "no such user", enhanced="5.1.1"), ReplyAction.FAIL_ROW),
        (PermanentSMTPError(552, "too big", enhanced="5.3.4"), ReplyAction.FAIL_ROW),
        (RecipientRefusedError(550, "refused"), ReplyAction.FAIL_ROW),
        (PermanentSMTPError(0, "TLS certificate refused"), ReplyAction.FAIL_ROW),
        (AuthenticationError(535, "bad credentials", enhanced="5.7.8"), ReplyAction.ABORT_RUN),
        (AuthenticationError(0, "no AUTH offered"), ReplyAction.ABORT_RUN),
        (SMTPError(250, "ok"), ReplyAction.RETRY),
        (RenderError("undefined variable", row_key="7"), ReplyAction.FAIL_ROW),
        (AddressError("bad address", address="x@"), ReplyAction.FAIL_ROW),
        (RunAbortedError("interrupted"), ReplyAction.ABORT_RUN),
        (ConfigError("bad settings"), ReplyAction.ABORT_RUN),
        (SourceError("unreadable"), ReplyAction.ABORT_RUN),
    ],
)
def test_classify_maps_each_error_to_what_happens_next(
    error: MailconduitError, action: ReplyAction
) -> None:
    assert classify(error) is action

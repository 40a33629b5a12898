"""When to try a transient failure again: exponential back-off with full jitter.

The delay before retry ``n`` is drawn uniformly from ``[0, min(max_delay,
initial_delay * 2**(n-1))]`` ("full jitter"). We chose it over decorrelated jitter
because it needs nothing but the attempt number, which the journal already keeps for
every row, so a resumed run picks up the same schedule; and because it spreads the
retries of many sessions that failed together (a server restart drops them all at
once) the most, which is what keeps them from failing together again.

:func:`classify` says what an error means for the row and the run; for replies it
defers to :func:`mailconduit.smtp.replies.classify`, the one reply classifier.
"""

from __future__ import annotations

import math
import random as _random
from collections.abc import Callable

from mailconduit.config import RetryPolicy
from mailconduit.errors import (
    AuthenticationError,
    ConfigError,
    FieldError,
    MailconduitError,
    PermanentSMTPError,
    RowError,
    SMTPError,
    ThrottledError,
)
from mailconduit.smtp.replies import ReplyAction
from mailconduit.smtp.replies import classify as classify_reply

__all__ = ["check_retry_policy", "classify", "next_delay"]

#: Beyond this many doublings the ceiling is max_delay anyway; it keeps 2**n finite.
_MAX_DOUBLINGS = 62


def next_delay(
    policy: RetryPolicy,
    attempt: int,
    *,
    elapsed: float = 0.0,
    random: Callable[[], float] = _random.random,
) -> float | None:
    """Seconds to wait after ``attempt`` failed attempts of a row, or None to give up.

    ``elapsed`` is the time since the row's first attempt: the delay never carries the
    next attempt past ``max_seconds``, and None comes once the attempts
    (``max_attempts`` counts the first one) or that budget are used up. ``random``
    returns a float in ``[0, 1)``; tests inject their own.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts failed attempts and starts at 1, not {attempt}")
    check_retry_policy(policy)
    remaining = policy.max_seconds - elapsed
    if attempt >= policy.max_attempts or remaining <= 0.0:
        return None
    ceiling = min(
        policy.max_delay,
        policy.initial_delay * 2.0 ** min(attempt - 1, _MAX_DOUBLINGS),
    )
    return min(random() * ceiling, remaining)


def classify(error: MailconduitError) -> ReplyAction:
    """What an error means next: retry the row, slow the pool, fail the row, or abort.

    A reply code decides when there is one (the error's class agrees with it when the
    session built it from the reply); without one (drop, timeout, TLS failure) the
    class decides. Row errors fail their row; any other error stops the run.
    """
    if isinstance(error, SMTPError):
        if error.code:
            action = classify_reply(error.code, error.enhanced, error.reply)
            if action is ReplyAction.SUCCESS:  # a 2xx/3xx wrapped as an error: protocol slip
                return ReplyAction.RETRY
            return action
        if isinstance(error, AuthenticationError):
            return ReplyAction.ABORT_RUN
        if isinstance(error, PermanentSMTPError):
            return ReplyAction.FAIL_ROW
        if isinstance(error, ThrottledError):
            return ReplyAction.THROTTLE
        return ReplyAction.RETRY
    if isinstance(error, RowError):
        return ReplyAction.FAIL_ROW
    return ReplyAction.ABORT_RUN


def check_retry_policy(policy: RetryPolicy) -> None:
    """Raise :class:`~mailconduit.errors.ConfigError` naming every wrong field of ``policy``."""
    errors: list[FieldError] = []
    if policy.max_attempts < 1:
        errors.append(FieldError("retry.max_attempts", "must be at least 1 (1 = no retry)"))
    for name in ("max_seconds", "initial_delay", "max_delay"):
        value = getattr(policy, name)
        if not (math.isfinite(value) and value >= 0):
            errors.append(FieldError(f"retry.{name}", "must be a number of seconds, 0 or more"))
    if not errors and policy.max_delay < policy.initial_delay:
        errors.append(
            FieldError("retry.max_delay", "must not be shorter than retry.initial_delay")
        )
    if errors:
        raise ConfigError.for_fields("retry policy", errors)

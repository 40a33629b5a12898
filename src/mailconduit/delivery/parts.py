"""The run-wide collaborators of a run's active parts, built once by the Runner."""

from __future__ import annotations

from dataclasses import dataclass

from mailconduit.delivery.control import Control
from mailconduit.delivery.feed import Work
from mailconduit.delivery.ratelimit import RateLimiter
from mailconduit.delivery.recorder import Counters, Recorder

__all__ = ["RunParts"]


@dataclass(frozen=True, slots=True)
class RunParts:
    """What the producer, the settler and the session pool of one run share: the in-flight
    books, the stop state, the counts, the way into the journal and the rate limiter.

    The parts bind what they read for every message in their own ``__init__``, so a
    message's path does not go through this object.
    """

    work: Work
    control: Control
    counters: Counters
    recorder: Recorder
    limiter: RateLimiter | None

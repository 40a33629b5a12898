"""The agents' knobs, read once from the environment into one value object."""

from __future__ import annotations

import dataclasses
import os
import re

from mailconduit.errors import ConfigError, FieldError

__all__ = ["AgentSettings", "queue_name"]

_QUEUE_PREFIX = "mailconduit."
_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def queue_name(agent: str) -> str:
    """The broker queue an agent's workers consume."""
    return _QUEUE_PREFIX + agent


@dataclasses.dataclass(frozen=True, slots=True)
class AgentSettings:
    """Where the broker is, and how long leases, heartbeats and chunks last.

    ``lease_seconds``: a chunk's lease unless renewed (renewed every third of it);
    ``lease_margin``: a worker stops sending this long before its lease could run out;
    ``heartbeat_seconds``: how often a worker says it is alive (dead after 3 missed);
    ``reap_seconds``: how often a worker looks for expired chunks to publish again;
    ``chunk_rows``: rows per chunk (fewer for a slow, rate-limited connection);
    ``chunk_seconds``: the longest a chunk should take at the connection's rate, well
    within the broker's redelivery timeouts (Redis visibility, RabbitMQ consumer_timeout);
    ``chain_seconds``: a task whose chunk ended well goes on with the run's next queued
    chunk while it is younger than this (its sessions kept), then hands back to the broker;
    ``max_attempts``: a chunk whose workers died this many times fails with that reason.
    """

    broker_url: str
    lease_seconds: float = 30.0
    lease_margin: float = 3.0
    heartbeat_seconds: float = 5.0
    reap_seconds: float = 5.0
    chunk_rows: int = 1000
    chunk_seconds: float = 300.0
    chain_seconds: float = 60.0
    max_attempts: int = 5
    visibility_timeout: float = 3600.0

    @property
    def hold_seconds(self) -> float:
        """Longest a worker's database session may sit in a transaction or wait for a lock."""
        return max(0.5, self.lease_seconds / 3)

    @property
    def dead_after(self) -> float:
        """A worker whose last heartbeat is older than this is not live."""
        return self.heartbeat_seconds * 3

    @classmethod
    def from_env(cls, *, require_broker: bool = True) -> AgentSettings:
        """Settings from MAILCONDUIT_BROKER_URL and MAILCONDUIT_AGENT_* (one line per error)."""
        url = os.environ.get("MAILCONDUIT_BROKER_URL", "").strip()
        errors: list[FieldError] = []
        if require_broker and not url:
            errors.append(FieldError("MAILCONDUIT_BROKER_URL", "is not set; give the broker "
                                     "every agent shares (redis://HOST:6379/0 or "
                                     "amqp://USER:PASSWORD@HOST:5672//)"))  # fmt: skip
        elif url and not url.startswith(("redis://", "rediss://", "amqp://", "amqps://")):
            errors.append(FieldError("MAILCONDUIT_BROKER_URL",
                                     "must start with redis://, rediss://, amqp:// or amqps://"))
        values: dict[str, float] = {}
        for name, kind in (("lease_seconds", float), ("heartbeat_seconds", float),
                           ("reap_seconds", float), ("chunk_rows", int),
                           ("chain_seconds", float), ("max_attempts", int)):  # fmt: skip
            var = f"MAILCONDUIT_AGENT_{name.upper()}"
            text = os.environ.get(var, "").strip()
            if not text:
                continue
            try:
                value = kind(text)
            except ValueError:
                errors.append(FieldError(var, f"{text!r} is not a number"))
                continue
            if value <= 0:
                errors.append(FieldError(var, "must be above 0"))
            values[name] = value
        if errors:
            raise ConfigError.for_fields("agents", errors)
        settings = cls(url, **values)  # type: ignore[arg-type]
        margin = min(settings.lease_margin, settings.lease_seconds / 5)
        return dataclasses.replace(settings, lease_margin=margin)


def check_agent_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise ConfigError.for_fields(
            "agent", [FieldError("name", f"{name!r} must hold only letters, digits, '.', '_' "
                                 "or '-' (at most 64)")],
        )  # fmt: skip
    return name

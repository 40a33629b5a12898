"""Connections defined by environment variables holding URLs (``MAILCONDUIT_CONN_<NAME>``).

Kept apart from the store so that a command using such a connection never loads the
database layer.
"""

from __future__ import annotations

import os

from mailconduit.config.connection import Connection, connection_from_url
from mailconduit.errors import ConfigError

__all__ = ["ENV_PREFIX", "env_connections", "env_lookup", "env_var_name"]

ENV_PREFIX = "MAILCONDUIT_CONN_"


def env_var_name(name: str) -> str:
    """``my-smtp`` → ``MAILCONDUIT_CONN_MY_SMTP``."""
    return ENV_PREFIX + name.upper().replace("-", "_").replace(".", "_")


def env_connections() -> dict[str, Connection]:
    """Connections defined by MAILCONDUIT_CONN_<NAME> URLs, keyed by lower-cased name."""
    found: dict[str, Connection] = {}
    for var, url in sorted(os.environ.items()):
        if not var.startswith(ENV_PREFIX) or not url.strip():
            continue
        name = var[len(ENV_PREFIX) :].lower()
        found[name] = _parse(var, name, url)
    return found


def env_lookup(name: str) -> Connection | None:
    """The connection ``name`` from its environment variable, or None when it has none."""
    var = env_var_name(name)
    url = os.environ.get(var, "").strip()
    return _parse(var, name, url) if url else None


def _parse(var: str, name: str, url: str) -> Connection:
    try:
        return connection_from_url(name, url)
    except ConfigError as exc:
        raise ConfigError(f"environment variable {var}: {exc}", exc.errors) from None

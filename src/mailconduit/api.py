"""The facade the CLI, the web console and workers use: connections, Test Connection, exports.

The top layer (cli, web) talks to the rest only through this module, ``config`` and
``errors``, so every rule lives in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from mailconduit.config import Connection
from mailconduit.connections import store
from mailconduit.connections.store import TestStatus
from mailconduit.errors import ConfigError, FieldError

if TYPE_CHECKING:
    from mailconduit.smtp.probe import ProbeResult

__all__ = [
    "create_connection",
    "delete_connection",
    "get_connection",
    "list_connections",
    "serving",
    "test_connection",
    "update_connection",
]

BUILTIN = "local"


def get_connection(name: str) -> Connection:
    """Resolve a connection by name: the built-in ``local``, an environment URL, or the store."""
    if name == BUILTIN:
        from mailconduit.sink import local_connection

        return local_connection()
    return store.get(name)


def list_connections() -> list[tuple[Connection, TestStatus | None]]:
    """Every usable connection (built-in, environment, stored) with its last test result."""
    from mailconduit.sink import local_connection

    tests = store.last_tests()
    env = store.env_connections()
    out: list[tuple[Connection, TestStatus | None]] = [(local_connection(), None)]
    out += [(c, None) for c in env.values()]
    out += [(c, tests.get(c.name)) for c in store.list_stored() if c.name not in env]
    return out


def create_connection(data: Mapping[str, Any]) -> Connection:
    return store.create(data)


def update_connection(name: str, changes: Mapping[str, Any]) -> Connection:
    if name == BUILTIN:
        raise ConfigError.for_fields(
            "connection", [FieldError("name", "the built-in connection 'local' cannot be edited")]
        )
    return store.update_connection(name, changes)


def delete_connection(name: str) -> None:
    if name == BUILTIN:
        raise ConfigError.for_fields(
            "connection", [FieldError("name", "the built-in connection 'local' cannot be deleted")]
        )
    store.delete_connection(name)


@contextlib.contextmanager
def serving(conn: Connection) -> Iterator[Connection]:
    """Make sure the server behind ``conn`` is up for the block: starts the embedded sink for ``local``."""
    if conn.origin == "builtin" and conn.name == BUILTIN:
        from mailconduit.sink import ensure_running, local_connection

        with ensure_running():
            yield local_connection()
    else:
        yield conn


def test_connection(
    conn: Connection | str,
    *,
    send_to: str | None = None,
    allow_address: Any = None,
    record: bool = True,
) -> ProbeResult:
    """Run Test Connection stage by stage; the result says success or which stage failed and why."""
    from mailconduit.smtp.probe import probe

    if isinstance(conn, str):
        conn = get_connection(conn)
    with serving(conn) as live:
        result = asyncio.run(probe(live, send_to=send_to, allow_address=allow_address))
    if record and live.origin == "store":
        store.record_test(live.name, ok=result.ok, message=result.summary())
    return result

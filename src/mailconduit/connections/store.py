"""Stored SMTP connections: one row per connection, password Fernet-encrypted.

Connections also come from the environment (``MAILCONDUIT_CONN_<NAME>`` holding a URL,
as Airflow users know it); those are read-only and take precedence over stored ones.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import Select, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from mailconduit.config.connection import (
    Connection,
    derive_security,
    parse_server_url,
    validate_connection,
)
from mailconduit.config.secret import Secret
from mailconduit.connections.env import ENV_PREFIX, env_connections, env_lookup, env_var_name
from mailconduit.connections.oauth import clear_oauth
from mailconduit.crypto import decrypt, encrypt
from mailconduit.db.engines import engine, insert_new
from mailconduit.db.tables import connection_tests_table, connections_table
from mailconduit.errors import ConfigError, FieldError, NotFoundError
from mailconduit.home import LOCAL_CONNECTION
from mailconduit.view import Record, Shown

__all__ = [
    "ENV_PREFIX",
    "RESERVED_NAMES",
    "TestStatus",
    "create",
    "delete_connection",
    "env_connections",
    "env_var_name",
    "get",
    "last_tests",
    "list_stored",
    "recent_tests",
    "record_test",
    "update_connection",
]

#: Names that belong to built-in connections and cannot be stored.
RESERVED_NAMES = frozenset({LOCAL_CONNECTION})
#: Test results kept per connection.
KEPT_TESTS = 20


@dataclass(frozen=True, slots=True)
class TestStatus(Record):
    """The outcome of the last Test Connection, kept for the connection list."""

    ok: bool
    at: datetime
    message: str

    _SHOWN: ClassVar[Shown] = ("ok", "at", "message")


def _now() -> datetime:
    return datetime.now(UTC)


def _to_row(conn: Connection) -> dict[str, Any]:
    settings = conn.storable_dict()
    settings.pop("name")
    return {
        "name": conn.name,
        "settings": json.dumps(settings, sort_keys=True),
        "password_token": encrypt(conn.password.reveal()) if conn.password else None,
    }


def _from_row(row: Any) -> Connection:
    data: dict[str, Any] = json.loads(row.settings)
    data["name"] = row.name
    if row.password_token:
        data["password"] = Secret(decrypt(row.password_token, name=row.name))
    return validate_connection(data, origin="store")


def get(name: str) -> Connection:
    """The connection ``name`` from the environment or the store."""
    from_env = env_lookup(name)
    if from_env is not None:
        return from_env
    with engine().connect() as db:
        row = db.execute(select(connections_table).where(connections_table.c.name == name)).first()
    if row is None:
        raise NotFoundError("connection", name)
    return _from_row(row)


def list_stored() -> list[Connection]:
    with engine().connect() as db:
        rows = db.execute(select(connections_table).order_by(connections_table.c.name)).all()
    return [_from_row(r) for r in rows]


def last_tests() -> dict[str, TestStatus]:
    with engine().connect() as db:
        rows = db.execute(
            select(
                connections_table.c.name,
                connections_table.c.last_test_ok,
                connections_table.c.last_test_at,
                connections_table.c.last_test_message,
            ).where(connections_table.c.last_test_at.is_not(None))
        ).all()
    return {
        r.name: TestStatus(bool(r.last_test_ok), r.last_test_at, r.last_test_message or "")
        for r in rows
    }


def _check_name_free(name: str) -> None:
    if name.lower() in RESERVED_NAMES:
        raise ConfigError.for_fields(
            "connection", [FieldError("name", f"{name!r} is reserved for the built-in connection")]
        )
    if env_lookup(name) is not None:
        raise ConfigError.for_fields(
            "connection",
            [
                FieldError(
                    "name", f"{name!r} is defined by the environment variable {env_var_name(name)}"
                )
            ],
        )


def create(data: Mapping[str, Any]) -> Connection:
    """Validate and store a new connection; a duplicate name is a field error."""
    conn = validate_connection(data)
    _check_name_free(conn.name)
    now = _now()
    if not insert_new(connections_table, **_to_row(conn), created_at=now, updated_at=now):
        raise ConfigError.for_fields(
            "connection", [FieldError("name", f"a connection named {conn.name!r} already exists")]
        )
    return conn


def update_connection(name: str, changes: Mapping[str, Any]) -> Connection:
    """Apply ``changes`` to a stored connection, validating the result as a whole.

    When the server (URL or port) changes and no new password is given, the stored
    password is dropped rather than sent to a host it was not entered for.
    """
    if env_lookup(name) is not None:
        raise ConfigError.for_fields(
            "connection",
            [
                FieldError(
                    "name", f"{name!r} comes from {env_var_name(name)} and cannot be edited here"
                )
            ],
        )
    current = get(name)
    data = current.storable_dict(include_password=True)
    data.update({k: v for k, v in changes.items() if v is not None})
    # Security and the seed's "Use SSL" checkbox describe the same thing: when only one
    # of them changes, the other follows instead of contradicting it.
    if changes.get("use_ssl") is not None and changes.get("security") is None:
        data.pop("security", None)
    if changes.get("security") is not None and changes.get("use_ssl") is None:
        data.pop("use_ssl", None)
    server_changed = str(data.get("server_url")) != current.server_url or str(
        data.get("port")
    ) != str(current.port)
    if server_changed and not changes.get("password"):
        data.pop("password", None)
    if (
        server_changed
        and changes.get("security") is None
        and changes.get("use_ssl") is None
        and current.security
        is derive_security(current.use_ssl, current.port, parse_server_url(current.server_url)[0])
    ):
        data.pop("security", None)  # it was derived, so derive it again for the new server
    try:
        conn = validate_connection(data)
    except ConfigError as exc:
        if server_changed and not changes.get("password") and current.password:
            errs = [
                FieldError("password", "must be entered again because the server changed")
                if e.field == "password"
                else e
                for e in exc.errors
            ]
            raise ConfigError.for_fields("connection", errs) from None
        raise
    if conn.name != name:
        _check_name_free(conn.name)
    try:
        with engine().begin() as db:
            result = db.execute(
                update(connections_table)
                .where(connections_table.c.name == name)
                .values(**_to_row(conn), updated_at=_now())
            )
            if result.rowcount == 0:
                raise NotFoundError("connection", name)
    except IntegrityError:
        raise ConfigError.for_fields(
            "connection", [FieldError("name", f"a connection named {conn.name!r} already exists")]
        ) from None
    return conn


def delete_connection(name: str) -> None:
    with engine().begin() as db:
        result = db.execute(delete(connections_table).where(connections_table.c.name == name))
        db.execute(delete(connection_tests_table).where(connection_tests_table.c.name == name))
    clear_oauth(name)  # its OAuth2 sign-in and cached tokens go with it
    if result.rowcount == 0:
        if env_lookup(name) is not None:
            raise ConfigError.for_fields(
                "connection",
                [FieldError("name", f"{name!r} comes from {env_var_name(name)}; unset it instead")],
            )
        raise NotFoundError("connection", name)


def record_test(name: str, *, ok: bool, message: str) -> None:
    """Remember a Test Connection result (stored connections only): the last one on the
    connection, and the latest :data:`KEPT_TESTS` in its history."""
    now = _now()
    with engine().begin() as db:
        found = db.execute(
            update(connections_table)
            .where(connections_table.c.name == name)
            .values(last_test_ok=ok, last_test_at=now, last_test_message=message[:2000])
        ).rowcount
        if not found:
            return
        db.execute(
            insert(connection_tests_table).values(name=name, ok=ok, at=now, message=message[:2000])
        )
        kept = _kept_tests(name).with_only_columns(connection_tests_table.c.id)
        db.execute(
            delete(connection_tests_table).where(
                connection_tests_table.c.name == name,
                connection_tests_table.c.id.not_in(kept.scalar_subquery()),
            )
        )


def _kept_tests(name: str) -> Select[Any]:
    """The latest :data:`KEPT_TESTS` Test Connection results of ``name``, newest first."""
    t = connection_tests_table
    return select(t).where(t.c.name == name).order_by(t.c.id.desc()).limit(KEPT_TESTS)


def recent_tests(name: str) -> list[TestStatus]:
    """The latest Test Connection results of a stored connection, newest first."""
    with engine().connect() as db:
        rows = db.execute(_kept_tests(name)).all()
    return [TestStatus(bool(r.ok), r.at, r.message) for r in rows]

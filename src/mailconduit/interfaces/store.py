"""Saved interfaces, their run history and the stored database connections, in the store.

An interface is kept as its YAML-shaped document (see :mod:`mailconduit.interfaces.model`),
so what the console saves, the CLI exports and ``mailconduit run`` reads are one schema.
A database connection's URL is kept Fernet-encrypted, like an SMTP password.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update

from mailconduit.config import NAME_RE, is_database_url
from mailconduit.crypto import decrypt, encrypt
from mailconduit.db.engines import engine, insert_new
from mailconduit.db.tables import database_connections_table as databases_table
from mailconduit.db.tables import (
    interface_due_runs_table,
    interface_notifications_table,
    interface_runs_table,
    interfaces_table,
)
from mailconduit.errors import ConfigError, FieldError, NotFoundError
from mailconduit.home import redact_url
from mailconduit.interfaces.model import Interface, interface_from_document

__all__ = [
    "DatabaseInfo",
    "DueRun",
    "InterfaceRun",
    "NotificationOutcome",
    "claim_due_run",
    "create_interface",
    "database_url",
    "delete_database",
    "delete_interface",
    "due_runs",
    "get_interface",
    "interface_of_run",
    "list_databases",
    "list_interfaces",
    "notifications_of",
    "record_notification",
    "record_run",
    "runs_of",
    "save_database",
    "set_run_error",
    "skip_due_run",
    "update_interface",
]

# --------------------------------------------------------------------------- interfaces


#: What :func:`_from_row` reads of an interface's row.
_SELECT = select(
    interfaces_table.c.document, interfaces_table.c.created_at, interfaces_table.c.updated_at
)


def _from_row(document: str, created_at: float, updated_at: float) -> Interface:
    return interface_from_document(
        json.loads(document), created_at=created_at, updated_at=updated_at, check_files=False
    )


def list_interfaces() -> list[Interface]:
    """Every saved interface, by name."""
    with engine().connect() as conn:
        rows = conn.execute(_SELECT.order_by(interfaces_table.c.name)).all()
    return [_from_row(*row) for row in rows]


def get_interface(name: str) -> Interface:
    """The interface called ``name``, else NotFoundError."""
    with engine().connect() as conn:
        row = conn.execute(_SELECT.where(interfaces_table.c.name == name)).first()
    if row is None:
        raise NotFoundError("interface", name)
    return _from_row(*row)


def create_interface(interface: Interface) -> Interface:
    """Store a new interface; its name must be free."""
    now = time.time()
    document = json.dumps(interface.to_document())
    if not insert_new(
        interfaces_table, name=interface.name, document=document, created_at=now, updated_at=now
    ):
        raise ConfigError.for_fields(
            "interface", [FieldError("name", f"an interface named {interface.name!r} exists")]
        )
    return get_interface(interface.name)


def update_interface(interface: Interface) -> Interface:
    """Replace the stored interface of the same name."""
    with engine().begin() as conn:
        changed = conn.execute(
            update(interfaces_table)
            .where(interfaces_table.c.name == interface.name)
            .values(document=json.dumps(interface.to_document()), updated_at=time.time())
        ).rowcount
    if not changed:
        raise NotFoundError("interface", interface.name)
    return get_interface(interface.name)


def delete_interface(name: str) -> None:
    """Forget an interface and its links to runs (the runs stay in the journal)."""
    with engine().begin() as conn:
        gone = conn.execute(delete(interfaces_table).where(interfaces_table.c.name == name))
        runs = select(interface_runs_table.c.run_id).where(interface_runs_table.c.interface == name)
        conn.execute(
            delete(interface_notifications_table).where(
                interface_notifications_table.c.run_id.in_(runs)
            )
        )
        conn.execute(delete(interface_runs_table).where(interface_runs_table.c.interface == name))
        conn.execute(
            delete(interface_due_runs_table).where(interface_due_runs_table.c.interface == name)
        )
    if not gone.rowcount:
        raise NotFoundError("interface", name)


# --------------------------------------------------------------------------- run history


@dataclass(frozen=True, slots=True)
class InterfaceRun:
    """A run started from an interface: by hand (``manual``) or by its schedule."""

    run_id: str
    interface: str
    trigger: str
    started_at: float
    #: Why the run stopped before the journal knew it (e.g. the database was unreachable).
    error: str = ""


def record_run(interface: str, run_id: str, *, trigger: str) -> None:
    """Link a run to its interface (a run id seen again, as on resume, is kept once)."""
    insert_new(
        interface_runs_table,
        run_id=run_id,
        interface=interface,
        trigger=trigger,
        started_at=time.time(),
        error="",
    )


def set_run_error(run_id: str, error: str) -> None:
    """Keep why a run of an interface stopped before it started sending."""
    with engine().begin() as conn:
        conn.execute(
            update(interface_runs_table)
            .where(interface_runs_table.c.run_id == run_id)
            .values(error=error[:4000])
        )


def runs_of(interface: str | None = None, *, limit: int = 50) -> list[InterfaceRun]:
    """Runs of ``interface`` (of every interface with None), newest first."""
    query = select(interface_runs_table).order_by(interface_runs_table.c.started_at.desc())
    if interface is not None:
        query = query.where(interface_runs_table.c.interface == interface)
    with engine().connect() as conn:
        rows = conn.execute(query.limit(limit)).all()
    return [InterfaceRun(r.run_id, r.interface, r.trigger, r.started_at, r.error) for r in rows]


def interface_of_run(run_id: str) -> str | None:
    """The interface a run was started from, if any."""
    with engine().connect() as conn:
        return conn.execute(
            select(interface_runs_table.c.interface).where(interface_runs_table.c.run_id == run_id)
        ).scalar()


@dataclass(frozen=True, slots=True)
class NotificationOutcome:
    """How one notification of a run went: over ``channel`` ("webhook" or "e-mail"),
    after ``attempts`` tries, ``last`` the last answer (an HTTP status, the SMTP outcome,
    or why nothing was sent)."""

    channel: str
    delivered: bool
    attempts: int
    last: str

    def describe(self) -> str:
        """E.g. "webhook: delivered after 2 attempts", "webhook failed: 503 after 4 attempts"."""
        tries = f"{self.attempts} attempt{'s' if self.attempts != 1 else ''}"
        if self.delivered:
            return f"{self.channel}: delivered" + (f" after {tries}" if self.attempts > 1 else "")
        if not self.attempts:
            return f"{self.channel} not sent: {self.last}"
        return f"{self.channel} failed: {self.last} after {tries}"


def record_notification(run_id: str, outcome: NotificationOutcome) -> None:
    """Keep how a notification of the run went (the latest word per channel)."""
    table = interface_notifications_table
    values = {
        "delivered": outcome.delivered,
        "attempts": outcome.attempts,
        "last": outcome.last[:2000],
        "at": time.time(),
    }
    with engine().begin() as conn:
        changed = conn.execute(
            update(table)
            .where(table.c.run_id == run_id, table.c.channel == outcome.channel)
            .values(**values)
        ).rowcount
        if not changed:
            conn.execute(insert(table).values(run_id=run_id, channel=outcome.channel, **values))


def notifications_of(run_id: str) -> list[NotificationOutcome]:
    """How the run's notifications went, by channel."""
    table = interface_notifications_table
    with engine().connect() as conn:
        rows = conn.execute(
            select(table).where(table.c.run_id == run_id).order_by(table.c.channel)
        ).all()
    return [NotificationOutcome(r.channel, r.delivered, r.attempts, r.last) for r in rows]


# --------------------------------------------------------------------------- due times


@dataclass(frozen=True, slots=True)
class DueRun:
    """A due time of an interface's schedule and the run it got ("" when it was skipped)."""

    interface: str
    due_at: float
    run_id: str
    holder: str
    claimed_at: float


def claim_due_run(interface: str, due_at: float, *, run_id: str, holder: str) -> bool:
    """Claim a due time for a run, atomically: False when some scheduler claimed it before
    (so a due time yields one run, whichever scheduler process sees it)."""
    return insert_new(
        interface_due_runs_table,
        interface=interface,
        due_at=due_at,
        run_id=run_id,
        holder=holder,
        claimed_at=time.time(),
    )


def skip_due_run(interface: str, due_at: float) -> None:
    """The claimed due time got no run (the interface was running already)."""
    with engine().begin() as conn:
        conn.execute(
            update(interface_due_runs_table)
            .where(
                interface_due_runs_table.c.interface == interface,
                interface_due_runs_table.c.due_at == due_at,
            )
            .values(run_id="")
        )


def due_runs(interface: str, *, limit: int = 200) -> list[DueRun]:
    """The claimed due times of an interface, the latest first."""
    table = interface_due_runs_table
    with engine().connect() as conn:
        rows = conn.execute(
            select(table)
            .where(table.c.interface == interface)
            .order_by(table.c.due_at.desc())
            .limit(limit)
        ).all()
    return [DueRun(r.interface, r.due_at, r.run_id, r.holder, r.claimed_at) for r in rows]


# --------------------------------------------------------------------------- databases


@dataclass(frozen=True, slots=True)
class DatabaseInfo:
    """A stored database connection as anyone may see it: its URL without the password."""

    name: str
    url: str


def save_database(name: str, url: str) -> DatabaseInfo:
    """Store (or replace) a database connection; the URL is encrypted at rest."""
    errors: list[FieldError] = []
    if not NAME_RE.match(name or ""):
        errors.append(FieldError("name", "letters, digits, '.', '_' and '-', at most 64"))
    if not is_database_url(url or ""):
        errors.append(
            FieldError("url", "is not a database URL (e.g. postgresql://user:pw@host/db)")
        )
    if errors:
        raise ConfigError.for_fields("database connection", errors)
    shown = redact_url(url)
    values = {"url_token": encrypt(url), "shown_url": shown}
    with engine().begin() as conn:
        changed = conn.execute(
            update(databases_table).where(databases_table.c.name == name).values(**values)
        ).rowcount
        if not changed:
            conn.execute(
                insert(databases_table).values(name=name, created_at=time.time(), **values)
            )
    return DatabaseInfo(name, shown)


def list_databases() -> list[DatabaseInfo]:
    """The stored database connections, by name (URLs without passwords)."""
    with engine().connect() as conn:
        rows = conn.execute(
            select(databases_table.c.name, databases_table.c.shown_url).order_by(
                databases_table.c.name
            )
        ).all()
    return [DatabaseInfo(name, shown) for name, shown in rows]


def database_url(name: str) -> str:
    """The decrypted URL of a stored database connection (for the run only; never shown)."""
    with engine().connect() as conn:
        token = conn.execute(
            select(databases_table.c.url_token).where(databases_table.c.name == name)
        ).scalar()
    if token is None:
        raise NotFoundError("database connection", name)
    return decrypt(token, name=name)


def delete_database(name: str) -> None:
    """Forget a database connection no interface uses."""
    users = [i.name for i in list_interfaces() if i.database == name]
    if users:
        raise ConfigError.for_fields(
            "database connection",
            [FieldError("name", f"{name!r} is used by the interfaces {', '.join(users)}")],
        )
    with engine().begin() as conn:
        gone = conn.execute(delete(databases_table).where(databases_table.c.name == name)).rowcount
    if not gone:
        raise NotFoundError("database connection", name)

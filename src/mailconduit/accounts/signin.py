"""How often a password may be guessed, and sign-in forms that serve one attempt each.

Kept in the store, so every console process sharing it (and a restarted one) applies the same
limits. Two limits apply to every sign-in attempt:

* per client address (as seen after the trusted-proxy decision, see ``--forwarded-allow-ips``):
  a fixed number of failures per window, then a wait until the window ends;
* per account name, existing or not (so the answers do not tell which exist): a few free
  failures, then an exponential back-off, bounded, so a guess spread over many addresses is
  slowed too.

An attempt is counted as a failure BEFORE the password is checked and forgiven when it succeeds,
so parallel requests cannot all slip past the check. Names and addresses are stored as SHA-256
digests only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, OperationalError

from mailconduit.db.engines import engine
from mailconduit.db.tables import throttle_table, used_forms_table

__all__ = [
    "ACCOUNT_FREE_FAILURES",
    "ADDRESS_FAILURES_ALLOWED",
    "AttemptVerdict",
    "account_wait",
    "attempt_succeeded",
    "begin_attempt",
    "use_login_form",
]

#: Failed sign-ins one client address may make per window; then it waits for the window's end.
ADDRESS_FAILURES_ALLOWED = 10
ADDRESS_WINDOW_SECONDS = 300.0
#: Failures of one account name that cost nothing; after them every failure doubles the wait.
ACCOUNT_FREE_FAILURES = 5
ACCOUNT_FIRST_WAIT = 2.0
ACCOUNT_MAX_WAIT = 900.0
#: An account name's failures are forgotten after this long without a new one.
ACCOUNT_MEMORY_SECONDS = 3600.0
#: Tries of the compare-and-set of both counters before an attempt is refused as contended.
_TRIES = 5


@dataclass(frozen=True, slots=True)
class AttemptVerdict:
    """Whether a password may be checked now; if not, how long to wait and which limit says so."""

    allowed: bool
    wait_seconds: float = 0.0
    limit: str = ""  # "address" or "account" when refused


def account_wait(failures: int) -> float:
    """Seconds an account name must rest after its latest failure, given how many it has."""
    if failures < ACCOUNT_FREE_FAILURES:
        return 0.0
    doublings = min(failures - ACCOUNT_FREE_FAILURES, 30)
    return min(ACCOUNT_FIRST_WAIT * 2.0**doublings, ACCOUNT_MAX_WAIT)


def _digest(kind: str, value: str) -> str:
    return hashlib.sha256(f"{kind}\0{value}".encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True, slots=True)
class _Counter:
    """One stored counter: failures since ``first_at``, the latest at ``last_at``."""

    failures: int
    first_at: float
    last_at: float


def _read(db: Connection, key: str) -> _Counter | None:
    table = throttle_table
    row = db.execute(
        select(table.c.failures, table.c.first_at, table.c.last_at).where(table.c.key_sha256 == key)
    ).first()
    if row is None:
        return None
    return _Counter(int(row.failures), float(row.first_at), float(row.last_at))


def _fresh(kind: str, row: _Counter | None, now: float) -> bool:
    """True when a counter has no row or its row is old enough to start again from zero."""
    if row is None:
        return True
    if kind == "address":
        return now - row.first_at >= ADDRESS_WINDOW_SECONDS
    return now - row.last_at >= ACCOUNT_MEMORY_SECONDS


def _wait(kind: str, row: _Counter | None, now: float) -> float:
    if row is None or _fresh(kind, row, now):
        return 0.0
    if kind == "address":
        if row.failures < ADDRESS_FAILURES_ALLOWED:
            return 0.0
        return row.first_at + ADDRESS_WINDOW_SECONDS - now
    return max(0.0, row.last_at + account_wait(row.failures) - now)


class _ContendedError(Exception):
    """Another attempt changed a counter between our read and our write: read again."""


def _count(db: Connection, key: str, kind: str, row: _Counter | None, now: float) -> None:
    table = throttle_table
    if row is None:
        try:
            db.execute(insert(table).values(key_sha256=key, failures=1, first_at=now, last_at=now))
        except IntegrityError:
            raise _ContendedError from None
        return
    if _fresh(kind, row, now):
        failures, first_at = 1, now
    else:
        failures, first_at = row.failures + 1, row.first_at
    done = db.execute(
        update(table)
        .where(
            table.c.key_sha256 == key,
            table.c.failures == row.failures,
            table.c.last_at == row.last_at,
        )
        .values(failures=failures, first_at=first_at, last_at=now)
    )
    if done.rowcount != 1:
        raise _ContendedError


def begin_attempt(address: str, account: str, *, now: float) -> AttemptVerdict:
    """Count one password check for ``address`` and ``account``, or refuse it (counting
    nothing) while either must wait. A successful check calls :func:`attempt_succeeded`."""
    keys = {"address": _digest("address", address), "account": _digest("account", account)}
    table = throttle_table
    for attempt in range(_TRIES):
        try:
            with engine().begin() as db:
                rows = {kind: _read(db, key) for kind, key in keys.items()}
                for kind in ("address", "account"):
                    wait = _wait(kind, rows[kind], now)
                    if wait > 0:
                        return AttemptVerdict(False, wait, kind)
                for kind, key in keys.items():
                    _count(db, key, kind, rows[kind], now)
                db.execute(
                    delete(table).where(
                        table.c.last_at < now - max(ACCOUNT_MEMORY_SECONDS, ADDRESS_WINDOW_SECONDS)
                    )
                )
        except _ContendedError:
            continue
        except OperationalError:  # SQLite: another writer committed after our read
            if attempt == _TRIES - 1:
                raise
            continue
        return AttemptVerdict(True)
    return AttemptVerdict(False, 1.0, "address")


def attempt_succeeded(address: str, account: str) -> None:
    """The password was right: forget the account's failures and take this attempt back from
    the address's count (its earlier failures stay until their window ends)."""
    table = throttle_table
    with engine().begin() as db:
        db.execute(delete(table).where(table.c.key_sha256 == _digest("account", account)))
        db.execute(
            update(table)
            .where(table.c.key_sha256 == _digest("address", address), table.c.failures > 0)
            .values(failures=table.c.failures - 1)
        )


def use_login_form(token: str, *, expires_at: float, now: float) -> bool:
    """True the first time a sign-in form's token is used, False for any replay of it."""
    table = used_forms_table
    digest = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
    try:
        with engine().begin() as db:
            db.execute(delete(table).where(table.c.expires_at < now))
            db.execute(insert(table).values(token_sha256=digest, expires_at=expires_at))
    except IntegrityError:
        return False
    return True

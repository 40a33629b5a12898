"""Where access tokens wait between sessions, runs, processes and hosts, with the lock that
lets exactly one of them refresh at a time.

A :class:`TokenCache` keeps, per key (the connection's name), the current access token and
the latest refresh token the provider returned (rotation), both tagged with the settings'
fingerprint, and a lock with an owner and an expiry: a holder that dies frees it when the
expiry passes. :class:`MemoryTokenCache` serves one process; :class:`SqlTokenCache` serves
every process and host sharing a database (SQLite or PostgreSQL), tokens encrypted with the
caller's functions.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from sqlalchemy import (
    Column,
    ColumnElement,
    Engine,
    Float,
    MetaData,
    String,
    Table,
    Text,
    exists,
    func,
    insert,
    inspect,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from mailconduit.config.secret import Secret
from mailconduit.errors import ConfigError
from mailconduit.oauth.token import AccessToken

__all__ = [
    "CachedToken",
    "MemoryTokenCache",
    "SqlTokenCache",
    "TokenCache",
    "oauth_tokens_table",
]

log = logging.getLogger("mailconduit.oauth")


@dataclass(frozen=True, slots=True)
class CachedToken:
    """The tokens stored for one key, and the settings fingerprint they belong to."""

    fingerprint: str
    access_token: AccessToken | None = None
    refresh_token: Secret | None = field(default=None, repr=False)


class TokenCache(Protocol):
    """Shared storage for tokens plus a lock per key (see the module docstring)."""

    async def load(self, key: str) -> CachedToken | None:
        """The stored entry, or None."""

    async def save(self, key: str, entry: CachedToken) -> None:
        """Store ``entry`` as the key's tokens (the lock is left as it is)."""

    async def discard(self, key: str, access_token: Secret) -> None:
        """Forget the access token if it is still ``access_token``; keep the refresh token."""

    async def clear(self, key: str) -> None:
        """Forget every token of the key (after a new sign-in)."""

    async def try_lock(self, key: str, owner: str, ttl: float) -> bool:
        """Take the key's lock for ``ttl`` seconds if it is free, expired or ``owner``'s."""

    async def unlock(self, key: str, owner: str) -> None:
        """Let the lock go if ``owner`` holds it."""


class MemoryTokenCache:
    """A :class:`TokenCache` for one process, shared by any number of token providers."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[str, CachedToken] = {}
        self._locks: dict[str, tuple[str, float]] = {}
        self._mutex = threading.Lock()

    async def load(self, key: str) -> CachedToken | None:
        with self._mutex:
            return self._entries.get(key)

    async def save(self, key: str, entry: CachedToken) -> None:
        with self._mutex:
            self._entries[key] = entry

    async def discard(self, key: str, access_token: Secret) -> None:
        with self._mutex:
            entry = self._entries.get(key)
            token = entry.access_token if entry is not None else None
            if entry is not None and token is not None and token.value == access_token:
                self._entries[key] = replace(entry, access_token=None)

    async def clear(self, key: str) -> None:
        with self._mutex:
            self._entries.pop(key, None)

    async def try_lock(self, key: str, owner: str, ttl: float) -> bool:
        with self._mutex:
            now = self._clock()
            holder = self._locks.get(key)
            if holder is None or holder[0] == owner or holder[1] <= now:
                self._locks[key] = (owner, now + ttl)
                return True
            return False

    async def unlock(self, key: str, owner: str) -> None:
        with self._mutex:
            if self._locks.get(key, ("", 0.0))[0] == owner:
                del self._locks[key]


_metadata = MetaData()
#: One row per connection. Token columns hold the caller's ciphertext; the lock's expiry
#: is on the database's clock, which every host sharing it agrees on.
oauth_tokens_table = Table(
    "oauth_tokens",
    _metadata,
    Column("name", String(200), primary_key=True),
    Column("fingerprint", String(64), nullable=False, default=""),
    Column("access_token", Text),
    Column("access_expires_at", Float),
    Column("access_issued_at", Float),
    Column("access_scope", Text, nullable=False, default=""),
    Column("refresh_token", Text),
    Column("lock_owner", String(100)),
    Column("lock_expires_at", Float),
)


def _db_now(engine: Engine) -> ColumnElement[Any]:
    """SQL for the database's clock in seconds since the epoch (this process's clock for
    other databases, read now)."""
    if engine.dialect.name == "sqlite":
        return (func.julianday("now") - 2440587.5) * 86400.0
    if engine.dialect.name == "postgresql":
        return func.extract("epoch", func.clock_timestamp())
    return literal(time.time())


class SqlTokenCache:
    """A :class:`TokenCache` in the ``oauth_tokens`` table of a SQLAlchemy engine.

    ``encrypt``/``decrypt`` turn a token into stored text and back; ``decrypt`` raises
    :class:`ConfigError` for text it cannot read (another key), which counts as no token.
    The table is created when missing. Calls run in a worker thread: the engine is sync.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        encrypt: Callable[[str], str],
        decrypt: Callable[[str], str],
    ) -> None:
        self._engine = engine
        self._encrypt = encrypt
        self._decrypt = decrypt
        try:
            _metadata.create_all(engine, checkfirst=True)
        except SQLAlchemyError:
            # Another process created it at the same moment; anything else shows below.
            if not inspect(engine).has_table(oauth_tokens_table.name):
                raise

    @property
    def _now(self) -> ColumnElement[Any]:
        return _db_now(self._engine)

    def _reveal(self, key: str, stored: str | None, what: str) -> Secret | None:
        if not stored:
            return None
        try:
            return Secret(self._decrypt(stored))
        except ConfigError:
            log.warning("the cached %s of %s cannot be decrypted; it is ignored", what, key)
            return None

    def _load(self, key: str) -> CachedToken | None:
        t = oauth_tokens_table
        with self._engine.connect() as conn:
            row = conn.execute(select(t).where(t.c.name == key)).mappings().first()
        if row is None:
            return None
        access = None
        value = self._reveal(key, row["access_token"], "access token")
        if value is not None and row["access_expires_at"] is not None:
            access = AccessToken(
                value,
                expires_at=float(row["access_expires_at"]),
                issued_at=float(row["access_issued_at"] or row["access_expires_at"]),
                scope=row["access_scope"] or "",
            )
        return CachedToken(
            row["fingerprint"], access, self._reveal(key, row["refresh_token"], "refresh token")
        )

    def _ensure_row(self, key: str) -> None:
        t = oauth_tokens_table
        add = insert(t).from_select(
            ["name", "fingerprint", "access_scope"],
            select(literal(key), literal(""), literal("")).where(~exists().where(t.c.name == key)),
        )
        try:
            with self._engine.begin() as conn:
                conn.execute(add)
        except IntegrityError:
            pass  # another process added it between the check and the insert

    def _save(self, key: str, entry: CachedToken) -> None:
        self._ensure_row(key)
        self._write(key, entry)

    def _write(self, key: str, entry: CachedToken) -> None:
        """Put ``entry`` in the key's row, if there is one."""
        access = entry.access_token
        values = {
            "fingerprint": entry.fingerprint,
            "access_token": self._encrypt(access.value.reveal()) if access else None,
            "access_expires_at": access.expires_at if access else None,
            "access_issued_at": access.issued_at if access else None,
            "access_scope": access.scope if access else "",
            "refresh_token": (
                self._encrypt(entry.refresh_token.reveal()) if entry.refresh_token else None
            ),
        }
        t = oauth_tokens_table
        with self._engine.begin() as conn:
            conn.execute(update(t).where(t.c.name == key).values(**values))

    def _discard(self, key: str, access_token: Secret) -> None:
        t = oauth_tokens_table
        with self._engine.begin() as conn:
            stored = conn.execute(select(t.c.access_token).where(t.c.name == key)).scalar()
            if stored and self._reveal(key, stored, "access token") == access_token:
                conn.execute(
                    update(t)
                    .where(t.c.name == key, t.c.access_token == stored)
                    .values(access_token=None, access_expires_at=None, access_issued_at=None)
                )

    def _clear(self, key: str) -> None:
        self._write(key, CachedToken(fingerprint=""))

    def _try_lock(self, key: str, owner: str, ttl: float) -> bool:
        self._ensure_row(key)
        t = oauth_tokens_table
        with self._engine.begin() as conn:
            taken = conn.execute(
                update(t)
                .where(
                    t.c.name == key,
                    or_(
                        t.c.lock_owner.is_(None),
                        t.c.lock_owner == owner,
                        t.c.lock_expires_at <= self._now,
                    ),
                )
                .values(lock_owner=owner, lock_expires_at=self._now + float(ttl))
            )
            return taken.rowcount == 1

    def _unlock(self, key: str, owner: str) -> None:
        t = oauth_tokens_table
        with self._engine.begin() as conn:
            conn.execute(
                update(t)
                .where(t.c.name == key, t.c.lock_owner == owner)
                .values(lock_owner=None, lock_expires_at=None)
            )

    async def load(self, key: str) -> CachedToken | None:
        return await asyncio.to_thread(self._load, key)

    async def save(self, key: str, entry: CachedToken) -> None:
        await asyncio.to_thread(self._save, key, entry)

    async def discard(self, key: str, access_token: Secret) -> None:
        await asyncio.to_thread(self._discard, key, access_token)

    async def clear(self, key: str) -> None:
        await asyncio.to_thread(self._clear, key)

    async def try_lock(self, key: str, owner: str, ttl: float) -> bool:
        return await asyncio.to_thread(self._try_lock, key, owner, ttl)

    async def unlock(self, key: str, owner: str) -> None:
        await asyncio.to_thread(self._unlock, key, owner)

"""Console accounts, API tokens and login sessions, kept in the store next to the connections.

Passwords are hashed with argon2id; API tokens and session ids are random 256-bit values
of which only a SHA-256 digest is stored, so a copy of the database opens no door.
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from mailconduit.config import TEXT_LIMITS, text_limit_errors
from mailconduit.db.engines import engine, insert_new
from mailconduit.db.tables import sessions_table, tokens_table, users_table
from mailconduit.errors import ConfigError, FieldError, NotFoundError

__all__ = [
    "MAX_LABEL_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "SESSION_SECONDS",
    "TOKEN_PREFIX",
    "Account",
    "Session",
    "authenticate",
    "create_session",
    "create_user",
    "delete_user",
    "end_session",
    "issue_token",
    "list_users",
    "revoke_tokens",
    "set_password",
    "token_user",
    "valid_session",
]

MIN_PASSWORD_LENGTH = 8
MAX_NAME_LENGTH = TEXT_LIMITS["user"]["name"]
MAX_PASSWORD_LENGTH = TEXT_LIMITS["user"]["password"]
MAX_LABEL_LENGTH = TEXT_LIMITS["user"]["label"]
#: A login lasts this long; after that the user signs in again.
SESSION_SECONDS = 12 * 3600
TOKEN_PREFIX = "mct_"  # noqa: S105 - a visible marker, not a secret
_USER_RE = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_.@-]{{0,{MAX_NAME_LENGTH - 1}}}$")
_TOKEN_TOUCH_SECONDS = 60.0

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified when the user name is unknown, so a wrong name costs as long as a wrong password."""
    return _hasher.hash(secrets.token_hex(16))


@dataclass(frozen=True, slots=True)
class Account:
    """A console user as listed by ``mailconduit users list`` (no hash, no token)."""

    name: str
    created_at: float
    tokens: int


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in browser: whose it is and the CSRF token its forms must carry."""

    user: str
    csrf_token: str
    expires_at: float


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _check_lengths(**fields: str) -> None:
    if too_long := text_limit_errors("user", fields):
        raise ConfigError.for_fields("user", too_long)


def _check_name(name: str) -> None:
    _check_lengths(name=name)
    if not _USER_RE.match(name):
        raise ConfigError.for_fields(
            "user",
            [
                FieldError(
                    "name",
                    f"{name!r} must start with a letter or digit and hold only letters, digits, "
                    f"'.', '_', '@' or '-' (at most {MAX_NAME_LENGTH})",
                )
            ],
        )


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ConfigError.for_fields(
            "user",
            [FieldError("password", f"must be at least {MIN_PASSWORD_LENGTH} characters long")],
        )
    _check_lengths(password=password)


def create_user(name: str, password: str) -> Account:
    """Add a console user; a duplicate name or a short password is a field error."""
    _check_name(name)
    _check_password(password)
    if not insert_new(
        users_table, name=name, password_hash=_hasher.hash(password), created_at=time.time()
    ):
        raise ConfigError.for_fields(
            "user", [FieldError("name", f"a user named {name!r} already exists")]
        )
    return Account(name=name, created_at=time.time(), tokens=0)


def set_password(name: str, password: str) -> None:
    """Replace a user's password and end every session of that user."""
    _check_password(password)
    with engine().begin() as db:
        result = db.execute(
            update(users_table)
            .where(users_table.c.name == name)
            .values(password_hash=_hasher.hash(password))
        )
        if result.rowcount == 0:
            raise NotFoundError("user", name)
        db.execute(delete(sessions_table).where(sessions_table.c.user_name == name))


def list_users() -> list[Account]:
    token_count = (
        select(tokens_table.c.user_name, func.count().label("n"))
        .group_by(tokens_table.c.user_name)
        .subquery()
    )
    query = (
        select(users_table.c.name, users_table.c.created_at, token_count.c.n)
        .select_from(
            users_table.outerjoin(token_count, token_count.c.user_name == users_table.c.name)
        )
        .order_by(users_table.c.name)
    )
    with engine().connect() as db:
        rows = db.execute(query).all()
    return [Account(name=r.name, created_at=r.created_at, tokens=int(r.n or 0)) for r in rows]


def delete_user(name: str) -> None:
    """Remove a user with all of its tokens and sessions."""
    with engine().begin() as db:
        db.execute(delete(tokens_table).where(tokens_table.c.user_name == name))
        db.execute(delete(sessions_table).where(sessions_table.c.user_name == name))
        result = db.execute(delete(users_table).where(users_table.c.name == name))
    if result.rowcount == 0:
        raise NotFoundError("user", name)


def authenticate(name: str, password: str) -> bool:
    """True when ``password`` is the user's; an unknown name takes as long as a wrong password."""
    with engine().connect() as db:
        stored = db.execute(
            select(users_table.c.password_hash).where(users_table.c.name == name)
        ).scalar()
    try:
        _hasher.verify(stored or _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return False
    return stored is not None


def issue_token(name: str, *, label: str = "") -> str:
    """A new API token for ``name``; shown once, only its digest is kept."""
    _check_lengths(label=label)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        with engine().begin() as db:
            exists = db.execute(
                select(users_table.c.name).where(users_table.c.name == name)
            ).first()
            if exists is None:
                raise NotFoundError("user", name)
            db.execute(
                insert(tokens_table).values(
                    token_sha256=_digest(token),
                    user_name=name,
                    label=label,
                    created_at=time.time(),
                )
            )
    except IntegrityError:  # pragma: no cover - 256 random bits do not collide
        raise ConfigError("could not store the token; try again") from None
    return token


def revoke_tokens(name: str) -> int:
    """Revoke every API token of ``name``; returns how many there were."""
    with engine().begin() as db:
        result = db.execute(delete(tokens_table).where(tokens_table.c.user_name == name))
    return int(result.rowcount)


def token_user(token: str) -> str | None:
    """The user an API token belongs to, or None for an unknown or revoked token."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    digest = _digest(token)
    with engine().connect() as db:
        row = db.execute(
            select(tokens_table.c.user_name, tokens_table.c.last_used_at).where(
                tokens_table.c.token_sha256 == digest
            )
        ).first()
    if row is None:
        return None
    now = time.time()
    if row.last_used_at is None or now - row.last_used_at > _TOKEN_TOUCH_SECONDS:
        with engine().begin() as db:
            db.execute(
                update(tokens_table)
                .where(tokens_table.c.token_sha256 == digest)
                .values(last_used_at=now)
            )
    return str(row.user_name)


def create_session(name: str) -> tuple[str, Session]:
    """Start a login session; returns the session id (for the signed cookie) and the session."""
    session_id = secrets.token_urlsafe(32)
    now = time.time()
    session = Session(
        user=name, csrf_token=secrets.token_urlsafe(32), expires_at=now + SESSION_SECONDS
    )
    with engine().begin() as db:
        db.execute(delete(sessions_table).where(sessions_table.c.expires_at < now))
        db.execute(
            insert(sessions_table).values(
                id_sha256=_digest(session_id),
                user_name=name,
                csrf_token=session.csrf_token,
                created_at=now,
                expires_at=session.expires_at,
            )
        )
    return session_id, session


def valid_session(session_id: str) -> Session | None:
    """The live session behind ``session_id``, or None when it ended, expired or never existed."""
    with engine().connect() as db:
        row = db.execute(
            select(
                sessions_table.c.user_name, sessions_table.c.csrf_token, sessions_table.c.expires_at
            ).where(sessions_table.c.id_sha256 == _digest(session_id))
        ).first()
    if row is None or row.expires_at < time.time():
        return None
    return Session(
        user=str(row.user_name), csrf_token=str(row.csrf_token), expires_at=float(row.expires_at)
    )


def end_session(session_id: str) -> None:
    """Log out: the session id stops working at once, even if someone copied the cookie."""
    with engine().begin() as db:
        db.execute(delete(sessions_table).where(sessions_table.c.id_sha256 == _digest(session_id)))

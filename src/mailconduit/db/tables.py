"""Every table of the store, in one place below the modules that read and write them.

``connections/store.py`` keeps the SMTP connections (and their last tests) here
(``connections/oauth.py`` their OAuth2 sign-in), ``accounts/`` the console's users,
API tokens, sessions and sign-in limits, ``interfaces/store.py`` the saved interfaces, their
runs and the database connections their queries use (the scheduler's jobs table,
``scheduled_jobs``, belongs to APScheduler). The journal's tables are DDL of its own
(``journal/store.py``, and ``journal/agents.py`` for the agents' chunks, leases, frozen input
and shared rate): it talks DB-API on the send path, without SQLAlchemy.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from mailconduit.config import TEXT_LIMITS

__all__ = [
    "connection_oauth_table",
    "connection_tests_table",
    "connections_table",
    "database_connections_table",
    "interface_due_runs_table",
    "interface_notifications_table",
    "interface_runs_table",
    "interfaces_table",
    "metadata",
    "sessions_table",
    "throttle_table",
    "tokens_table",
    "used_forms_table",
    "users_table",
]

metadata = MetaData()


def _key(name: str = "name", length: int = 64) -> Column[str]:
    """A text primary key: the stored thing's name, or a digest."""
    return Column(name, String(length), primary_key=True)


def _required(name: str, type_: Any, **options: Any) -> Column[Any]:
    """A column every row fills (NOT NULL)."""
    return Column(name, type_, nullable=False, **options)


def _optional(name: str, type_: Any) -> Column[Any]:
    """A column a row may leave empty (NULL)."""
    return Column(name, type_, nullable=True)


def _when() -> DateTime:
    """A moment with its time zone (the connection tables; the others keep epoch floats)."""
    return DateTime(timezone=True)


def _serial() -> Column[int]:
    """A numbered primary key, for rows that have no name."""
    return Column("id", Integer, primary_key=True, autoincrement=True)


#: One row per stored connection: its settings as JSON, the password Fernet-encrypted.
connections_table = Table(
    "connections",
    metadata,
    _key(),
    _required("settings", Text),
    _optional("password_token", Text),
    _required("created_at", _when()),
    _required("updated_at", _when()),
    _optional("last_test_ok", Boolean),
    _optional("last_test_at", _when()),
    _optional("last_test_message", Text),
)

#: The OAuth2 sign-in of a stored connection, by its name (``connections/oauth.py``): the
#: settings as given (JSON), the preset it was made from, client secret and refresh token
#: Fernet-encrypted like the password. The access tokens are cached in ``oauth_tokens``,
#: which ``oauth/cache.py`` creates on any database it is given.
connection_oauth_table = Table(
    "connection_oauth",
    metadata,
    _key(),
    _required("settings", Text),
    _required("preset", String(64), default=""),
    _optional("client_secret_token", Text),
    _optional("refresh_token_token", Text),
    _required("updated_at", _when()),
)

users_table = Table(
    "web_users",
    metadata,
    Column("name", String(TEXT_LIMITS["user"]["name"]), primary_key=True),
    _required("password_hash", String(255)),
    _required("created_at", Float),
)


def _owner() -> Column[str]:
    """The account an API token or a session belongs to; it goes when the account goes."""
    return Column(
        "user_name", String(64), ForeignKey("web_users.name", ondelete="CASCADE"), nullable=False
    )


#: API tokens and sessions are kept as SHA-256 digests only.
tokens_table = Table(
    "web_api_tokens",
    metadata,
    _serial(),
    _required("token_sha256", String(64), unique=True),
    _owner(),
    _required("label", String(TEXT_LIMITS["user"]["label"]), default=""),
    _required("created_at", Float),
    _optional("last_used_at", Float),
)

sessions_table = Table(
    "web_sessions",
    metadata,
    _key("id_sha256"),
    _owner(),
    _required("csrf_token", String(64)),
    _required("created_at", Float),
    _required("expires_at", Float),
)

#: Failed sign-ins per client address and per account name (keys are SHA-256 digests).
throttle_table = Table(
    "web_login_throttle",
    metadata,
    _key("key_sha256"),
    _required("failures", Integer),
    _required("first_at", Float),
    _required("last_at", Float),
)

#: Sign-in forms already used once, until they would have expired anyway.
used_forms_table = Table(
    "web_login_forms_used",
    metadata,
    _key("token_sha256"),
    _required("expires_at", Float),
)

#: Every Test Connection result, the latest few per connection (the connection page lists them).
connection_tests_table = Table(
    "connection_tests",
    metadata,
    _serial(),
    _required("name", String(64), index=True),
    _required("ok", Boolean),
    _required("at", _when()),
    _required("message", Text),
)

#: Saved interfaces, each as its document (JSON; see interfaces/model.py).
interfaces_table = Table(
    "interfaces",
    metadata,
    _key(),
    _required("document", Text),
    _required("created_at", Float),
    _required("updated_at", Float),
)

#: Which interface started a run, how, and why it stopped before the journal knew it.
interface_runs_table = Table(
    "interface_runs",
    metadata,
    _key("run_id", 80),
    _required("interface", String(64), index=True),
    _required("trigger", String(16)),
    _required("started_at", Float),
    _required("error", Text, default=""),
)

#: Each due time of a schedule, claimed once by the scheduler that runs it (the run's id;
#: "" when the run was skipped because the interface was running already).
interface_due_runs_table = Table(
    "interface_due_runs",
    metadata,
    Column("interface", String(64), primary_key=True),
    Column("due_at", Float, primary_key=True),
    Column("run_id", String(80), nullable=False),
    Column("holder", String(200), nullable=False),
    Column("claimed_at", Float, nullable=False),
)

#: How each notification of an interface's run went (one row per channel of a run).
interface_notifications_table = Table(
    "interface_notifications",
    metadata,
    Column("run_id", String(80), primary_key=True),
    Column("channel", String(16), primary_key=True),
    Column("delivered", Boolean, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last", Text, nullable=False),
    Column("at", Float, nullable=False),
)

#: Databases interfaces query: the URL Fernet-encrypted, and as shown (no password).
database_connections_table = Table(
    "database_connections",
    metadata,
    _key(),
    _required("url_token", Text),
    _required("shown_url", Text),
    _required("created_at", Float),
)

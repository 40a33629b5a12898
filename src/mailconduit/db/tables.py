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

#: One row per stored connection: its settings as JSON, the password Fernet-encrypted.
connections_table = Table(
    "connections",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("settings", Text, nullable=False),
    Column("password_token", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("last_test_ok", Boolean, nullable=True),
    Column("last_test_at", DateTime(timezone=True), nullable=True),
    Column("last_test_message", Text, nullable=True),
)

#: The OAuth2 sign-in of a stored connection, by its name (``connections/oauth.py``): the
#: settings as given (JSON), the preset it was made from, client secret and refresh token
#: Fernet-encrypted like the password. The access tokens are cached in ``oauth_tokens``,
#: which ``oauth/cache.py`` creates on any database it is given.
connection_oauth_table = Table(
    "connection_oauth",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("settings", Text, nullable=False),
    Column("preset", String(64), nullable=False, default=""),
    Column("client_secret_token", Text, nullable=True),
    Column("refresh_token_token", Text, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

users_table = Table(
    "web_users",
    metadata,
    Column("name", String(TEXT_LIMITS["user"]["name"]), primary_key=True),
    Column("password_hash", String(255), nullable=False),
    Column("created_at", Float, nullable=False),
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
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("token_sha256", String(64), nullable=False, unique=True),
    _owner(),
    Column("label", String(TEXT_LIMITS["user"]["label"]), nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float, nullable=True),
)

sessions_table = Table(
    "web_sessions",
    metadata,
    Column("id_sha256", String(64), primary_key=True),
    _owner(),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)

#: Failed sign-ins per client address and per account name (keys are SHA-256 digests).
throttle_table = Table(
    "web_login_throttle",
    metadata,
    Column("key_sha256", String(64), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("first_at", Float, nullable=False),
    Column("last_at", Float, nullable=False),
)

#: Sign-in forms already used once, until they would have expired anyway.
used_forms_table = Table(
    "web_login_forms_used",
    metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("expires_at", Float, nullable=False),
)

#: Every Test Connection result, the latest few per connection (the connection page lists them).
connection_tests_table = Table(
    "connection_tests",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, index=True),
    Column("ok", Boolean, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("message", Text, nullable=False),
)

#: Saved interfaces, each as its document (JSON; see interfaces/model.py).
interfaces_table = Table(
    "interfaces",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("document", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

#: Which interface started a run, how, and why it stopped before the journal knew it.
interface_runs_table = Table(
    "interface_runs",
    metadata,
    Column("run_id", String(80), primary_key=True),
    Column("interface", String(64), nullable=False, index=True),
    Column("trigger", String(16), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("error", Text, nullable=False, default=""),
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
    Column("name", String(64), primary_key=True),
    Column("url_token", Text, nullable=False),
    Column("shown_url", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

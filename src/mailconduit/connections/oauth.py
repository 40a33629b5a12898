"""The OAuth2 sign-in of stored connections, kept beside the connection row.

One row per connection that signs in with OAuth2: the settings as the user gave them
(provider, tenant, client id, scope, flow, endpoints for ``generic``) and the preset the
connection was made from, with the client secret and the refresh token Fernet-encrypted
like the password. The access tokens themselves live in the shared token cache
(:func:`token_cache`, table ``oauth_tokens``), encrypted with the same key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import delete, insert, select, update

from mailconduit.config.secret import Secret
from mailconduit.crypto import decrypt, encrypt
from mailconduit.db.engines import engine
from mailconduit.db.tables import connection_oauth_table
from mailconduit.errors import ConfigError, FieldError
from mailconduit.oauth import (
    OAuthSettings,
    SqlTokenCache,
    oauth_tokens_table,
    validate_oauth_settings,
)

__all__ = [
    "OAUTH_FIELDS",
    "SECRET_FIELDS",
    "clear_oauth",
    "forget_tokens",
    "get_oauth",
    "get_preset_name",
    "get_raw",
    "merge",
    "rename_oauth",
    "save_refresh_token",
    "set_oauth",
    "set_preset",
    "token_cache",
]

#: What a user may set, by the names of :class:`OAuthSettings`.
OAUTH_FIELDS: Final = (
    "provider",
    "tenant",
    "client_id",
    "client_secret",
    "refresh_token",
    "scope",
    "token_endpoint",
    "device_endpoint",
    "flow",
    "client_auth",
)
SECRET_FIELDS: Final = ("client_secret", "refresh_token")
#: Changing one of these means another app or another authority: the stored refresh
#: token was issued to someone else, and secrets must not follow to a new endpoint.
_IDENTITY_FIELDS: Final = ("provider", "tenant", "client_id", "token_endpoint")


def _reveal(stored: str | None, name: str, field: str) -> Secret | None:
    return Secret(decrypt(stored, name=name, field=field)) if stored else None


def _row(name: str) -> Any:
    t = connection_oauth_table
    with engine().connect() as db:
        return db.execute(select(t).where(t.c.name == name)).first()


def _raw(row: Any) -> dict[str, Any]:
    """The stored settings with the secrets decrypted, as :func:`validate_oauth_settings` takes them."""
    data: dict[str, Any] = json.loads(row.settings)
    for field, column in (
        ("client_secret", row.client_secret_token),
        ("refresh_token", row.refresh_token_token),
    ):
        secret = _reveal(column, row.name, f"oauth_{field}")
        if secret is not None:
            data[field] = secret
    return data


def get_raw(name: str) -> dict[str, Any]:
    """The stored OAuth2 fields of ``name`` as given, secrets decrypted ({} when none)."""
    row = _row(name)
    return _raw(row) if row is not None else {}


def get_oauth(name: str) -> OAuthSettings | None:
    """The connection's OAuth2 settings, or None when it does not sign in with OAuth2."""
    raw = get_raw(name)
    return validate_oauth_settings(raw) if raw else None


def get_preset_name(name: str) -> str:
    """The preset the connection was set up from ('' when none was chosen)."""
    row = _row(name)
    return str(row.preset or "") if row is not None else ""


def merge(current: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``current`` with ``changes`` applied: None keeps a value, '' clears it; a new
    identity drops the secrets that were not given again."""
    unknown = [k for k in changes if k not in OAUTH_FIELDS]
    if unknown:
        raise ConfigError.for_fields(
            "OAuth settings", [FieldError(k, "is not an OAuth field") for k in unknown]
        )
    data = dict(current)
    for key, value in changes.items():
        if value is None:
            continue
        if value == "":
            data.pop(key, None)
        else:
            data[key] = value
    moved = any(str(data.get(k) or "") != str(current.get(k) or "") for k in _IDENTITY_FIELDS)
    if current and moved:
        for secret in SECRET_FIELDS:
            if changes.get(secret) in (None, ""):
                data.pop(secret, None)
    return data


def set_oauth(name: str, changes: Mapping[str, Any], *, preset: str | None = None) -> OAuthSettings:
    """Create or change the connection's OAuth2 settings, validated as a whole.

    Changing provider, tenant, client id or token endpoint forgets the stored client
    secret and refresh token unless they are given again: they belong to the old app.
    """
    data = merge(get_raw(name), changes)
    settings = validate_oauth_settings(data)
    public = {k: v for k, v in data.items() if k not in SECRET_FIELDS and v not in (None, "")}
    _upsert(
        name,
        {
            "settings": json.dumps({k: str(v) for k, v in public.items()}, sort_keys=True),
            "client_secret_token": _encrypted(settings.client_secret),
            "refresh_token_token": _encrypted(settings.refresh_token),
        },
        preset,
    )
    forget_tokens(name)
    return settings


def set_preset(name: str, preset: str) -> None:
    """Remember the preset a connection was made from (for Test Connection's limit check)."""
    _upsert(name, {}, preset)


def _upsert(name: str, values: dict[str, Any], preset: str | None) -> None:
    values = {**values, "updated_at": datetime.now(UTC)}
    if preset is not None:
        values["preset"] = preset
    t = connection_oauth_table
    with engine().begin() as db:
        done = db.execute(update(t).where(t.c.name == name).values(**values))
        if done.rowcount == 0:
            values.setdefault("settings", "{}")
            values.setdefault("preset", "")
            db.execute(insert(t).values(name=name, **values))


def _encrypted(secret: Secret | None) -> str | None:
    return encrypt(secret.reveal()) if secret else None


def save_refresh_token(name: str, token: Secret) -> None:
    """Store a refresh token: from a new sign-in, or rotated by the provider during a run."""
    t = connection_oauth_table
    with engine().begin() as db:
        done = db.execute(
            update(t)
            .where(t.c.name == name)
            .values(refresh_token_token=encrypt(token.reveal()), updated_at=datetime.now(UTC))
        )
    if done.rowcount == 0:
        raise ConfigError.for_fields(
            "connection", [FieldError("name", f"{name!r} has no OAuth2 settings to sign in with")]
        )


def clear_oauth(name: str) -> None:
    """Forget the connection's OAuth2 settings and its cached tokens."""
    t = connection_oauth_table
    with engine().begin() as db:
        db.execute(delete(t).where(t.c.name == name))
    forget_tokens(name)


def rename_oauth(old: str, new: str) -> None:
    """Follow a renamed connection (its cached tokens are simply fetched again)."""
    t = connection_oauth_table
    with engine().begin() as db:
        db.execute(update(t).where(t.c.name == old).values(name=new))
    forget_tokens(old)


def forget_tokens(name: str) -> None:
    """Drop the cached tokens of ``name`` (after a new sign-in or new settings)."""
    token_cache()  # makes sure the table exists
    with engine().begin() as db:
        db.execute(delete(oauth_tokens_table).where(oauth_tokens_table.c.name == name))


def _decrypt_token(stored: str) -> str:
    return decrypt(stored, name="the token cache", kind="token cache", field="token")


def token_cache() -> SqlTokenCache:
    """The token cache on the store's database, shared by every process and host using it."""
    return SqlTokenCache(engine(), encrypt=encrypt, decrypt=_decrypt_token)

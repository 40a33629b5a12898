"""OAuth2 for XOAUTH2 connections: settings, token requests, and a shared, self-renewing token.

Design
------
* **Settings** (:mod:`.settings`): :class:`OAuthSettings` holds provider (``microsoft``,
  ``google``, ``generic``), tenant, client id, client secret and refresh token (both
  :class:`~mailconduit.config.Secret`), scope, endpoints, flow (``refresh_token`` for a
  signed-in user, ``client_credentials`` for Microsoft app-only) and how the secret is sent
  (``client_secret_post`` or ``client_secret_basic``). :func:`validate_oauth_settings` fills
  the provider's published endpoints and SMTP scope and names every wrong field.
* **Requests** (:mod:`.client`): plain RFC 6749 and RFC 8628 form POSTs with httpx, which
  mailconduit already depends on. No provider SDK: refresh, client credentials and the
  device flow need nothing more, and msal would only earn its weight for certificate
  credentials, which are not supported yet. The module is the single boundary where
  transport failures and the providers' JSON errors become the typed errors of
  :mod:`.errors` (``invalid_grant`` → :class:`InvalidGrantError`, "sign in again", and so
  on), each carrying the provider's code and a scrubbed one-line description.
* **Tokens** (:mod:`.provider`): a :class:`TokenProvider` per connection and run hands a
  valid :class:`AccessToken` to every SMTP session. It renews 5 minutes before expiry (10 %
  of the lifetime for short-lived tokens); if renewing early fails for a transient reason,
  the still-valid token keeps serving. Within a process an asyncio lock lets one coroutine
  refresh while the others wait for its result; across processes and hosts a
  :class:`TokenCache` does the same with a lock row that has an owner and an expiry, so a
  crashed holder cannot block the others for longer than the lock's lifetime. A rotated
  refresh token is written to the cache (so every process uses the newest) and handed to
  ``on_refresh_token`` for the caller to store with the connection. ``invalidate(token)``
  serves the "535 at AUTH with a token that should be valid": drop it, refresh once, retry.
* **Caches** (:mod:`.cache`): :class:`MemoryTokenCache` for one process;
  :class:`SqlTokenCache` in an ``oauth_tokens`` table of any SQLAlchemy engine (SQLite or
  PostgreSQL), tokens encrypted by functions the caller passes (the connection store's
  Fernet key), the lock's expiry on the database clock.
* **Secrets**: token values, client secrets and device codes are :class:`Secret` from the
  moment they are read; nothing in this package logs, formats or returns them in clear
  except to the token endpoint and to the caller's encrypt function.

This package imports only :mod:`mailconduit.config` and :mod:`mailconduit.errors`; the
connection store, the SMTP session, Test Connection and the CLI wire it in.
"""

from __future__ import annotations

from mailconduit.oauth import cache, client, errors, provider, settings, token
from mailconduit.oauth.cache import *  # noqa: F403
from mailconduit.oauth.client import *  # noqa: F403
from mailconduit.oauth.errors import *  # noqa: F403
from mailconduit.oauth.provider import *  # noqa: F403
from mailconduit.oauth.settings import *  # noqa: F403
from mailconduit.oauth.token import *  # noqa: F403

#: The modules' public names, sorted.
__all__ = sorted(
    [
        *cache.__all__,
        *client.__all__,
        *errors.__all__,
        *provider.__all__,
        *settings.__all__,
        *token.__all__,
    ]
)

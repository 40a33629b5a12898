"""The token provider: one per connection and run, asked for a token by every SMTP session."""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import secrets
import socket
import time
from collections.abc import Awaitable, Callable

from mailconduit.config.secret import Secret
from mailconduit.errors import TransientSMTPError
from mailconduit.oauth.cache import CachedToken, MemoryTokenCache, TokenCache
from mailconduit.oauth.client import DEFAULT_TIMEOUT, request_token
from mailconduit.oauth.errors import (
    InvalidGrantError,
    OAuthError,
    TokenEndpointUnreachableError,
    TokenServerError,
)
from mailconduit.oauth.settings import Flow, OAuthSettings
from mailconduit.oauth.token import AccessToken, TokenGrant

__all__ = ["LockTimeoutError", "TokenProvider"]

log = logging.getLogger("mailconduit.oauth")

#: How long the refresh lock is held at most before others may take it (a dead holder's
#: lock frees itself after this): well above one token request's timeout.
LOCK_TTL = 2 * DEFAULT_TIMEOUT + 10.0
#: How often a provider waiting for another's refresh looks at the cache again.
LOCK_POLL = 0.1
#: After a failed early refresh, how long the still-valid token is handed out before
#: the endpoint is asked again.
RETRY_EARLY_REFRESH = 10.0


class LockTimeoutError(TokenServerError):
    """Another process held the refresh lock past its expiry and never left a token."""


OnRefreshToken = Callable[[Secret], Awaitable[None] | None]


class TokenProvider:
    """Hands out a valid access token for one connection, refreshed before it expires.

    Coroutines of a process share one refresh through an asyncio lock; processes and hosts
    share one through the cache's lock, so N sessions asking at once cause one request to
    the token endpoint. When the provider rotates the refresh token, the new one is stored
    in the cache and passed to ``on_refresh_token`` for the caller to save.
    ``invalidate(token)`` drops a token the server refused although it looked valid.
    """

    def __init__(
        self,
        settings: OAuthSettings,
        *,
        name: str,
        cache: TokenCache | None = None,
        on_refresh_token: OnRefreshToken | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        timeout: float = DEFAULT_TIMEOUT,
        lock_ttl: float = LOCK_TTL,
    ) -> None:
        self.settings = settings
        self.name = name
        self._cache: TokenCache = cache if cache is not None else MemoryTokenCache()
        self._on_refresh_token = on_refresh_token
        self._clock = clock
        self._sleep = sleep
        self._timeout = timeout
        self._lock_ttl = lock_ttl
        self._owner = f"{socket.gethostname()[:60]}:{secrets.token_hex(8)}"
        self._lock = asyncio.Lock()
        self._current: AccessToken | None = None
        self._refresh_token = settings.refresh_token
        self._quiet_until = 0.0

    async def token(self) -> AccessToken:
        """A token good for at least the next few minutes (or 10 % of its lifetime)."""
        current = self._current
        if current is not None and current.usable(self._clock()):
            return current
        async with self._lock:
            current = self._current
            now = self._clock()
            if current is not None and (
                current.usable(now) or (now < self._quiet_until and not current.expired(now))
            ):
                return current
            try:
                self._current = await self._obtain()
            except (TokenEndpointUnreachableError, TokenServerError) as exc:
                if current is None or current.expired(self._clock()):
                    raise exc.for_connection(self.name) from None
                log.warning(
                    "could not renew the access token of %s early (%s); the current one "
                    "is still valid",
                    self.name,
                    exc.code,
                )
                self._quiet_until = self._clock() + RETRY_EARLY_REFRESH
                return current
            except OAuthError as exc:
                raise exc.for_connection(self.name) from None
            return self._current

    async def invalidate(self, token: AccessToken) -> None:
        """Forget ``token`` (the server refused it); the next :meth:`token` gets a new one.

        Only that token is dropped: when another session already replaced it, nothing
        happens, so sessions refused together cause a single refresh.
        """
        await self.refused(token.value)

    async def bearer(self) -> Secret:
        """The value of :meth:`token`: what an SMTP session sends in XOAUTH2 (this makes the
        provider a :class:`~mailconduit.config.TokenSource`). A token endpoint that fails
        for now is a :class:`TransientSMTPError` there, so the run retries the session as
        after a dropped connection; a sign-in problem stays an :class:`OAuthError`."""
        try:
            return (await self.token()).value
        except OAuthError as exc:
            if not exc.retriable:
                raise
            raise TransientSMTPError(0, f"no access token: {exc}", command="AUTH") from exc

    async def refused(self, token: Secret) -> None:
        """:meth:`invalidate` by the token's value, as the SMTP session knows it."""
        async with self._lock:
            if self._current is not None and self._current.value == token:
                self._current = None
                self._quiet_until = 0.0
            await self._cache.discard(self.name, token)

    def _adopt(self, entry: CachedToken | None) -> AccessToken | None:
        """The entry's access token when it belongs to these settings and is usable."""
        if entry is None or entry.fingerprint != self.settings.fingerprint:
            return None
        if entry.refresh_token is not None:
            self._refresh_token = entry.refresh_token
        token = entry.access_token
        return token if token is not None and token.usable(self._clock()) else None

    async def _obtain(self) -> AccessToken:
        """A usable token from the cache, or from the endpoint under the cache's lock."""
        fresh = self._adopt(await self._cache.load(self.name))
        if fresh is not None:
            return fresh
        # A holder frees the lock or it expires within lock_ttl; the count also bounds the
        # wait when the clock stands still.
        deadline = self._clock() + self._lock_ttl + LOCK_POLL
        locked = False
        for _ in range(math.ceil(self._lock_ttl / LOCK_POLL) + 2):
            locked = await self._cache.try_lock(self.name, self._owner, self._lock_ttl)
            if locked or self._clock() > deadline:
                break
            fresh = self._adopt(await self._cache.load(self.name))
            if fresh is not None:
                return fresh
            await self._sleep(LOCK_POLL)
        if not locked:
            raise LockTimeoutError(
                "lock_timeout",
                "another process holds the token refresh lock",
                self.settings.token_endpoint,
            )
        try:
            entry = await self._cache.load(self.name)
            fresh = self._adopt(entry)
            if fresh is not None:
                return fresh
            grant = await self._request()
            kept = grant.refresh_token or self._refresh_token
            if self.settings.flow is Flow.CLIENT_CREDENTIALS:
                kept = None
            await self._cache.save(
                self.name, CachedToken(self.settings.fingerprint, grant.access_token, kept)
            )
            if grant.refresh_token is not None and grant.refresh_token != self._refresh_token:
                self._refresh_token = grant.refresh_token
                await self._rotated(grant.refresh_token)
            lifetime = grant.access_token.expires_at - grant.access_token.issued_at
            log.info("new access token for %s, valid %d s", self.name, lifetime)
            return grant.access_token
        finally:
            await self._cache.unlock(self.name, self._owner)

    async def _request(self) -> TokenGrant:
        """One token request; a refused cached refresh token falls back to the configured one.

        The cache may hold a rotated token that a new sign-in has since replaced in the
        settings: the configured token then gets one try of its own.
        """
        used = self._refresh_token
        try:
            return await request_token(
                self.settings, used, clock=self._clock, timeout=self._timeout
            )
        except InvalidGrantError:
            configured = self.settings.refresh_token
            if configured is None or configured == used:
                raise
            log.info(
                "the cached refresh token of %s was refused; trying the configured one", self.name
            )
            self._refresh_token = configured
            return await request_token(
                self.settings, configured, clock=self._clock, timeout=self._timeout
            )

    async def _rotated(self, refresh_token: Secret) -> None:
        if self._on_refresh_token is None:
            return
        result = self._on_refresh_token(refresh_token)
        if inspect.isawaitable(result):
            await result

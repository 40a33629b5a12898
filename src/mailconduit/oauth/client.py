"""The token endpoint's requests over httpx: refresh (RFC 6749 section 6), client
credentials (section 4.4) and the device authorization grant (RFC 8628).

These are plain form POSTs answered with JSON, so httpx is all it takes; no provider SDK.
This module is the one place where httpx's errors and the providers' JSON errors become
:mod:`mailconduit.oauth.errors` types. Nothing here logs or formats a secret, and error
descriptions are scrubbed of every secret value that was sent.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final
from urllib.parse import quote_plus

from mailconduit.config.secret import Secret
from mailconduit.errors import ConfigError, FieldError
from mailconduit.netpolicy import denial_reason
from mailconduit.oauth.errors import (
    AccessDeniedError,
    ConsentRequiredError,
    DeviceCodeExpiredError,
    InvalidClientError,
    InvalidGrantError,
    InvalidScopeError,
    NotSignedInError,
    OAuthError,
    TokenEndpointDeniedError,
    TokenEndpointUnreachableError,
    TokenServerError,
    UnauthorizedClientError,
)
from mailconduit.oauth.settings import ClientAuth, Flow, OAuthSettings
from mailconduit.oauth.token import AccessToken, DeviceAuthorization, TokenGrant

__all__ = [
    "client_credentials",
    "poll_device_authorization",
    "refresh",
    "request_token",
    "start_device_authorization",
]

DEVICE_GRANT: Final = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_TIMEOUT: Final = 30.0
#: RFC 6749 makes expires_in optional; without it a token is taken to last an hour.
DEFAULT_LIFETIME: Final = 3600.0
#: RFC 8628 section 3.5: after slow_down, wait five seconds more between polls.
SLOW_DOWN_STEP: Final = 5.0
#: Shortest wait between polls, whatever interval a server announces.
MIN_POLL_INTERVAL: Final = 0.1
_DESCRIPTION_MAX: Final = 300

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

_ERRORS: Final[dict[str, type[OAuthError]]] = {
    "invalid_client": InvalidClientError,
    "invalid_grant": InvalidGrantError,
    "unauthorized_client": UnauthorizedClientError,
    "invalid_scope": InvalidScopeError,
    "consent_required": ConsentRequiredError,
    "interaction_required": ConsentRequiredError,
    "login_required": ConsentRequiredError,
    "access_denied": AccessDeniedError,
    "authorization_declined": AccessDeniedError,  # Microsoft's word for it
    "expired_token": DeviceCodeExpiredError,
    "temporarily_unavailable": TokenServerError,
    "server_error": TokenServerError,
}
#: Microsoft's AADSTS65001: "the user or administrator has not consented".
_MS_CONSENT_CODE: Final = 65001


class _AuthorizationPendingError(OAuthError):
    """The device sign-in is not finished yet: poll again."""


class _SlowDownError(OAuthError):
    """The device flow is polled too often: wait longer."""


def _basic(client_id: str, secret: str) -> str:
    """RFC 6749 section 2.3.1: both parts form-encoded, then HTTP Basic."""
    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _scrub(text: str, secrets: Iterable[str]) -> str:
    """The first line of ``text``, shortened, with every sent secret cut out."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    for secret in secrets:
        if secret:
            line = line.replace(secret, "********")
    return line[:_DESCRIPTION_MAX]


def _seconds(value: Any, default: float) -> float:
    """A JSON number of seconds, also as a string (Microsoft's v1 endpoint sends "3599")."""
    if isinstance(value, bool):
        return default
    if isinstance(value, int | float) and math.isfinite(value):
        return max(0.0, float(value))
    if isinstance(value, str) and value.strip().isdigit():
        return float(value.strip())
    return default


def _error(status: int, body: Any, endpoint: str, secrets: list[str]) -> OAuthError:
    """The typed error for a refused token request."""
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        kind: type[OAuthError] = TokenServerError if status >= 500 or status == 429 else OAuthError
        return kind("server_error" if status >= 500 else "invalid_response", "", endpoint, status)
    code = body["error"]
    description = _scrub(str(body.get("error_description") or ""), secrets)
    suberror = body.get("suberror")
    error_codes = body.get("error_codes")
    if code == "invalid_grant" and (
        suberror == "consent_required"
        or (isinstance(error_codes, list) and _MS_CONSENT_CODE in error_codes)
    ):
        return ConsentRequiredError("consent_required", description, endpoint, status)
    if code == "authorization_pending":
        return _AuthorizationPendingError(code, description, endpoint, status)
    if code == "slow_down":
        return _SlowDownError(code, description, endpoint, status)
    kind = _ERRORS.get(code) or (TokenServerError if status >= 500 or status == 429 else OAuthError)
    return kind(code, description, endpoint, status)


async def _check_address(url: str) -> None:
    """Refuse an endpoint whose host resolves to an address the network policy denies, as the
    SMTP client does; a name that does not resolve is left to the request to report."""
    from urllib.parse import urlsplit

    parsed = urlsplit(url)
    try:
        port = parsed.port or 443
        infos = await asyncio.get_running_loop().getaddrinfo(
            parsed.hostname, port, type=socket.SOCK_STREAM
        )
    except (OSError, ValueError):  # a name that does not resolve, a port that is no number
        return
    for info in infos:
        reason = denial_reason(str(info[4][0]))
        if reason:
            raise TokenEndpointDeniedError("network_policy", reason, url)


async def _post(
    settings: OAuthSettings, url: str, form: Mapping[str, str], *, timeout: float
) -> dict[str, Any]:
    """POST a form with the client's credentials; the JSON object answered, or an OAuthError."""
    data = dict(form)
    headers = {"Accept": "application/json"}
    secret = settings.client_secret.reveal() if settings.client_secret else ""
    if secret and settings.client_auth is ClientAuth.BASIC:
        headers["Authorization"] = _basic(settings.client_id, secret)
    else:
        data["client_id"] = settings.client_id
        if secret:
            data["client_secret"] = secret
    sent = [v for k, v in data.items() if k in ("client_secret", "refresh_token", "device_code")]
    sent.append(secret)
    await _check_address(url)
    # Imported here: an export through a connection without OAuth2 never needs it.
    import httpx

    try:
        async with httpx.AsyncClient(timeout=timeout) as http:
            response = await http.post(url, data=data, headers=headers)
    except httpx.TimeoutException:
        raise TokenEndpointUnreachableError(
            "timeout", f"no answer within {timeout:g} s", url
        ) from None
    except httpx.TransportError as exc:
        reason = _scrub(str(exc), sent) or type(exc).__name__
        raise TokenEndpointUnreachableError("unreachable", reason, url) from None
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if response.status_code == 200 and isinstance(body, dict):
        return body
    if response.status_code == 200:
        raise OAuthError("invalid_response", "the answer is not a JSON object", url, 200)
    raise _error(response.status_code, body, url, sent)


def _grant(body: Mapping[str, Any], endpoint: str, now: float) -> TokenGrant:
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        raise OAuthError("invalid_response", "the answer holds no access_token", endpoint, 200)
    token_type = str(body.get("token_type") or "Bearer")
    if token_type.lower() != "bearer":
        raise OAuthError(
            "unsupported_token_type",
            f"token type {token_type!r}; XOAUTH2 needs a bearer token",
            endpoint,
            200,
        )
    lifetime = _seconds(body.get("expires_in"), DEFAULT_LIFETIME)
    scope = body.get("scope")
    refresh_token = body.get("refresh_token")
    return TokenGrant(
        AccessToken(
            Secret(token),
            expires_at=now + lifetime,
            issued_at=now,
            scope=scope if isinstance(scope, str) else "",
        ),
        Secret(refresh_token) if isinstance(refresh_token, str) and refresh_token else None,
    )


async def refresh(
    settings: OAuthSettings,
    refresh_token: Secret,
    *,
    clock: Clock = time.time,
    timeout: float = DEFAULT_TIMEOUT,
) -> TokenGrant:
    """Trade a refresh token for an access token (and maybe a rotated refresh token)."""
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token.reveal()}
    if settings.scope:
        form["scope"] = settings.scope
    body = await _post(settings, settings.token_endpoint, form, timeout=timeout)
    return _grant(body, settings.token_endpoint, clock())


async def client_credentials(
    settings: OAuthSettings, *, clock: Clock = time.time, timeout: float = DEFAULT_TIMEOUT
) -> TokenGrant:
    """An app-only access token for the client itself (Microsoft's SMTP.SendAsApp)."""
    form = {"grant_type": "client_credentials"}
    if settings.scope:
        form["scope"] = settings.scope
    body = await _post(settings, settings.token_endpoint, form, timeout=timeout)
    return _grant(body, settings.token_endpoint, clock())


async def request_token(
    settings: OAuthSettings,
    refresh_token: Secret | None,
    *,
    clock: Clock = time.time,
    timeout: float = DEFAULT_TIMEOUT,
) -> TokenGrant:
    """A new access token by the settings' flow (``refresh_token`` is used by that flow only)."""
    if settings.flow is Flow.CLIENT_CREDENTIALS:
        return await client_credentials(settings, clock=clock, timeout=timeout)
    if refresh_token is None:
        raise NotSignedInError("no_refresh_token", "", settings.token_endpoint)
    return await refresh(settings, refresh_token, clock=clock, timeout=timeout)


async def start_device_authorization(
    settings: OAuthSettings, *, timeout: float = DEFAULT_TIMEOUT
) -> DeviceAuthorization:
    """Ask for a device code and the user code to show (RFC 8628 section 3.1)."""
    url = settings.device_endpoint
    if not url:
        raise ConfigError.for_fields(
            "OAuth settings",
            [FieldError("device_endpoint", "is needed to sign in with a device code")],
        )
    form = {"scope": settings.scope} if settings.scope else {}
    body = await _post(settings, url, form, timeout=timeout)
    device_code = body.get("device_code")
    user_code = body.get("user_code")
    # Google names it verification_url, an older draft's spelling.
    verification_uri = body.get("verification_uri") or body.get("verification_url")
    if not all(isinstance(v, str) and v for v in (device_code, user_code, verification_uri)):
        raise OAuthError(
            "invalid_response", "the answer lacks device_code, user_code or verification_uri", url
        )
    assert isinstance(device_code, str) and isinstance(user_code, str)
    complete = body.get("verification_uri_complete")
    message = body.get("message")
    return DeviceAuthorization(
        device_code=Secret(device_code),
        user_code=user_code,
        verification_uri=str(verification_uri),
        expires_in=_seconds(body.get("expires_in"), 900.0),
        interval=_seconds(body.get("interval"), 5.0),
        verification_uri_complete=complete if isinstance(complete, str) else "",
        message=message if isinstance(message, str) else "",
    )


async def poll_device_authorization(
    settings: OAuthSettings,
    authorization: DeviceAuthorization,
    *,
    clock: Clock = time.time,
    sleep: Sleep = asyncio.sleep,
    timeout: float = DEFAULT_TIMEOUT,
) -> TokenGrant:
    """Poll until the user signs in: every ``interval`` seconds, five more after each
    slow_down, and no longer than the code lives (then :class:`DeviceCodeExpiredError`)."""
    url = settings.token_endpoint
    form = {"grant_type": DEVICE_GRANT, "device_code": authorization.device_code.reveal()}
    interval = max(authorization.interval, MIN_POLL_INTERVAL)
    deadline = clock() + authorization.expires_in
    # Bounded by the code's lifetime; the count guards against a clock that stands still.
    for _ in range(math.ceil(authorization.expires_in / MIN_POLL_INTERVAL) + 1):
        await sleep(interval)
        if clock() >= deadline:
            break
        try:
            body = await _post(settings, url, form, timeout=timeout)
        except _AuthorizationPendingError:
            continue
        except _SlowDownError:
            interval += SLOW_DOWN_STEP
            continue
        return _grant(body, url, clock())
    raise DeviceCodeExpiredError("expired_token", "nobody signed in before the code expired", url)

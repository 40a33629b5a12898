"""A local OAuth2 authorization server and an SMTP server that checks XOAUTH2 against it.

:class:`OAuthServer` speaks RFC 6749 (token endpoint: ``refresh_token``,
``client_credentials`` and the RFC 8628 ``device_code`` grant; client authentication by
``client_secret_post`` or ``client_secret_basic``), RFC 8628 (device authorization, with a
sign-in page at ``verification_uri`` that stands in for the user's browser) and RFC 7009
(revocation). It runs on 127.0.0.1, port 0, in a background thread with the standard
library's ``ThreadingHTTPServer``: it needs no event loop, so sync and async tests share it
without juggling loops, it starts in milliseconds, and a handler can drop a connection or
stall to play an unreachable endpoint. Tokens expire on the server's ``clock`` (pass a
:class:`ManualClock` to make them expire mid-run without waiting); refresh tokens can
rotate; tokens can be revoked one by one or a whole grant at once; errors can be scripted;
``issued`` counts what was handed out by grant type, so a test asserts "refreshed once".

:class:`XOAuth2Server` is an aiosmtpd server that offers ``AUTH XOAUTH2`` only and accepts
a token only when its :class:`OAuthServer` issued it, it has not expired or been revoked,
it carries the required scope and it was issued to the user named in the SASL string.
Refusals read like Exchange Online's (``535 5.7.3``, ``535 5.7.139 ...``) or Gmail's (a 334
with a JSON error, then ``535-5.7.8``). MAIL before a successful AUTH gets 530.

Example::

    with OAuthServer(access_token_lifetime=60) as auth:
        auth.register_client("app", "secret", scopes=["smtp"])
        refresh_token = auth.sign_in("app", "ann@example.com", "smtp")
        settings = auth.settings("app", client_secret="secret", refresh_token=refresh_token)
        async with XOAuth2Server(auth, required_scope="smtp") as smtp:
            ...  # a TokenProvider(settings, ...) feeds tokens to sessions on smtp.port
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import html
import json
import logging
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import parse_qsl, unquote_plus, urlsplit

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

from mailconduit.oauth import OAuthSettings, validate_oauth_settings
from mailconduit.sink.serving import ContextServer, PipeliningHandler, close_listeners
from mailconduit.testing.server import ReceivedMessage, read_xoauth2

__all__ = [
    "EXCHANGE_REPLIES",
    "GMAIL_REFUSAL",
    "SCRIPTED_ERRORS",
    "AuthAttempt",
    "ManualClock",
    "OAuthServer",
    "TokenCheck",
    "TokenRequest",
    "XOAuth2Server",
]

log = logging.getLogger("mailconduit.testing.oauth")

DEVICE_GRANT: Final = "urn:ietf:params:oauth:grant-type:device_code"
ALL_GRANTS: Final = frozenset({"refresh_token", "client_credentials", DEVICE_GRANT})
#: RFC 8628 section 6.1: user codes from consonants only, so they spell no words.
_USER_CODE_LETTERS: Final = "BCDFGHJKLMNPQRSTVWXZ"
_TRACE: Final = (
    "\r\nTrace ID: 0f7a3c1e-0000-4000-8000-mailconduit\r\nCorrelation ID: "
    "5b2c9d44-0000-4000-8000-mailconduit\r\nTimestamp: 2026-01-01 00:00:00Z"
)

#: Named errors for :meth:`OAuthServer.fail`: HTTP status and body, shaped like the
#: providers' (Microsoft's AADSTS descriptions span lines; clients show the first).
SCRIPTED_ERRORS: Final[dict[str, tuple[int, dict[str, Any]]]] = {
    "invalid_client": (
        401,
        {
            "error": "invalid_client",
            "error_description": "AADSTS7000215: Invalid client secret provided." + _TRACE,
            "error_codes": [7000215],
        },
    ),
    "invalid_grant": (
        400,
        {
            "error": "invalid_grant",
            "error_description": "AADSTS70000: The provided grant is not valid or has been "
            "revoked." + _TRACE,
            "error_codes": [70000],
        },
    ),
    "unauthorized_client": (
        400,
        {
            "error": "unauthorized_client",
            "error_description": "The client is not allowed to use this grant type.",
        },
    ),
    "invalid_scope": (
        400,
        {
            "error": "invalid_scope",
            "error_description": "AADSTS70011: The provided value for the input parameter "
            "'scope' is not valid." + _TRACE,
            "error_codes": [70011],
        },
    ),
    "consent_required": (
        400,
        {
            "error": "invalid_grant",
            "error_description": "AADSTS65001: The user or administrator has not consented "
            "to use the application. Send an interactive authorization request for this user "
            "and resource." + _TRACE,
            "error_codes": [65001],
            "suberror": "consent_required",
        },
    ),
    "interaction_required": (
        400,
        {
            "error": "interaction_required",
            "error_description": "AADSTS50076: Due to a configuration change made by your "
            "administrator, you must use multi-factor authentication." + _TRACE,
            "error_codes": [50076],
        },
    ),
    "temporarily_unavailable": (
        503,
        {
            "error": "temporarily_unavailable",
            "error_description": "The service is temporarily unavailable.",
        },
    ),
    "server_error": (
        500,
        {"error": "server_error", "error_description": "An internal error occurred."},
    ),
}

#: What Exchange Online answers at AUTH, by cause (texts as Microsoft sends them, without
#: the trailing "[server timestamp id]").
EXCHANGE_REPLIES: Final = {
    "invalid_token": "535 5.7.3 Authentication unsuccessful",
    "tenant_disabled": "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is "
    "disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information.",
    "mailbox_disabled": "535 5.7.139 Authentication unsuccessful, the request did not meet the "
    "criteria to be authenticated successfully. Contact your administrator.",
    "bad_credentials": "535 5.7.139 Authentication unsuccessful, the user credentials were "
    "incorrect.",
}
#: Gmail's final answer after the JSON error challenge.
GMAIL_REFUSAL: Final = (
    "535-5.7.8 Username and Password not accepted. For more information, go to\r\n"
    "535 5.7.8  https://support.google.com/mail/?p=BadCredentials - gsmtp"
)


class ManualClock:
    """A clock a test moves by hand. Pass it as ``clock`` to the servers and to the token
    provider, and ``clock.sleep`` as its ``sleep``: waits then cost no real time."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)
        await asyncio.sleep(0)


@dataclass(frozen=True, slots=True)
class TokenCheck:
    """What the authorization server knows of an access token."""

    status: str  # valid, expired, revoked or unknown
    user: str = ""
    scope: str = ""
    client_id: str = ""

    @property
    def valid(self) -> bool:
        return self.status == "valid"

    def has_scope(self, scope: str) -> bool:
        return not scope or set(scope.split()) <= set(self.scope.split())


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """One request the server answered: where, for what grant, and the error if refused."""

    endpoint: str  # token, device, revoke
    grant_type: str
    client_id: str
    client_auth: str  # client_secret_basic, client_secret_post or none
    error: str = ""


@dataclass(slots=True)
class _Client:
    client_id: str
    client_secret: str | None
    grant_types: frozenset[str]
    scopes: frozenset[str]
    consent: bool


@dataclass(slots=True)
class _Grant:
    client_id: str
    user: str
    scope: str
    revoked: bool = False


@dataclass(slots=True)
class _Token:
    grant: _Grant
    kind: str  # access or refresh
    scope: str
    expires_at: float | None
    revoked: bool = False

    def dead(self) -> bool:
        return self.revoked or self.grant.revoked


@dataclass(slots=True)
class _DeviceRequest:
    client_id: str
    user_code: str
    scope: str
    expires_at: float
    interval: float
    state: str = "pending"  # pending, approved, denied, used
    user: str = ""
    last_poll: float | None = None


@dataclass(slots=True)
class _Fault:
    reply: str | int | Mapping[str, Any]
    times: int
    endpoint: str
    grant_type: str | None
    status: int


class _Refusal(Exception):
    """An OAuth error response (status and JSON body) raised inside a handler."""

    def __init__(self, status: int, error: str, description: str = "", **extra: Any) -> None:
        super().__init__(error)
        self.status = status
        self.body: dict[str, Any] = {"error": error, **extra}
        if description:
            self.body["error_description"] = description


class _Endpoint:
    """An endpoint of the server, read as its URL: the server's base URL and this path."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __get__(self, server: OAuthServer, owner: type[OAuthServer] | None = None) -> str:
        return f"{server.url}{self.path}"


class OAuthServer:
    """An OAuth2 authorization server on loopback for tests (see the module docstring)."""

    def __init__(
        self,
        *,
        access_token_lifetime: float = 3600.0,
        rotate_refresh_tokens: bool = False,
        device_code_lifetime: float = 900.0,
        device_interval: float = 5.0,
        clock: Callable[[], float] = time.time,
        host: str = "127.0.0.1",
    ) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("the test authorization server listens on loopback only")
        self.host = host
        self.port = 0
        self.access_token_lifetime = access_token_lifetime
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.device_code_lifetime = device_code_lifetime
        self.device_interval = device_interval
        self.clock = clock
        #: Tokens handed out, by grant type ("refresh_token" counts refreshes).
        self.issued: collections.Counter[str] = collections.Counter()
        self.requests: list[TokenRequest] = []
        self._clients: dict[str, _Client] = {}
        self._tokens: dict[str, _Token] = {}
        self._devices: dict[str, _DeviceRequest] = {}
        self._faults: list[_Fault] = []
        self._mutex = threading.RLock()
        self._stopping = threading.Event()
        self._gate = threading.Event()
        self._gate.set()
        self._held = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- running ------------------------------------------------------------------------
    def start(self) -> None:
        owner = self

        class Handler(_Handler):
            server_owner = owner

        self._stopping.clear()
        self._httpd = ThreadingHTTPServer((self.host, 0), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="mailconduit-oauth-server",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> OAuthServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    token_endpoint = _Endpoint("/token")
    device_endpoint = _Endpoint("/device/code")
    verification_uri = _Endpoint("/device")
    revocation_endpoint = _Endpoint("/revoke")

    @property
    def refreshes(self) -> int:
        """How many refresh_token grants succeeded."""
        return self.issued["refresh_token"]

    # -- set-up -------------------------------------------------------------------------
    def register_client(
        self,
        client_id: str,
        client_secret: str | None = None,
        *,
        grant_types: Iterable[str] = ALL_GRANTS,
        scopes: Iterable[str] = (),
        consent: bool = True,
    ) -> None:
        """Register an app: a confidential client with a secret, a public one without.

        ``scopes`` lists what it may ask for (empty: anything); ``consent=False`` makes every
        token request fail as when no one consented to the app (AADSTS65001).
        """
        with self._mutex:
            self._clients[client_id] = _Client(
                client_id, client_secret, frozenset(grant_types), frozenset(scopes), consent
            )

    def set_consent(self, client_id: str, consent: bool) -> None:
        with self._mutex:
            self._clients[client_id].consent = consent

    def sign_in(self, client_id: str, user: str, scope: str) -> str:
        """A refresh token for ``user``, as if they had signed in to the app earlier."""
        with self._mutex:
            return self._new_token(_Grant(client_id, user, scope), "refresh", scope)

    def settings(
        self,
        client_id: str,
        *,
        client_secret: str | None = None,
        refresh_token: str | None = None,
        scope: str = "",
        flow: str = "refresh_token",
        client_auth: str = "client_secret_post",
    ) -> OAuthSettings:
        """OAuth settings of a ``generic`` provider pointing at this server."""
        return validate_oauth_settings(
            {
                "provider": "generic",
                "client_id": client_id,
                "client_secret": client_secret,
                "refresh_token": refresh_token,
                "scope": scope,
                "flow": flow,
                "client_auth": client_auth,
                "token_endpoint": self.token_endpoint,
                "device_endpoint": self.device_endpoint,
            }
        )

    def fail(
        self,
        reply: str | int | Mapping[str, Any],
        *,
        times: int = 1,
        endpoint: str = "token",
        grant_type: str | None = None,
        status: int = 400,
    ) -> None:
        """Answer the next ``times`` requests to ``endpoint`` (``token``, ``device``) with
        an error instead, optionally only those of one ``grant_type``.

        ``reply`` is a name from :data:`SCRIPTED_ERRORS`, an HTTP status (a bare error page),
        ``"drop"`` (close the connection unanswered), ``"hang"`` (never answer), or a JSON
        body sent with ``status``.
        """
        if (
            isinstance(reply, str)
            and reply not in SCRIPTED_ERRORS
            and reply not in ("drop", "hang")
        ):
            raise ValueError(f"unknown scripted error {reply!r}")
        with self._mutex:
            self._faults.append(_Fault(reply, times, endpoint, grant_type, status))

    def approve(self, user_code: str, user: str) -> None:
        """Finish a device sign-in as ``user`` (what the browser page does)."""
        with self._mutex:
            device = self._device_by_user_code(user_code)
            device.user, device.state = user, "approved"

    def deny(self, user_code: str) -> None:
        """Decline a device sign-in."""
        with self._mutex:
            self._device_by_user_code(user_code).state = "denied"

    def revoke(self, token: str, *, whole_grant: bool = False) -> None:
        """Revoke a token; ``whole_grant`` also revokes every token of the same sign-in
        (refresh and access), as RFC 7009 asks when a refresh token is revoked."""
        with self._mutex:
            found = self._tokens.get(token)
            if found is None:
                raise KeyError("no such token")
            found.revoked = True
            if whole_grant:
                found.grant.revoked = True

    def check_access_token(self, token: str) -> TokenCheck:
        """What a resource server learns about a bearer token (RFC 7662's questions)."""
        with self._mutex:
            found = self._tokens.get(token)
            if found is None or found.kind != "access":
                return TokenCheck("unknown")
            grant = found.grant
            if found.dead():
                status = "revoked"
            elif found.expires_at is not None and self.clock() >= found.expires_at:
                status = "expired"
            else:
                status = "valid"
            return TokenCheck(status, grant.user, found.scope, grant.client_id)

    def token_values(self) -> list[str]:
        """Every access and refresh token handed out so far: what a test looks for in logs,
        outputs and files to prove no secret leaked."""
        with self._mutex:
            return list(self._tokens)

    def pending_user_codes(self) -> list[str]:
        """User codes of device sign-ins nobody has finished."""
        with self._mutex:
            return [d.user_code for d in self._devices.values() if d.state == "pending"]

    # -- internals ----------------------------------------------------------------------
    def _device_by_user_code(self, user_code: str) -> _DeviceRequest:
        wanted = user_code.strip().upper()
        for device in self._devices.values():
            if device.user_code == wanted:
                return device
        raise KeyError(f"no device sign-in with user code {user_code!r}")

    def _new_token(self, grant: _Grant, kind: str, scope: str) -> str:
        value = ("at-" if kind == "access" else "rt-") + secrets.token_urlsafe(24)
        lifetime = self.access_token_lifetime if kind == "access" else None
        expires_at = self.clock() + lifetime if lifetime is not None else None
        self._tokens[value] = _Token(grant, kind, scope, expires_at)
        return value

    def take_fault(self, endpoint: str, form: Mapping[str, str]) -> _Fault | None:
        """The scripted fault for this request, if any: counted down, and recorded in
        ``requests`` with ``error`` "scripted: REPLY"."""
        grant_type = DEVICE_GRANT if endpoint == "device" else form.get("grant_type", "")
        with self._mutex:
            for fault in self._faults:
                if fault.endpoint == endpoint and fault.grant_type in (None, grant_type):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    shown = fault.reply if not isinstance(fault.reply, Mapping) else fault.status
                    self.requests.append(
                        TokenRequest(
                            endpoint,
                            grant_type,
                            form.get("client_id", ""),
                            "",
                            f"scripted: {shown}",
                        )
                    )
                    return fault
        return None

    def _authenticate(self, form: dict[str, str], authorization: str) -> tuple[_Client, str]:
        """The calling client and how it authenticated (RFC 6749 section 2.3)."""
        method, client_id, secret = "none", form.get("client_id", ""), form.get("client_secret")
        if authorization.lower().startswith("basic "):
            if "client_secret" in form:
                raise _Refusal(400, "invalid_request", "use one client authentication method")
            try:
                pair = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise _Refusal(401, "invalid_client", "malformed Basic credentials") from None
            raw_id, _, raw_secret = pair.partition(":")
            method, client_id, secret = (
                "client_secret_basic",
                unquote_plus(raw_id),
                unquote_plus(raw_secret),
            )
        elif secret is not None:
            method = "client_secret_post"
        client = self._clients.get(client_id)
        if client is None:
            raise _Refusal(401, "invalid_client", "unknown client")
        if client.client_secret is not None and secret != client.client_secret:
            raise _Refusal(401, "invalid_client", "client authentication failed")
        return client, method

    def _check_scope(self, client: _Client, requested: str, granted: str | None = None) -> str:
        scopes = requested.split()
        allowed = set(granted.split()) if granted is not None else client.scopes
        if allowed and not set(scopes) <= allowed:
            raise _Refusal(400, "invalid_scope", "the requested scope exceeds what was granted")
        return requested if requested else " ".join(sorted(allowed))

    def _issue(
        self, grant: _Grant, scope: str, grant_type: str, *, refresh: bool
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "access_token": self._new_token(grant, "access", scope),
            "token_type": "Bearer",
            "expires_in": int(self.access_token_lifetime),
            "scope": scope,
        }
        if refresh:
            body["refresh_token"] = self._new_token(grant, "refresh", grant.scope)
        self.issued[grant_type] += 1
        return body

    def handle(self, endpoint: str, form: dict[str, str], authorization: str) -> dict[str, Any]:
        """One request to ``endpoint`` (token, device, revoke), recorded in ``requests``;
        raises _Refusal for an error answer."""
        with self._mutex:
            return self._handle(endpoint, form, authorization)

    def hold(self) -> None:
        """Keep token requests waiting (unanswered) until :meth:`release`: a test can then
        see who else asks while one refresh is in flight."""
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    @property
    def held(self) -> int:
        """How many token requests are waiting at the gate now."""
        with self._mutex:
            return self._held

    def pass_gate(self) -> None:
        """Wait at the gate (a no-op unless :meth:`hold` closed it), at most a minute."""
        with self._mutex:
            self._held += 1
        try:
            for _ in range(1200):
                if self._gate.wait(0.05) or self._stopping.is_set():
                    break
        finally:
            with self._mutex:
                self._held -= 1

    def wait_until_stopped(self, timeout: float) -> None:
        """Block until the server stops or ``timeout`` passes (a hanging answer)."""
        self._stopping.wait(timeout)

    def _handle(self, endpoint: str, form: dict[str, str], authorization: str) -> dict[str, Any]:
        grant_type = DEVICE_GRANT if endpoint == "device" else form.get("grant_type", "")
        client_id, method = form.get("client_id", ""), "none"
        try:
            client, method = self._authenticate(form, authorization)
            client_id = client.client_id
            if endpoint == "token":
                body = self._grant(client, grant_type, form)
            elif endpoint == "device":
                body = self._device_authorization(client, form.get("scope", ""))
            else:
                self._revoke(client, form.get("token", ""))
                body = {}
        except _Refusal as refusal:
            self.requests.append(
                TokenRequest(endpoint, grant_type, client_id, method, refusal.body["error"])
            )
            raise
        self.requests.append(TokenRequest(endpoint, grant_type, client_id, method))
        return body

    def _grant(self, client: _Client, grant_type: str, form: dict[str, str]) -> dict[str, Any]:
        if grant_type not in ALL_GRANTS:
            raise _Refusal(400, "unsupported_grant_type", f"grant type {grant_type!r} is unknown")
        if grant_type not in client.grant_types:
            raise _Refusal(400, "unauthorized_client", "the client may not use this grant type")
        if not client.consent:
            status, body = SCRIPTED_ERRORS["consent_required"]
            raise _Refusal(status, **body)
        if grant_type == "refresh_token":
            found = self._tokens.get(form.get("refresh_token", ""))
            if (
                found is None
                or found.kind != "refresh"
                or found.dead()
                or found.grant.client_id != client.client_id
            ):
                raise _Refusal(400, "invalid_grant", "Token has been expired or revoked.")
            scope = self._check_scope(client, form.get("scope", ""), found.grant.scope)
            if self.rotate_refresh_tokens:
                found.revoked = True
            return self._issue(found.grant, scope, grant_type, refresh=self.rotate_refresh_tokens)
        if grant_type == "client_credentials":
            if client.client_secret is None:
                raise _Refusal(400, "unauthorized_client", "a public client has no credentials")
            scope = self._check_scope(client, form.get("scope", ""))
            return self._issue(
                _Grant(client.client_id, "", scope), scope, grant_type, refresh=False
            )
        return self._device_grant(client, form.get("device_code", ""))

    def _device_grant(self, client: _Client, device_code: str) -> dict[str, Any]:
        device = self._devices.get(device_code)
        if device is None or device.client_id != client.client_id or device.state == "used":
            raise _Refusal(400, "invalid_grant", "unknown or used device code")
        now = self.clock()
        if now >= device.expires_at:
            raise _Refusal(400, "expired_token", "the device code expired")
        if device.state == "denied":
            raise _Refusal(400, "access_denied", "the user declined")
        if device.state == "pending":
            early = device.last_poll is not None and now - device.last_poll < device.interval
            device.last_poll = now
            if early:
                device.interval += 5
                raise _Refusal(400, "slow_down", "polling too often")
            raise _Refusal(400, "authorization_pending", "the user has not signed in yet")
        device.state = "used"
        grant = _Grant(client.client_id, device.user, device.scope)
        return self._issue(grant, device.scope, DEVICE_GRANT, refresh=True)

    def _device_authorization(self, client: _Client, requested: str) -> dict[str, Any]:
        if DEVICE_GRANT not in client.grant_types:
            raise _Refusal(400, "unauthorized_client", "the client may not use the device flow")
        scope = self._check_scope(client, requested)
        code = "".join(secrets.choice(_USER_CODE_LETTERS) for _ in range(8))
        user_code = f"{code[:4]}-{code[4:]}"
        device_code = "dc-" + secrets.token_urlsafe(24)
        self._devices[device_code] = _DeviceRequest(
            client.client_id,
            user_code,
            scope,
            self.clock() + self.device_code_lifetime,
            self.device_interval,
        )
        return {
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": self.verification_uri,
            "verification_uri_complete": f"{self.verification_uri}?user_code={user_code}",
            "expires_in": int(self.device_code_lifetime),
            "interval": self.device_interval,
        }

    def _revoke(self, client: _Client, token: str) -> None:
        """RFC 7009: unknown tokens are not an error; a refresh token takes its grant along."""
        found = self._tokens.get(token)
        if found is not None and found.grant.client_id == client.client_id:
            found.revoked = True
            if found.kind == "refresh":
                found.grant.revoked = True


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to the owning :class:`OAuthServer`."""

    server_owner: OAuthServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.command, urlsplit(self.path).path)

    def _form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        return dict(parse_qsl(raw, keep_blank_values=True))

    def _send(
        self, status: int, body: bytes, content_type: str, extra: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, body: Mapping[str, Any]) -> None:
        extra = {"WWW-Authenticate": 'Basic realm="oauth"'} if status == 401 else {}
        self._send(status, json.dumps(body).encode(), "application/json", extra)

    def _page(self, status: int, text: str) -> None:
        self._send(status, text.encode(), "text/html; charset=utf-8")

    def _play(self, fault: _Fault) -> None:
        owner = self.server_owner
        if fault.reply == "drop":
            self.close_connection = True
            return
        if fault.reply == "hang":
            owner.wait_until_stopped(60)
            self.close_connection = True
            return
        if isinstance(fault.reply, int):
            self._page(fault.reply, f"<h1>{fault.reply}</h1>")
        elif isinstance(fault.reply, str):
            status, body = SCRIPTED_ERRORS[fault.reply]
            self._json(status, body)
        else:
            self._json(fault.status, fault.reply)

    def do_POST(self) -> None:
        owner = self.server_owner
        path = urlsplit(self.path).path
        form = self._form()
        authorization = self.headers.get("Authorization", "")
        endpoint = {"/token": "token", "/device/code": "device", "/revoke": "revoke"}.get(path)
        if path == "/device":
            self._sign_in_page(form)
            return
        if endpoint is None:
            self._page(404, "<h1>not found</h1>")
            return
        fault = owner.take_fault(endpoint, form)
        if fault is not None:
            self._play(fault)
            return
        if endpoint == "token":
            owner.pass_gate()
        try:
            body = owner.handle(endpoint, form, authorization)
        except _Refusal as refusal:
            self._json(refusal.status, refusal.body)
            return
        if endpoint == "revoke":
            self._send(200, b"", "text/plain")
        else:
            self._json(200, body)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != "/device":
            self._page(404, "<h1>not found</h1>")
            return
        code = html.escape(dict(parse_qsl(parts.query)).get("user_code", ""))
        self._page(
            200,
            "<form method=post action=/device><h1>Sign in</h1>"
            f"<label>Code <input name=user_code value='{code}'></label>"
            "<label>User <input name=user></label>"
            "<button name=action value=approve>Approve</button>"
            "<button name=action value=deny>Deny</button></form>",
        )

    def _sign_in_page(self, form: dict[str, str]) -> None:
        """The browser step: approve or deny a user code."""
        owner = self.server_owner
        try:
            if form.get("action") == "deny":
                owner.deny(form.get("user_code", ""))
                self._page(200, "<p>Sign-in declined. You may close this window.</p>")
            else:
                owner.approve(form.get("user_code", ""), form.get("user", "") or "user@example.com")
                self._page(200, "<p>Signed in. You may close this window.</p>")
        except KeyError:
            self._page(400, "<p>That code is not valid.</p>")


@dataclass(frozen=True, slots=True)
class AuthAttempt:
    """One AUTH XOAUTH2 as the SMTP server judged it (the token itself is not kept)."""

    user: str
    outcome: str  # ok, unknown, expired, revoked, scope, user, refused, malformed
    reply: str


class _XOAuth2Handler(PipeliningHandler):
    """aiosmtpd hooks: EHLO additions, XOAUTH2 checked against the authority, recording."""

    def __init__(self, owner: XOAuth2Server) -> None:
        self.owner = owner

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Sender OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.owner.messages.append(
            ReceivedMessage(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                data=bytes(envelope.original_content or b""),
                mail_options=tuple(envelope.mail_options),
                session=server.number if isinstance(server, _XOAuth2SMTP) else 0,
                smtputf8=bool(envelope.smtp_utf8),
            )
        )
        return "250 2.0.0 OK queued"

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        owner = self.owner
        login = await read_xoauth2(server, args)
        if login is None:
            return AuthResult(success=False, handled=True)
        user, token = login
        outcome = owner.judge(user, token)
        if outcome == "ok":
            owner.auth_attempts.append(AuthAttempt(user, outcome, owner.accepted_reply))
            return AuthResult(
                success=True,
                auth_data=LoginPassword(user.encode(), b""),
                message=owner.accepted_reply,
            )
        reply = owner.refusal_reply(outcome)
        owner.auth_attempts.append(AuthAttempt(user, outcome, reply))
        if owner.style == "google":
            error = {"status": "400", "schemes": "Bearer", "scope": owner.required_scope}
            if await server.challenge_auth(json.dumps(error)) is MISSING:
                return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False, message=reply)


class _XOAuth2SMTP(SMTP):
    """aiosmtpd's SMTP that tells its server which connections are open."""

    def __init__(self, owner: XOAuth2Server, **kwargs: Any) -> None:
        self.owner = owner
        self.number = 0
        super().__init__(_XOAuth2Handler(owner), **kwargs)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.number == 0:  # not again after STARTTLS
            self.number = self.owner.opened(self)

    def connection_lost(self, error: Exception | None) -> None:
        self.owner.closed(self)
        super().connection_lost(error)


class XOAuth2Server(ContextServer):
    """An SMTP server on loopback accepting only XOAUTH2 tokens its authority issued.

    ``style`` picks the refusals: ``"microsoft"`` (``535 5.7.3 Authentication
    unsuccessful``) or ``"google"`` (334 JSON error, then ``535-5.7.8``). ``refuse`` makes
    every AUTH fail with one of :data:`EXCHANGE_REPLIES` (e.g. ``"tenant_disabled"``), as
    Exchange does whatever the token. ``required_scope`` must be among the token's scopes.
    App-only tokens (client credentials) may act for the ``mailboxes`` given (any when None).
    """

    what = "the XOAUTH2 test server"
    thread_name = "mailconduit-xoauth2-server"

    def __init__(
        self,
        authority: OAuthServer,
        *,
        style: str = "microsoft",
        required_scope: str = "",
        refuse: str = "",
        mailboxes: Collection[str] | None = None,
        hostname: str = "smtp.oauth.test",
        host: str = "127.0.0.1",
        port: int = 0,
        tls_context: ssl.SSLContext | None = None,
        starttls_context: ssl.SSLContext | None = None,
    ) -> None:
        if style not in ("microsoft", "google"):
            raise ValueError("style is microsoft or google")
        if refuse and refuse not in EXCHANGE_REPLIES:
            raise ValueError(f"refuse is one of {sorted(EXCHANGE_REPLIES)}")
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("the test server listens on loopback only")
        self.authority = authority
        self.style = style
        self.required_scope = required_scope
        self.refuse = refuse
        self.mailboxes = {m.lower() for m in mailboxes} if mailboxes is not None else None
        self.hostname = hostname
        self.host = host
        self.port = port
        self.tls_context = tls_context
        self.starttls_context = starttls_context
        self.messages: list[ReceivedMessage] = []
        self.auth_attempts: list[AuthAttempt] = []
        self.session_count = 0
        self._open: set[_XOAuth2SMTP] = set()
        self._server: asyncio.base_events.Server | None = None

    def opened(self, protocol: _XOAuth2SMTP) -> int:
        """Count a new connection; its number (from 1) for the messages it carries."""
        self._open.add(protocol)
        self.session_count += 1
        return self.session_count

    def closed(self, protocol: _XOAuth2SMTP) -> None:
        self._open.discard(protocol)

    @property
    def accepted_reply(self) -> str:
        return (
            "235 2.7.0 Accepted"
            if self.style == "google"
            else "235 2.7.0 Authentication successful"
        )

    def refusal_reply(self, outcome: str) -> str:
        if self.style == "google":
            return GMAIL_REFUSAL
        if outcome == "refused":
            return EXCHANGE_REPLIES[self.refuse]
        return EXCHANGE_REPLIES["invalid_token"]

    def judge(self, user: str, token: str) -> str:
        """``ok`` or why the token is refused: unknown, expired, revoked, scope, user, refused."""
        if self.refuse:
            return "refused"
        if not user or not token:
            return "malformed"
        check = self.authority.check_access_token(token)
        if not check.valid:
            return check.status
        if not check.has_scope(self.required_scope):
            return "scope"
        if check.user:
            return "ok" if check.user.lower() == user.lower() else "user"
        if self.mailboxes is not None and user.lower() not in self.mailboxes:
            return "user"
        return "ok"

    def _protocol(self) -> _XOAuth2SMTP:
        return _XOAuth2SMTP(
            self,
            hostname=self.hostname,
            ident="mailconduit XOAUTH2 test server",
            tls_context=self.starttls_context,
            decode_data=False,
            enable_SMTPUTF8=True,
            auth_require_tls=False,
            auth_exclude_mechanism=["LOGIN", "PLAIN"],
            loop=asyncio.get_running_loop(),
        )

    async def start(self) -> None:
        """Listen in the running loop; ``port`` is then the real port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol, host=self.host, port=self.port, ssl=self.tls_context
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        if self._server is None:
            return
        await close_listeners([self._server], self._open)
        self._server = None

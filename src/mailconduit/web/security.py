"""The console's gatekeeper: who is calling, whether the request may change anything, and the
headers that keep a browser from being turned against the console.

* :class:`AccessMiddleware` (pure ASGI, outermost): checks the Host header (no DNS rebinding
  onto 127.0.0.1), caps request bodies, signs the caller in from a session cookie or a Bearer
  token, refuses cross-origin state changes (Origin/Referer), and adds security headers.
* :class:`CsrfRoute`: every route is built with it; a state-changing request signed in by
  cookie must also carry the session's CSRF token (form field or ``X-CSRF-Token`` header).
"""

from __future__ import annotations

import hmac
import html
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import anyio.to_thread
from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute
from itsdangerous import BadSignature, TimestampSigner
from starlette.datastructures import Headers
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailconduit.accounts import users
from mailconduit.home import home

__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "LOGIN_COOKIE",
    "SESSION_COOKIE",
    "AccessMiddleware",
    "CsrfRoute",
    "WebSettings",
    "load_secret_key",
    "safe_next",
]

SESSION_COOKIE = "mailconduit_session"
LOGIN_COOKIE = "mailconduit_login"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SECRET_KEY_FILE = "web-secret.key"  # noqa: S105 - a file name
#: Bodies of anything but a file upload stay small.
MAX_FORM_BYTES = 1024 * 1024
DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")

PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; frame-src 'self'; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'; object-src 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", PAGE_CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
)


#: What a browser shows when the gatekeeper refuses a page request (no template engine here).
_REFUSAL_PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    '<title>Refused · mailconduit</title><link rel="stylesheet" href="/static/style.css"></head>'
    '<body><main id="main"><section class="card narrow"><h1>Refused</h1>'
    '<p class="error" role="alert">{text}</p><p><a href="/">Go to the main menu</a></p>'
    "</section></main></body></html>"
)


def load_secret_key() -> bytes:
    """The key that signs cookies: ``web-secret.key`` under MAILCONDUIT_HOME, created 0600."""
    path: Path = home() / SECRET_KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes().strip()
        if len(key) >= 32:
            return key
        raise OSError(f"{path} holds no usable key; delete it to create a new one") from None
    key = os.urandom(32).hex().encode("ascii")
    with os.fdopen(fd, "wb") as fh:
        fh.write(key + b"\n")
    return key


@dataclass(frozen=True, slots=True)
class WebSettings:
    """How one console instance guards itself; built by :func:`mailconduit.web.app.create_app`.

    ``allowed_hosts`` are host names (no port) the Host header may name; ``"*"`` allows any.
    """

    secret_key: bytes
    allowed_hosts: tuple[str, ...] = LOCAL_HOSTS
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    secure_cookies: bool = False
    signer: TimestampSigner = field(init=False, repr=False)
    login_signer: TimestampSigner = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "signer", TimestampSigner(self.secret_key, salt="session"))
        object.__setattr__(self, "login_signer", TimestampSigner(self.secret_key, salt="login"))


def safe_next(target: str | None) -> str:
    """A post-login destination that stays on this site (no ``//evil`` or ``https://evil``)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    if any(c in target for c in "\r\n\\") or urlsplit(target).netloc:
        return "/"
    return target


def is_api_path(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def _is_public(path: str, method: str) -> bool:
    return path in ("/login", "/favicon.ico") or path.startswith("/static/")


def _host_name(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _own_origin(scope: Scope, headers: Headers) -> str:
    return f"{scope.get('scheme', 'http')}://{headers.get('host', '')}".lower()


def _same_origin(scope: Scope, headers: Headers) -> bool:
    """True when Origin (or, lacking it, Referer) names this very site."""
    expected = _own_origin(scope, headers)
    origin = headers.get("origin")
    if origin is not None:
        return origin.lower() == expected
    referer = headers.get("referer")
    if referer:
        parts = urlsplit(referer)
        return f"{parts.scheme}://{parts.netloc}".lower() == expected
    return False


class _BodyTooLargeError(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request is larger than {limit // 1024} KiB")


class AccessMiddleware:
    """Host check, body cap, sign-in, Origin check and security headers for every HTTP request."""

    def __init__(self, app: ASGIApp, *, settings: WebSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self._with_security_headers(scope, send)
        headers = Headers(scope=scope)
        path: str = scope["path"]
        method: str = scope["method"]
        api = is_api_path(path)

        hosts = self.settings.allowed_hosts
        if "*" not in hosts and _host_name(headers.get("host", "")) not in hosts:
            await PlainTextResponse("unknown Host header", status_code=400)(scope, receive, send)
            return

        multipart = headers.get("content-type", "").startswith("multipart/form-data")
        limit = self.settings.max_upload_bytes if multipart else MAX_FORM_BYTES
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await self._refuse(
                scope, receive, send, 413, f"the request is larger than {limit // 1024} KiB"
            )
            return
        receive = _capped(receive, limit)

        if not api and method in SAFE_METHODS and len(path) > 1 and path.endswith("/"):
            # /connections/ -> /connections (pages only; the API answers 404, as documented).
            target = safe_next(path.rstrip("/") or "/")
            await RedirectResponse(target, status_code=308)(scope, receive, send)
            return

        state = scope.setdefault("state", {})
        state["user"] = None
        state["auth"] = None
        state["session"] = None
        if not _is_public(path, method):
            await self._sign_in(headers, state)
            if state["user"] is None:
                if api:
                    response: Response = JSONResponse(
                        {"detail": "sign in first: send 'Authorization: Bearer TOKEN' or sign in"},
                        status_code=401,
                        headers={"WWW-Authenticate": "Bearer"},
                    )
                else:
                    target = path + (
                        ("?" + scope["query_string"].decode("latin-1"))
                        if scope.get("query_string")
                        else ""
                    )
                    response = RedirectResponse(
                        f"/login?next={quote(target if method in SAFE_METHODS else '/', safe='/')}",
                        status_code=303,
                    )
                await response(scope, receive, send)
                return

        if (
            method not in SAFE_METHODS
            and state["auth"] != "token"
            and not _same_origin(scope, headers)
        ):
            await self._refuse(
                scope,
                receive,
                send,
                403,
                "refused: the request did not come from a page of this console (Origin check)",
            )
            return
        await self.app(scope, receive, send)

    async def _sign_in(self, headers: Headers, state: dict[str, Any]) -> None:
        authorization = headers.get("authorization", "")
        if authorization[:7].lower() == "bearer ":
            token = authorization[7:].strip()
            user = await anyio.to_thread.run_sync(users.token_user, token)
            if user is not None:
                state["user"], state["auth"] = user, "token"
            return  # a wrong token does not fall back to cookies
        cookie = _cookie(headers, SESSION_COOKIE)
        if not cookie:
            return
        try:
            session_id = self.settings.signer.unsign(cookie, max_age=users.SESSION_SECONDS).decode()
        except (BadSignature, UnicodeDecodeError):
            return
        session = await anyio.to_thread.run_sync(users.valid_session, session_id)
        if session is not None:
            state["user"], state["auth"], state["session"] = session.user, "session", session
            state["session_id"] = session_id

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, status: int, text: str
    ) -> None:
        response: Response
        if is_api_path(scope["path"]):
            response = JSONResponse({"detail": text}, status_code=status)
        else:
            response = HTMLResponse(
                _REFUSAL_PAGE.format(text=html.escape(text)), status_code=status
            )
        await response(scope, receive, send)

    def _with_security_headers(self, scope: Scope, send: Send) -> Send:
        static = scope["path"].startswith("/static/")

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw: list[tuple[bytes, bytes]] = list(message.get("headers", []))
                present = {name.lower() for name, _ in raw}
                raw += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                if not static and b"cache-control" not in present:
                    raw.append((b"cache-control", b"no-store"))
                message = {**message, "headers": raw}
            await send(message)

        return sending


def _cookie(headers: Headers, name: str) -> str:
    for chunk in headers.get("cookie", "").split(";"):
        key, _, value = chunk.strip().partition("=")
        if key == name:
            return value.strip('"')
    return ""


def _capped(receive: Receive, limit: int) -> Receive:
    """``receive`` failing with 413 once the body passes ``limit`` bytes (chunked bodies too)."""
    seen = 0

    async def receiving() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _BodyTooLargeError(limit)
        return message

    return receiving


def csrf_token_matches(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), str(given).encode())


class CsrfRoute(APIRoute):
    """An APIRoute refusing a cookie-signed state change that lacks the session's CSRF token."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            if request.method not in SAFE_METHODS and request.state.auth == "session":
                session: users.Session = request.state.session
                given = request.headers.get(CSRF_HEADER)
                content_type = request.headers.get("content-type", "")
                if given is None and content_type.startswith(
                    ("application/x-www-form-urlencoded", "multipart/form-data")
                ):
                    form = await request.form(max_part_size=MAX_FORM_BYTES)
                    value = form.get(CSRF_FIELD)
                    given = value if isinstance(value, str) else None
                if not csrf_token_matches(session.csrf_token, given):
                    raise HTTPException(
                        403,
                        "refused: the form's security token is missing or stale; reload the page",
                    )
            return await handler(request)

        return checked

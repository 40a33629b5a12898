"""Server-rendered pages: sign in and out, the main menu, the API page; the sections'
routers (connections, exports, inbox) are included here."""

from __future__ import annotations

import math
import secrets

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from itsdangerous import BadSignature

from mailconduit.accounts import signin, users
from mailconduit.web import connection_pages, export_pages, inbox_pages, interface_pages
from mailconduit.web.console import Console, StateDep
from mailconduit.web.security import LOGIN_COOKIE, SESSION_COOKIE, safe_next
from mailconduit.web.views import NOTICES, FormDep, new_router, redirect

__all__ = ["router"]

router = new_router()
#: How long a sign-in form may be filled in; its token then serves one attempt.
LOGIN_FORM_SECONDS = 3600


def _login_page(
    request: Request,
    state: Console,
    *,
    next_path: str,
    error: str = "",
    status_code: int = 200,
    username: str = "",
) -> HTMLResponse:
    token = secrets.token_urlsafe(32)
    response = state.render(
        request,
        "login.html",
        status_code=status_code,
        login_token=token,
        next_path=next_path,
        error=error,
        username=username,
        notice=NOTICES.of(request),
    )
    response.set_cookie(
        LOGIN_COOKIE,
        state.settings.login_signer.sign(token).decode(),
        max_age=LOGIN_FORM_SECONDS,
        httponly=True,
        samesite="strict",
        secure=state.settings.secure_cookies,
        path="/login",
    )
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, state: StateDep) -> Response:
    """The sign-in page (a signed-in visitor goes straight on)."""
    next_path = safe_next(request.query_params.get("next"))
    if _signed_in(request, state):
        return RedirectResponse(next_path, status_code=303)
    return _login_page(request, state, next_path=next_path)


def _signed_in(request: Request, state: Console) -> bool:
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if not cookie:
        return False
    try:
        session_id = state.settings.signer.unsign(cookie, max_age=users.SESSION_SECONDS).decode()
    except (BadSignature, UnicodeDecodeError):
        return False
    return users.valid_session(session_id) is not None


def _wait_text(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, math.ceil(seconds))} seconds"
    return f"{math.ceil(seconds / 60)} minutes"


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    state: StateDep,
    form: FormDep,
) -> Response:
    """Check the form's token (good for one attempt), the limits on guessing, then the
    password; on success start a session."""
    next_path = safe_next(str(form.get("next") or "/"))
    username = str(form.get("username") or "").strip()[: users.MAX_NAME_LENGTH + 1]
    password = str(form.get("password") or "")
    given = str(form.get("csrf_token") or "")
    now = state.clock()
    try:
        expected, signed_at = state.settings.login_signer.unsign(
            request.cookies.get(LOGIN_COOKIE, ""), max_age=LOGIN_FORM_SECONDS, return_timestamp=True
        )
    except (BadSignature, UnicodeDecodeError):
        expected, signed_at = b"", None
    shown = username[: users.MAX_NAME_LENGTH]
    if not expected or not secrets.compare_digest(expected, given.encode("utf-8", "replace")):
        error = "The sign-in form expired or did not come from this page; please try again."
        return _login_page(
            request, state, next_path=next_path, username=shown, status_code=403, error=error
        )
    expires_at = (signed_at.timestamp() if signed_at else now) + LOGIN_FORM_SECONDS
    if not signin.use_login_form(given, expires_at=expires_at, now=now):
        error = "This sign-in form was already sent once; please type the password again."
        return _login_page(
            request, state, next_path=next_path, username=shown, status_code=403, error=error
        )
    client = request.client.host if request.client else "?"
    verdict = signin.begin_attempt(client, username, now=now)
    if not verdict.allowed:
        refused = _login_page(
            request,
            state,
            next_path=next_path,
            username=shown,
            status_code=429,
            error="Too many failed attempts; wait "
            f"{_wait_text(verdict.wait_seconds)} before trying again.",
        )
        refused.headers["Retry-After"] = str(max(1, math.ceil(verdict.wait_seconds)))
        return refused
    if (
        not username
        or not password
        or len(password) > users.MAX_PASSWORD_LENGTH
        or not users.authenticate(username, password)
    ):
        return _login_page(
            request,
            state,
            next_path=next_path,
            username=shown,
            status_code=401,
            error="Wrong user name or password.",
        )
    signin.attempt_succeeded(client, username)
    session_id, _ = users.create_session(username)
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        state.settings.signer.sign(session_id).decode(),
        max_age=users.SESSION_SECONDS,
        httponly=True,
        samesite="lax",
        secure=state.settings.secure_cookies,
        path="/",
    )
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout")
def logout(request: Request, state: StateDep) -> Response:
    """End the session on the server (a copied cookie stops working too) and forget the cookie."""
    session_id = getattr(request.state, "session_id", None)
    if session_id:
        users.end_session(session_id)
    response = redirect("/login", notice="logged_out")
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    return response


@router.get("/", response_class=HTMLResponse)
def main_menu(request: Request, state: StateDep) -> Response:
    """The Main Menu: connections, exports, the local inbox, the API."""
    from mailconduit.web.dashboards import menu_context

    return state.render(request, "menu.html", notice="", **menu_context())


@router.get("/api-docs", response_class=HTMLResponse)
def api_docs(request: Request, state: StateDep) -> Response:
    """Every REST endpoint with its summary, from the app's own OpenAPI schema."""
    schema = request.app.openapi()
    endpoints = [
        (method.upper(), path, op.get("summary", ""), op.get("description", ""))
        for path, ops in schema.get("paths", {}).items()
        for method, op in ops.items()
    ]
    return state.render(request, "api.html", endpoints=endpoints, notice="")


router.include_router(connection_pages.router)
router.include_router(export_pages.router)
router.include_router(inbox_pages.router)
router.include_router(interface_pages.router)

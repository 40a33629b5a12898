"""Test support for the web console tests: a real uvicorn server in a thread, signed-in clients.

Not a test module (pytest collects only test_*.py); the web test files import it.
"""

from __future__ import annotations

import re
import smtplib
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from html.parser import HTMLParser

import httpx
import uvicorn

from mailconduit.accounts import users
from mailconduit.web.app import create_app

ADMIN = "admin"
ADMIN_PASSWORD = "correct horse battery"
UPLOAD_LIMIT = 64 * 1024


@dataclass
class Console:
    """A running console: its base URL (http://127.0.0.1:PORT)."""

    url: str

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, follow_redirects=False, **kwargs)  # type: ignore[arg-type]

    def signed_in(self, *, user: str = ADMIN, password: str = ADMIN_PASSWORD) -> SignedIn:
        """A client with a session, creating the user first when it does not exist."""
        if user not in {a.name for a in users.list_users()}:
            users.create_user(user, password)
        client = self.client()
        login(client, user, password)
        page = client.get("/")
        assert page.status_code == 200, page.text
        return SignedIn(client, csrf_of(page.text), self.url)


@dataclass
class SignedIn:
    """A browser-like client: session cookie plus the CSRF token its pages carry."""

    http: httpx.Client
    csrf: str
    origin: str

    def post_form(self, path: str, data: dict[str, str], **kwargs: object) -> httpx.Response:
        """A form submission as a browser sends it: token in the form, Origin of this site."""
        return self.http.post(
            path,
            data={"csrf_token": self.csrf, **data},
            headers={"Origin": self.origin},
            **kwargs,  # type: ignore[arg-type]
        )

    def api(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        """A JSON API call from a page's script: token header, Origin of this site."""
        headers = {"X-CSRF-Token": self.csrf, "Origin": self.origin}
        return self.http.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf-token" content="([^"]*)"', html)
    assert match, "page has no CSRF token"
    return match.group(1)


def login(client: httpx.Client, user: str, password: str) -> httpx.Response:
    form = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token, form.text
    origin = str(client.base_url).rstrip("/")
    return client.post(
        "/login",
        data={"username": user, "password": password, "csrf_token": token.group(1), "next": "/"},
        headers={"Origin": origin},
    )


@contextmanager
def running_console(**options: object) -> Iterator[Console]:
    """Serve :func:`create_app` with uvicorn on a free loopback port for the ``with`` block."""
    app = create_app(secret_key=b"t" * 64, max_upload_bytes=UPLOAD_LIMIT, **options)  # type: ignore[arg-type]
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            access_log=False,
            proxy_headers=False,  # as 'mailconduit serve' runs it: the app decides
        )
    )
    thread = threading.Thread(target=server.run, name="console", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the console did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Console(f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(15)


def send_to_sink(message: EmailMessage) -> None:
    """Deliver one message to this home's running sink the way any client would (STARTTLS, AUTH)."""
    from mailconduit.sink import local_connection

    conn = local_connection()
    context = ssl.create_default_context(cafile=conn.ca_file)
    with smtplib.SMTP(conn.server_url, conn.port, timeout=10) as smtp:
        smtp.starttls(context=context)
        assert conn.password is not None
        smtp.login(conn.username, conn.password.reveal())
        smtp.send_message(message)


class _FormReader(HTMLParser):
    """What a browser would submit for one form: enabled inputs, checked boxes, selections."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id = form_id
        self.inside = False
        self.values: dict[str, str] = {}
        self._select: str | None = None
        self._first_option: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        if tag == "form":
            self.inside = a.get("id") == self.form_id
        if not self.inside or "disabled" in a:
            return
        name = a.get("name")
        if tag == "input" and name and a.get("type") not in ("submit", "button", "file"):
            if a.get("type") in ("checkbox", "radio"):
                if "checked" in a:
                    self.values[name] = a.get("value", "on")
            else:
                self.values[name] = a.get("value", "")
        elif tag == "select" and name:
            self._select, self._first_option = name, None
        elif tag == "option" and self._select is not None:
            if self._first_option is None:
                self._first_option = a.get("value", "")
                self.values.setdefault(self._select, self._first_option)
            if "selected" in a:
                self.values[self._select] = a.get("value", "")
        elif tag == "textarea" and name:
            self._textarea = name
            self.values[name] = ""

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self.values[self._textarea] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None
        elif tag == "form":
            self.inside = False


def form_values(html: str, form_id: str) -> dict[str, str]:
    """The fields the form ``form_id`` of a page submits as it stands (hidden ones included)."""
    reader = _FormReader(form_id)
    reader.feed(html)
    return reader.values

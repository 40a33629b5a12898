"""The console over real HTTP (uvicorn on 127.0.0.1): sign-in, CSRF, write-only passwords,
per-field 422s with the CLI's wording, SSRF policy, security headers, upload limits, tokens."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailconduit import api
from mailconduit.accounts import users
from mailconduit.accounts.signin import ADDRESS_FAILURES_ALLOWED
from mailconduit.config import TEXT_LIMITS, validate_connection
from mailconduit.errors import ConfigError
from mailconduit.netpolicy import NetworkPolicy
from mailconduit.sink import ensure_running
from mailconduit.testing import BannerService
from mailconduit.web.rest import ConnectionOut
from webconsole import (
    ADMIN,
    ADMIN_PASSWORD,
    UPLOAD_LIMIT,
    Console,
    SignedIn,
    form_values,
    login,
    running_console,
)

SECRET = "Pa55-w0rd-never-shown"
VALID = {
    "name": "relay",
    "server_url": "127.0.0.1",
    "port": 2525,
    "username": "robot@example.com",
    "password": SECRET,
    "security": "none",
}


@pytest.fixture
def token() -> str:
    users.create_user("script", "script-password")
    return users.issue_token("script", label="tests")


def new_form(browser: SignedIn, **changes: str) -> dict[str, str]:
    """The SMTP form as the page offers it, filled with VALID and ``changes`` (no CSRF token)."""
    values = form_values(browser.http.get("/connections/new/smtp").text, "connection-form")
    values.pop("csrf_token")
    values.update({k: str(v) for k, v in VALID.items()})
    values.pop("use_ssl")  # security none: the page's script unticks "Use SSL" too
    values.update(changes)
    return values


def edit_form(browser: SignedIn, name: str, **changes: str) -> dict[str, str]:
    values = form_values(browser.http.get(f"/connections/{name}/edit").text, "connection-form")
    values.pop("csrf_token")
    values.update(changes)
    return values


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --------------------------------------------------------------------------- sign-in


def test_every_page_and_api_call_needs_sign_in(console: Console) -> None:
    with console.client() as http:
        for path in (
            "/",
            "/connections",
            "/connections/new/smtp",
            "/exports",
            "/inbox",
            "/api-docs",
        ):
            page = http.get(path)
            assert page.status_code == 303, path
            assert page.headers["location"].startswith("/login?next=")
        for path in ("/api/connections", "/api/runs", "/api/inbox", "/api/openapi.json", "/api/me"):
            call = http.get(path)
            assert call.status_code == 401, path
            assert call.headers["www-authenticate"] == "Bearer"
        assert http.post("/api/connections", json=VALID).status_code == 401
        assert http.get("/login").status_code == 200
        assert http.get("/static/style.css").status_code == 200
    assert api.list_connections()[1:] == []  # nothing was created


def test_sign_in_sets_a_hardened_session_cookie(console: Console) -> None:
    users.create_user(ADMIN, ADMIN_PASSWORD)
    with console.client() as http:
        response = login(http, ADMIN, ADMIN_PASSWORD)
        assert response.status_code == 303
        cookie = next(
            v for k, v in response.headers.multi_items() if k == "set-cookie" and "session" in v
        )
        assert "HttpOnly" in cookie
        assert "SameSite=lax" in cookie or "SameSite=Lax" in cookie
        assert ADMIN_PASSWORD not in cookie
        assert http.get("/connections").status_code == 200


def test_wrong_password_and_unknown_user_are_refused_alike(console: Console) -> None:
    users.create_user(ADMIN, ADMIN_PASSWORD)
    with console.client() as http:
        wrong = login(http, ADMIN, "not the password")
        unknown = login(http, "nobody", ADMIN_PASSWORD)
        assert wrong.status_code == unknown.status_code == 401
        assert "Wrong user name or password." in wrong.text
        assert "Wrong user name or password." in unknown.text
        assert http.get("/connections").status_code == 303


def test_login_form_needs_its_own_token_and_origin(console: Console) -> None:
    users.create_user(ADMIN, ADMIN_PASSWORD)
    with console.client() as http:
        forged = http.post(
            "/login",
            data={"username": ADMIN, "password": ADMIN_PASSWORD, "csrf_token": "guess"},
            headers={"Origin": console.url},
        )
        assert forged.status_code == 403
        form = http.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token
        foreign = http.post(
            "/login",
            data={"username": ADMIN, "password": ADMIN_PASSWORD, "csrf_token": token.group(1)},
            headers={"Origin": "http://evil.example"},
        )
        assert foreign.status_code == 403
        assert http.get("/connections").status_code == 303


def test_repeated_failed_sign_ins_are_throttled() -> None:
    users.create_user(ADMIN, ADMIN_PASSWORD)
    with running_console() as fresh, fresh.client() as http:
        attempts = range(ADDRESS_FAILURES_ALLOWED)
        codes = [login(http, f"user-{n}", f"guess {n}").status_code for n in attempts]
        assert set(codes) == {401}
        blocked = login(http, ADMIN, ADMIN_PASSWORD)  # even the right password waits now
        assert blocked.status_code == 429
        assert "Too many failed attempts" in blocked.text


def test_login_redirect_stays_on_this_site(console: Console) -> None:
    users.create_user(ADMIN, ADMIN_PASSWORD)
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        with console.client() as http:
            form = http.get("/login", params={"next": target})
            token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
            assert token
            response = http.post(
                "/login",
                data={
                    "username": ADMIN,
                    "password": ADMIN_PASSWORD,
                    "csrf_token": token.group(1),
                    "next": target,
                },
                headers={"Origin": console.url},
            )
            assert response.headers["location"] == "/"


def test_logout_ends_the_session_on_the_server(console: Console, browser: SignedIn) -> None:
    stolen = dict(browser.http.cookies)
    assert browser.post_form("/logout", {}).status_code == 303
    with console.client(cookies=stolen) as thief:
        assert thief.get("/connections").status_code == 303
    assert browser.http.get("/logout").status_code in (303, 405)  # GET never logs anyone out


def test_api_tokens(console: Console, token: str) -> None:
    with console.client() as http:
        me = http.get("/api/me", headers=bearer(token))
        assert me.json() == {"user": "script", "auth": "token"}
        assert http.get("/api/me", headers=bearer(token + "x")).status_code == 401
        assert http.get("/api/me", headers=bearer("mct_" + "A" * 43)).status_code == 401
        # Scripts need no CSRF token and send no Origin.
        created = http.post("/api/connections", json=VALID, headers=bearer(token))
        assert created.status_code == 201, created.text
        users.revoke_tokens("script")
        assert http.get("/api/me", headers=bearer(token)).status_code == 401


def test_only_a_digest_of_a_token_is_stored(home: Path, token: str) -> None:
    database = (home / "mailconduit.db").read_bytes()
    assert token.encode() not in database
    assert token[4:].encode() not in database
    assert users.token_user(token) == "script"


# --------------------------------------------------------------------------- CSRF and origin


def test_form_post_without_csrf_token_is_refused(browser: SignedIn) -> None:
    data = new_form(browser)
    response = browser.http.post(
        "/connections/new/smtp", data=data, headers={"Origin": browser.origin}
    )
    assert response.status_code == 403
    stale = browser.http.post(
        "/connections/new/smtp",
        data={**data, "csrf_token": "stale"},
        headers={"Origin": browser.origin},
    )
    assert stale.status_code == 403
    assert [c.name for c, _ in api.list_connections()] == ["local"]


def test_post_from_a_foreign_origin_is_refused(browser: SignedIn) -> None:
    data = {**new_form(browser), "csrf_token": browser.csrf}
    foreign = browser.http.post(
        "/connections/new/smtp", data=data, headers={"Origin": "http://evil.example"}
    )
    assert foreign.status_code == 403
    neither = browser.http.post("/connections/new/smtp", data=data)  # no Origin, no Referer
    assert neither.status_code == 403
    by_referer = browser.http.post(
        "/connections/new/smtp", data=data, headers={"Referer": "http://evil.example/page"}
    )
    assert by_referer.status_code == 403
    assert [c.name for c, _ in api.list_connections()] == ["local"]
    same_site = browser.http.post(
        "/connections/new/smtp",
        data=data,
        headers={"Referer": browser.origin + "/connections/new/smtp"},
    )
    assert same_site.status_code == 303


def test_session_api_calls_need_the_csrf_header(browser: SignedIn) -> None:
    without = browser.http.post("/api/connections", json=VALID, headers={"Origin": browser.origin})
    assert without.status_code == 403
    assert browser.api("POST", "/api/connections", json=VALID).status_code == 201
    assert browser.api("DELETE", "/api/connections/relay").status_code == 204


def test_get_requests_change_nothing(browser: SignedIn) -> None:
    api.create_connection(VALID)
    assert browser.http.get("/connections/relay/delete").status_code == 200  # only asks
    assert browser.http.get("/connections/relay/active").status_code == 405
    assert api.get_connection("relay").is_active
    confirm = browser.post_form("/connections/relay/delete", {})
    assert confirm.status_code == 303
    assert [c.name for c, _ in api.list_connections()] == ["local"]


def test_unknown_host_header_is_refused(console: Console) -> None:
    with console.client() as http:
        response = http.get("/login", headers={"Host": "rebound.evil.example"})
        assert response.status_code == 400


def test_security_headers(browser: SignedIn) -> None:
    page = browser.http.get("/connections")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp.split("style-src")[0]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "same-origin"
    assert page.headers["cache-control"] == "no-store"
    assert "<script>" not in page.text  # no inline script: everything is in /static


# --------------------------------------------------------------------------- connections


def _cli_messages(data: dict[str, object]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        validate_connection(data)
    return {e.field: e.message for e in info.value.errors}


def test_api_422_names_every_field_with_the_cli_wording(browser: SignedIn) -> None:
    bad = {
        "name": "bad name",
        "server_url": "smtp example com",
        "port": 70000,
        "timeout_ms": 5,
        "query": "x",
    }
    response = browser.api("POST", "/api/connections", json=bad)
    assert response.status_code == 422
    got = {d["loc"][-1]: d["msg"] for d in response.json()["detail"]}
    expected = _cli_messages(bad)
    assert {"name", "server_url", "port", "timeout_ms", "query"} <= set(got)
    for field, message in expected.items():
        assert got[field] == message


def test_unknown_field_and_wrong_types_are_field_errors(browser: SignedIn) -> None:
    response = browser.api(
        "POST", "/api/connections", json={**VALID, "prot": 25, "port": "many", "is_active": [1]}
    )
    assert response.status_code == 422
    fields = {d["loc"][-1]: d["msg"] for d in response.json()["detail"]}
    assert fields["prot"] == "is not a connection field"
    assert fields["port"] == "must be a whole number"
    assert "is_active" in fields


def test_password_is_write_only_in_the_api(browser: SignedIn) -> None:
    created = browser.api("POST", "/api/connections", json=VALID)
    assert created.status_code == 201
    bodies = [
        created.text,
        browser.http.get("/api/connections").text,
        browser.http.get("/api/connections/relay").text,
        browser.api("PATCH", "/api/connections/relay", json={"timeout_ms": 9000}).text,
        browser.http.get("/api/openapi.json").text,
    ]
    for body in bodies:
        assert SECRET not in body
    shown = browser.http.get("/api/connections/relay").json()
    assert shown["has_password"] is True
    assert "password" not in shown
    assert shown["timeout_ms"] == 9000


def test_password_never_in_any_page(browser: SignedIn) -> None:
    api.create_connection(VALID)
    pages = [
        "/connections",
        "/connections/relay",
        "/connections/relay/edit",
        "/connections/relay/delete",
    ]
    for path in pages:
        page = browser.http.get(path)
        assert page.status_code == 200, path
        assert SECRET not in page.text, path
    edit = browser.http.get("/connections/relay/edit").text
    assert re.search(r'<input type="password"[^>]*value=""', edit)
    assert "leave empty to keep the stored password" in edit
    # A failed form submission does not echo the typed password either.
    failed = browser.post_form("/connections/new/smtp", new_form(browser))  # duplicate name
    assert failed.status_code == 422
    assert SECRET not in failed.text


def test_form_shows_each_error_next_to_its_field(browser: SignedIn) -> None:
    form = new_form(browser, port="99999", server_url="smtp example com")
    page = browser.post_form("/connections/new/smtp", form)
    assert page.status_code == 422
    port_row = re.search(
        r'<div class="field has-error" id="row-port">(.*?)</div>\s*<div', page.text, re.S
    )
    assert port_row, page.text
    assert "99999 is outside 1-65535" in port_row.group(1)
    url_row = re.search(r'id="row-server_url">(.*?)</div>', page.text, re.S)
    assert url_row and "contains spaces" in url_row.group(1)
    assert 'aria-invalid="true"' in page.text
    assert [c.name for c, _ in api.list_connections()] == ["local"]


def test_form_create_then_edit_keeps_password_unless_server_changes(browser: SignedIn) -> None:
    created = browser.post_form("/connections/new/smtp", {**new_form(browser), "action": "create"})
    assert created.status_code == 303
    assert created.headers["location"] == "/connections/relay?notice=created"
    saved = browser.post_form(
        "/connections/relay/edit", edit_form(browser, "relay", timeout_ms="4000")
    )
    assert saved.status_code == 303
    kept = api.get_connection("relay")
    assert (
        kept.timeout_ms == 4000 and kept.password is not None and kept.password.reveal() == SECRET
    )
    moved = browser.post_form(
        "/connections/relay/edit", edit_form(browser, "relay", server_url="127.0.0.2")
    )
    assert moved.status_code == 422
    row = re.search(r'id="row-password">(.*?)</div>', moved.text, re.S)
    assert row and "must be entered again because the server changed" in row.group(1)
    assert api.get_connection("relay").server_url == "127.0.0.1"


def test_unused_platform_fields_are_disabled_with_an_explanation(browser: SignedIn) -> None:
    page = browser.http.get("/connections/new/smtp").text
    for name in ("is_source", "query", "datetime_format"):
        tag = re.search(rf'<input[^>]*id="f-{name}"[^>]*>', page)
        assert tag and "disabled" in tag.group(0), name
        assert re.search(rf'id="help-{name}">Not used by the SMTP connector', page), name
    for name in (
        "name",
        "agent",
        "implementation_type",
        "username",
        "password",
        "server_url",
        "port",
    ):
        assert re.search(rf'<label for="f-{name}">[^<]*<span class="req"', page), name
    for port in ("25", "465", "587", "2525"):
        assert f'data-port="{port}"' in page


def test_activate_and_deactivate(browser: SignedIn) -> None:
    api.create_connection(VALID)
    assert browser.post_form("/connections/relay/active", {"active": "0"}).status_code == 303
    assert not api.get_connection("relay").is_active
    listing = browser.http.get("/connections").text
    assert re.search(r'data-connection="relay".*?Active">no<', listing, re.S)
    assert browser.post_form("/connections/relay/active", {"active": "1"}).status_code == 303
    assert api.get_connection("relay").is_active


def test_builtin_connection_cannot_be_changed(browser: SignedIn) -> None:
    assert browser.http.get("/connections/local").status_code == 200
    assert browser.http.get("/connections/local/edit").status_code == 422
    assert browser.api("DELETE", "/api/connections/local").status_code == 422
    assert browser.http.get("/api/connections/nope").status_code == 404
    assert browser.http.get("/connections/nope").status_code == 404


def test_odd_paths_are_client_errors(browser: SignedIn) -> None:
    odd = ("/connections/%00", "/connections/a%0Ab/edit", "/runs/%00", "/inbox/1e9", "/inbox/-3")
    for path in odd:
        response = browser.http.get(path)
        assert 400 <= response.status_code < 500, path


def test_trailing_slash(browser: SignedIn) -> None:
    moved = browser.http.get("/connections/")
    assert moved.status_code == 308 and moved.headers["location"] == "/connections"
    sneaky = browser.http.get("/%2Fevil.example/")
    assert sneaky.status_code == 308 and sneaky.headers["location"] == "/"
    assert browser.http.get("/api/connections/").status_code == 404


def test_connection_out_schema_matches_the_model() -> None:
    conn = validate_connection(VALID)
    assert set(ConnectionOut.model_fields) == set(conn.public_dict()) | {"last_test", "oauth"}


def test_openapi_schema_documents_the_api(console: Console, token: str) -> None:
    with console.client() as http:
        schema = http.get("/api/openapi.json", headers=bearer(token)).json()
    paths = schema["paths"]
    for path in (
        "/api/connections",
        "/api/connections/{name}",
        "/api/connections/{name}/test",
        "/api/exports",
        "/api/exports/{run_id}",
        "/api/exports/{run_id}/report",
        "/api/runs",
        "/api/runs/{run_id}/resume",
        "/api/inbox",
        "/api/inbox/{message_id}",
        "/api/uploads",
    ):
        assert path in paths, path
    assert not any(p.startswith("/connections") for p in paths)  # pages stay out of the API schema
    body = schema["components"]["schemas"]["ConnectionIn"]
    assert body["properties"]["password"]["writeOnly"] is True
    assert body["properties"]["port"]["maximum"] == 65535


# --------------------------------------------------------------------------- uploads


def test_upload_is_stored_under_home(console: Console, token: str, home: Path) -> None:
    with console.client() as http:
        response = http.post(
            "/api/uploads",
            files={"file": ("../../people list.csv", b"email,name\na@example.com,A\n", "text/csv")},
            headers=bearer(token),
        )
    assert response.status_code == 201, response.text
    ref = response.json()["upload"]
    stored = home / "uploads" / ref
    assert stored.read_bytes() == b"email,name\na@example.com,A\n"
    assert stored.parent.parent == home / "uploads"
    assert response.json()["name"] == "people list.csv"


def test_upload_size_limit(console: Console, token: str, home: Path) -> None:
    big = b"email\n" + b"x@example.com\n" * (UPLOAD_LIMIT // 14 + 10)
    with console.client() as http:
        declared = http.post(
            "/api/uploads", files={"file": ("big.csv", big)}, headers=bearer(token)
        )
        assert declared.status_code == 413

        def chunks() -> Iterator[bytes]:
            boundary = b"--b0undary\r\n"
            yield (
                boundary
                + b'Content-Disposition: form-data; name="file"; filename="big.csv"\r\n\r\n'
            )
            for start in range(0, len(big), 8192):
                yield big[start : start + 8192]
            yield b"\r\n--b0undary--\r\n"

        streamed = http.post(
            "/api/uploads",
            content=chunks(),
            headers={**bearer(token), "Content-Type": "multipart/form-data; boundary=b0undary"},
        )
        assert streamed.status_code == 413
    assert not any((home / "uploads").rglob("big.csv"))


def test_upload_refuses_unknown_kinds(console: Console, token: str) -> None:
    with console.client() as http:
        response = http.post(
            "/api/uploads", files={"file": ("run.sh", b"#!/bin/sh\n")}, headers=bearer(token)
        )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "file"]


def test_non_upload_bodies_are_small(browser: SignedIn) -> None:
    huge = {**VALID, "from_name": "x" * (2 * 1024 * 1024)}
    response = browser.api(
        "POST",
        "/api/connections",
        content=json.dumps(huge).encode(),
    )
    assert response.status_code in (413, 422)
    assert [c.name for c, _ in api.list_connections()] == ["local"]


def test_weird_api_input_never_breaks_the_server(console: Console, token: str) -> None:
    payloads: list[object] = [
        None,
        [],
        "x",
        1,
        {"name": None},
        {"port": {"a": 1}},
        {"name": "\x00"},
        {"password": 5},
        {"security": ["tls"]},
        {"server_url": "[::1"},
    ]
    with console.client(headers=bearer(token)) as http:
        for payload in payloads:
            for method, path in (
                ("POST", "/api/connections"),
                ("PATCH", "/api/connections/x"),
                ("POST", "/api/exports"),
                ("POST", "/api/exports/preview"),
                ("POST", "/api/runs/r1/resume"),
            ):
                response = http.request(method, path, json=payload)
                assert response.status_code < 500, (method, path, payload, response.text)
        for path in (
            "/api/connections/%00",
            "/api/inbox/99999999999999999999",
            "/api/exports/..%2f",
            "/api/inbox/-1",
            "/api/runs?limit=0",
            "/api/inbox?offset=-5",
        ):
            assert http.get(path).status_code < 500, path


# --------------------------------------------------------------------------- Test Connection, SSRF


@pytest.fixture
def sink_port() -> Iterator[int]:
    with ensure_running(port=0) as info:
        yield info.port


def sink_copy(port: int, *, password: str, name: str = "sinkcopy") -> dict[str, object]:
    """A stored connection to this home's sink, with the given password."""
    local = api.get_connection("local")
    return {
        "name": name,
        "server_url": "127.0.0.1",
        "port": port,
        "security": "starttls",
        "username": local.username,
        "password": password,
        "ca_file": local.ca_file,
        "timeout_ms": 5000,
    }


def test_test_connection_success_shows_capabilities(browser: SignedIn, sink_port: int) -> None:
    local = api.get_connection("local")
    assert local.password is not None
    api.create_connection(sink_copy(sink_port, password=local.password.reveal()))
    page = browser.post_form("/connections/sinkcopy/test", {})
    assert page.status_code == 200
    assert "Test Connection succeeded" in page.text
    caps = re.search(r'<ul class="caps">(.*?)</ul>', page.text, re.S)
    assert caps and "SIZE" in caps.group(1) and "AUTH" in caps.group(1)
    assert local.password.reveal() not in page.text
    listing = browser.http.get("/connections").text
    assert re.search(r'data-connection="sinkcopy".*?class="ok">passed<', listing, re.S)


def test_test_connection_failure_names_stage_and_hint(browser: SignedIn, sink_port: int) -> None:
    api.create_connection(sink_copy(sink_port, password=SECRET))
    page = browser.post_form("/connections/sinkcopy/test", {})
    assert "Test Connection failed" in page.text
    assert re.search(r'id="test-stage">auth<', page.text)
    assert SECRET not in page.text
    result = browser.api("POST", "/api/connections/sinkcopy/test").json()
    assert result["ok"] is False and result["stage"] == "auth"
    assert any(line.startswith("FAILED at stage auth") for line in result["lines"])
    assert SECRET not in json.dumps(result)


def test_test_connection_on_the_form_saves_nothing(browser: SignedIn, sink_port: int) -> None:
    local = api.get_connection("local")
    assert local.password is not None
    form = new_form(
        browser,
        name="draft",
        port=str(sink_port),
        security="starttls",
        use_ssl="on",
        ca_file=local.ca_file,
        username=local.username,
        password=local.password.reveal(),
    )
    page = browser.post_form("/connections/new/smtp", {**form, "action": "test"})
    assert page.status_code == 200
    assert "Test Connection succeeded" in page.text
    assert local.password.reveal() not in page.text
    assert [c.name for c, _ in api.list_connections()] == ["local"]


def test_metadata_address_is_refused_by_the_network_policy(browser: SignedIn) -> None:
    api.create_connection(
        {
            **VALID,
            "name": "metadata",
            "server_url": "169.254.169.254",
            "port": 80,
            "allow_insecure_auth": True,
        }
    )
    result = browser.api("POST", "/api/connections/metadata/test").json()
    assert result["ok"] is False
    assert result["stage"] == "dns"
    assert "not allowed by the network policy" in result["message"]
    assert "tcp" not in result["passed"]
    page = browser.post_form("/connections/metadata/test", {})
    assert "not allowed by the network policy" in page.text


def test_policy_is_checked_on_the_resolved_address(sink_port: int) -> None:
    """A host NAME that resolves into a denied network is refused at connect time."""
    policy = NetworkPolicy(
        deny=(ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    )
    local = api.get_connection("local")
    assert local.password is not None
    api.create_connection(
        {**sink_copy(sink_port, password=local.password.reveal()), "server_url": "localhost"}
    )
    with running_console(network_policy=policy) as guarded:
        browser = guarded.signed_in()
        result = browser.api("POST", "/api/connections/sinkcopy/test").json()
        browser.http.close()
    assert result["ok"] is False and result["stage"] == "dns"
    assert "not allowed by the network policy" in result["message"]


@pytest.mark.parametrize(
    "address", ["::169.254.169.254", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1"]
)
def test_metadata_address_inside_ipv6_is_refused(browser: SignedIn, address: str) -> None:
    api.create_connection(
        {
            **VALID,
            "name": "wrapped",
            "server_url": f"[{address}]",
            "port": 25,
            "allow_insecure_auth": True,
        }
    )
    result = browser.api("POST", "/api/connections/wrapped/test").json()
    assert result["ok"] is False and result["stage"] == "dns"
    assert "not allowed by the network policy" in result["message"]
    assert "tcp" not in result["passed"]


def test_test_connection_never_echoes_a_foreign_service(browser: SignedIn) -> None:
    """A message bus on loopback: the console says it is not SMTP, and nothing of what it sent."""
    with BannerService() as bus:
        api.create_connection({**VALID, "name": "bus", "port": bus.port, "auth_mechanism": "none"})
        result = browser.api("POST", "/api/connections/bus/test")
        page = browser.post_form("/connections/bus/test", {})
    assert result.status_code == 200 and page.status_code == 200
    assert result.json()["stage"] == "banner"
    assert "did not answer as an SMTP server" in result.json()["message"]
    assert "did not answer as an SMTP server" in page.text
    for seen in (result.text, page.text):
        assert "NSERVERIDSECRET" not in seen and "server_id" not in seen and "INFO" not in seen


# --------------------------------------------------------------------------- hostile input

MESSAGE = {"connection": "local", "to": "{{ email }}", "subject": "Hi {{ name }}", "body": "b"}
ROWS = "email,name\nada@example.com,Ada\nbob@example.com,Bob\n"
NO_AUTH = {**VALID, "auth_mechanism": "none", "username": "", "password": ""}


def upload(browser: SignedIn, content: bytes, name: str) -> str:
    response = browser.api("POST", "/api/uploads", files={"file": (name, content)})
    assert response.status_code == 201, response.text
    return str(response.json()["upload"])


def fields_of(response: Any) -> set[str]:
    return {str(d["loc"][-1]) for d in response.json()["detail"]}


def post_export_form(browser: SignedIn, file_name: str, **values: str) -> httpx.Response:
    """The export form as the page offers it, with ``values``, and a data file to upload."""
    form = form_values(browser.http.get("/exports/new").text, "export-form")
    form.update(values)
    return browser.http.post(
        "/exports/new",
        data=form,
        files={"file": (file_name, ROWS.encode(), "text/csv")},
        headers={"Origin": browser.origin},
    )


def assert_no_server_path(text: str, home: Path) -> None:
    for form in {str(home), str(home.resolve())}:
        assert form not in text
    assert "uploads/" not in text


def test_a_900_kib_display_name_is_a_422_naming_it(browser: SignedIn) -> None:
    response = browser.api(
        "POST", "/api/connections", json={**NO_AUTH, "from_name": "x" * 900 * 1024}
    )
    assert response.status_code == 422
    assert fields_of(response) == {"from_name"}
    assert len(response.text) < 2000
    assert api.list_connections()[1:] == []


def test_the_console_form_refuses_it_too(browser: SignedIn) -> None:
    page = browser.post_form("/connections/new/smtp", new_form(browser, from_name="x" * 300_000))
    assert page.status_code == 422
    assert re.search(r'id="err-from_name"[^>]*>[^<]*too long: 300000 characters', page.text)


def test_inputs_carry_their_caps(browser: SignedIn) -> None:
    form = browser.http.get("/connections/new/smtp").text
    for field in ("name", "server_url", "from_name", "username", "password"):
        limit = TEXT_LIMITS["connection"][field]
        assert re.search(rf'name="{field}"[^>]*maxlength="{limit}"', form), field
    export = browser.http.get("/exports/new").text
    assert re.search(r'name="where"[^>]*maxlength="10000"', export)
    assert re.search(r'name="body"[^>]*maxlength="524288"', export)


def test_the_api_schema_publishes_the_caps(browser: SignedIn) -> None:
    schema = browser.http.get("/api/openapi.json").json()["components"]["schemas"]
    connection = schema["ConnectionIn"]["properties"]
    for field, limit in TEXT_LIMITS["connection"].items():
        if connection[field]["type"] == "string":
            assert connection[field]["maxLength"] == limit, field
    export = schema["ExportIn"]["properties"]
    assert export["subject"]["maxLength"] == TEXT_LIMITS["export"]["subject"]
    assert export["from"]["maxLength"] == TEXT_LIMITS["export"]["from_"]


def test_export_settings_over_their_cap(browser: SignedIn, home: Path) -> None:
    ref = upload(browser, ROWS.encode(), "people.csv")
    response = browser.api(
        "POST", "/api/exports/preview", json={**MESSAGE, "upload": ref, "subject": "s" * 10_001}
    )
    assert response.status_code == 422 and fields_of(response) == {"subject"}


def test_test_connection_recipient_over_its_cap(browser: SignedIn) -> None:
    long = "a" * 250 + "@example.com"
    response = browser.api("POST", "/api/connections/local/test", json={"send_to": long})
    assert response.status_code == 422 and fields_of(response) == {"send_to"}
    page = browser.post_form("/connections/local/test", {"send_to": long})
    assert page.status_code == 422 and "send_to: is too long" in page.text


# --------------------------------------------------------------------------- JSON types


#: Settings given a JSON value of a type they never take.
WRONG_TYPES: tuple[tuple[str, Any], ...] = (
    ("where", 5),
    ("order_by", ["name"]),
    ("subject", {"a": 1}),
    ("encoding", 8),
    ("concurrency", ""),
    ("concurrency", "four"),
    ("max_errors", 1.5),
    ("table_formats", 5),
    ("fail_fast", 1),
    ("sheet", True),
    ("upload", 7),
)


def test_a_value_of_the_wrong_type_is_a_422_naming_it(browser: SignedIn) -> None:
    ref = upload(browser, ROWS.encode(), "people.csv")
    for setting, value in WRONG_TYPES:
        for path in ("/api/exports/preview", "/api/exports"):
            response = browser.api("POST", path, json={"upload": ref, **MESSAGE, setting: value})
            assert response.status_code == 422, (setting, value, response.text)
            assert setting in fields_of(response), (setting, value)
    assert api.list_runs() == []


def test_the_export_form_refuses_a_number_that_is_not_one(browser: SignedIn) -> None:
    page = post_export_form(browser, "people.csv", **MESSAGE, concurrency="four")
    assert page.status_code == 422
    assert re.search(r'id="err-concurrency"[^>]*>[^<]*whole number', page.text)


def test_an_unknown_connection_in_the_settings_is_a_422(browser: SignedIn) -> None:
    ref = upload(browser, ROWS.encode(), "people.csv")
    response = browser.api(
        "POST", "/api/exports/preview", json={**MESSAGE, "upload": ref, "connection": "nope"}
    )
    assert response.status_code == 422 and fields_of(response) == {"connection"}


# --------------------------------------------------------------------------- upload names


def test_errors_about_an_upload_name_the_file_not_the_path(browser: SignedIn, home: Path) -> None:
    ref = upload(browser, b'[{"email": "a@example.com"}, 5]', "broken.json")
    response = browser.api("POST", "/api/exports/preview", json={**MESSAGE, "upload": ref})
    assert response.status_code == 422
    assert "broken.json" in response.text
    assert_no_server_path(response.text, home)
    csv_ref = upload(browser, ROWS.encode(), "people.csv")
    for extra in ({"where": "no_such_column = 1"}, {"to": "{{ mail }}"}, {"key": "nope"}):
        response = browser.api(
            "POST", "/api/exports/preview", json={**MESSAGE, "upload": csv_ref, **extra}
        )
        assert response.status_code == 422, (extra, response.text)
        assert "people.csv" in response.text
        assert_no_server_path(response.text, home)


def test_the_export_form_names_the_upload_too(browser: SignedIn, home: Path) -> None:
    page = post_export_form(browser, "my data.csv", **MESSAGE, where="no_such_column = 1")
    assert page.status_code == 422
    assert "my data.csv" in page.text
    assert_no_server_path(page.text, home)


def test_starting_an_export_whose_data_is_broken_names_the_upload(
    browser: SignedIn, home: Path
) -> None:
    """The data is read whole before the first message: a broken record far down the file
    refuses the export with the upload's name and the line."""
    lines = [f'{{"email": "r{n}@example.com", "name": "R{n}"}}' for n in range(1000)]
    lines[900] = "{broken"
    ref = upload(browser, "\n".join(lines).encode(), "late.jsonl")
    started = browser.api("POST", "/api/exports", json={**MESSAGE, "upload": ref})
    assert started.status_code == 422
    assert "late.jsonl:901:" in started.text
    assert_no_server_path(started.text, home)
    assert api.list_runs() == []

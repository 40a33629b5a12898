"""OAuth2 connections in the console and the REST API (real uvicorn, real authorization
server): presets fill the form, secrets are write-only everywhere, and the device sign-in
runs from the connection page and from the API."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mailconduit.accounts import users
from mailconduit.connections import oauth as oauth_store
from mailconduit.testing.oauth import ManualClock, OAuthServer
from oauth_support import ANN, SECRET, authorization_server
from webconsole import Console, SignedIn, form_values

REFRESH = "rt-given-by-hand-never-shown"


@pytest.fixture
def auth() -> Iterator[OAuthServer]:
    with authorization_server(ManualClock(), device_interval=0.1) as server:
        yield server


@pytest.fixture
def token() -> str:
    users.create_user("script", "script-password")
    return users.issue_token("script", label="tests")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def generic(auth: OAuthServer, client_id: str = "app") -> dict[str, Any]:
    return {
        "name": "office",
        "server_url": "127.0.0.1",
        "port": 2525,
        "security": "none",
        "username": ANN,
        "oauth_provider": "generic",
        "oauth_client_id": client_id,
        "oauth_token_endpoint": auth.token_endpoint,
        "oauth_device_endpoint": auth.device_endpoint,
    }


def no_secret(text: str) -> None:
    assert SECRET not in text and REFRESH not in text


def test_rest_takes_oauth_fields_and_never_returns_secrets(
    console: Console, token: str, auth: OAuthServer
) -> None:
    with console.client() as http:
        body = {**generic(auth), "oauth_client_secret": SECRET}
        created = http.post("/api/connections", json=body, headers=bearer(token))
        assert created.status_code == 201, created.text
        out = created.json()
        assert out["auth_mechanism"] == "xoauth2"
        assert out["oauth"]["has_client_secret"] is True
        assert out["oauth"]["has_refresh_token"] is False
        no_secret(created.text)

        patched = http.patch(
            "/api/connections/office", json={"oauth_refresh_token": REFRESH}, headers=bearer(token)
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["oauth"]["has_refresh_token"] is True
        no_secret(patched.text)
        for path in ("/api/connections", "/api/connections/office"):
            shown = http.get(path, headers=bearer(token))
            assert shown.status_code == 200
            no_secret(shown.text)

        wrong = http.post(
            "/api/connections",
            json={**generic(auth), "name": "bad", "oauth_flow": "sideways"},
            headers=bearer(token),
        )
        assert wrong.status_code == 422
        assert any(d["loc"][-1] == "oauth_flow" for d in wrong.json()["detail"])

        schema = http.get("/api/openapi.json", headers=bearer(token)).json()
        props = schema["components"]["schemas"]["ConnectionIn"]["properties"]
        assert props["oauth_client_secret"]["writeOnly"] is True
        assert props["oauth_refresh_token"]["writeOnly"] is True
        presets = http.get("/api/presets", headers=bearer(token)).json()
        assert {p["name"] for p in presets} >= {"microsoft365", "gmail", "amazon-ses"}
    settings = oauth_store.get_oauth("office")
    assert settings is not None and settings.refresh_token is not None
    assert settings.refresh_token.reveal() == REFRESH


def test_the_form_offers_presets_and_keeps_secrets_write_only(browser: SignedIn) -> None:
    page = browser.http.get("/connections/new/smtp").text
    presets = re.search(r'data-presets="([^"]*)"', page)
    assert presets is not None
    filled = json.loads(presets.group(1).replace("&#34;", '"').replace("&quot;", '"'))
    assert filled["microsoft365"]["server_url"] == "smtp.office365.com"
    assert filled["microsoft365"]["oauth_provider"] == "microsoft"

    values = form_values(page, "connection-form")
    values.pop("csrf_token")
    values.update(
        name="m365", server_url="smtp.office365.com", port="587", security="starttls",
        username=ANN, preset="microsoft365", oauth_provider="microsoft",
        oauth_tenant="contoso.onmicrosoft.com", oauth_client_id="1234-abcd",
        oauth_client_secret=SECRET, oauth_refresh_token=REFRESH, auth_mechanism="xoauth2",
    )  # fmt: skip
    values.pop("password", None)
    created = browser.post_form("/connections/new/smtp", values)
    assert created.status_code == 303, created.text
    detail = browser.http.get("/connections/m365").text
    assert 'id="oauth"' in detail and "1234-abcd" in detail and "stored (never shown)" in detail
    no_secret(detail)

    edit_page = browser.http.get("/connections/m365/edit").text
    no_secret(edit_page)
    assert "leave empty to keep the stored secret" in edit_page
    again = form_values(edit_page, "connection-form")
    again.pop("csrf_token")
    saved = browser.post_form("/connections/m365/edit", again)  # unchanged, as a browser sends it
    assert saved.status_code == 303, saved.text
    settings = oauth_store.get_oauth("m365")
    assert settings is not None and settings.client_secret is not None
    assert settings.refresh_token is not None and settings.refresh_token.reveal() == REFRESH
    assert oauth_store.get_preset_name("m365") == "microsoft365"

    # an error page after typing secrets: they are not sent back either
    values.update(name="m365b", oauth_client_id="has space")
    refused = browser.post_form("/connections/new/smtp", values)
    assert refused.status_code == 422
    assert "Client id" in refused.text
    no_secret(refused.text)


def test_sign_in_from_the_connection_page(
    browser: SignedIn, auth: OAuthServer, console: Console
) -> None:
    data = generic(auth, client_id="tv")
    with console.client() as http:
        users.create_user("script2", "pw-for-script")
        key = users.issue_token("script2", label="tests")
        assert http.post("/api/connections", json=data, headers=bearer(key)).status_code == 201
    page = browser.post_form("/connections/office/authorize", {})
    assert page.status_code == 200, page.text
    code = re.search(r'id="sign-in-code">([A-Z-]+)<', page.text)
    assert code is not None, page.text
    assert auth.verification_uri in page.text
    pending = browser.http.get("/connections/office").text
    assert 'id="sign-in-pending"' in pending
    assert '<meta http-equiv="refresh" content="5">' in pending  # it shows the result by itself
    answer = httpx.post(auth.verification_uri, data={"user_code": code.group(1), "user": ANN})
    assert answer.status_code == 200

    detail = ""
    for _ in range(600):  # bounded: the background poll runs every 0.1 s
        detail = browser.http.get("/connections/office").text
        if 'id="sign-in-done"' in detail or 'id="sign-in-failed"' in detail:
            break
        time.sleep(0.05)
    assert 'id="sign-in-done"' in detail, detail
    assert 'http-equiv="refresh"' not in detail  # done: it stops looking
    settings = oauth_store.get_oauth("office")
    assert settings is not None and settings.refresh_token is not None
    refresh_token = settings.refresh_token.reveal()
    assert refresh_token in auth.token_values() and refresh_token not in detail


def test_sign_in_through_the_api(console: Console, token: str, auth: OAuthServer) -> None:
    with console.client() as http:
        created = http.post(
            "/api/connections", json=generic(auth, client_id="tv"), headers=bearer(token)
        )
        assert created.status_code == 201, created.text
        assert http.get(
            "/api/connections/office/authorize", headers=bearer(token)
        ).status_code == 404  # fmt: skip
        started = http.post("/api/connections/office/authorize", headers=bearer(token))
        assert started.status_code == 200, started.text
        view = started.json()
        assert view["state"] == "pending" and view["verification_uri"] == auth.verification_uri
        assert "device_code" not in started.text
        httpx.post(auth.verification_uri, data={"user_code": view["user_code"], "user": ANN})
        for _ in range(600):
            view = http.get("/api/connections/office/authorize", headers=bearer(token)).json()
            if view["state"] != "pending":
                break
            time.sleep(0.05)
        assert view["state"] == "done", view
        shown = http.get("/api/connections/office", headers=bearer(token)).json()
        assert shown["oauth"]["has_refresh_token"] is True

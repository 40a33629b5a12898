"""The test authorization server itself (users' tests rely on it): RFC 6749 token endpoint,
RFC 8628 device flow, RFC 7009 revocation, scripted errors, expiry on its clock."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote_plus

import httpx
import pytest

from mailconduit.testing.oauth import (
    DEVICE_GRANT,
    SCRIPTED_ERRORS,
    ManualClock,
    OAuthServer,
)
from oauth_support import SECRET, authorization_server

AUTH_SERVER = {"access_token_lifetime": 600, "scopes": ["smtp", "offline"]}


def post(url: str, data: dict[str, str], **kwargs: Any) -> httpx.Response:
    return httpx.post(url, data=data, timeout=10, **kwargs)


def refresh(auth: OAuthServer, token: str, **extra: str) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": token, "client_id": "app"}
    return post(auth.token_endpoint, {**form, "client_secret": SECRET, **extra})


def test_refresh_grant_issues_a_bearer_token_the_server_recognises(auth: OAuthServer) -> None:
    token = auth.sign_in("app", "ann@example.com", "smtp offline")
    response = refresh(auth, token, scope="smtp")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 600
    assert body["scope"] == "smtp"
    assert "refresh_token" not in body  # no rotation unless asked for
    check = auth.check_access_token(body["access_token"])
    assert (check.status, check.user, check.scope, check.client_id) == (
        "valid",
        "ann@example.com",
        "smtp",
        "app",
    )
    assert auth.refreshes == 1
    assert auth.requests[-1].client_auth == "client_secret_post"


def test_client_secret_basic_form_encodes_id_and_secret(auth: OAuthServer) -> None:
    token = auth.sign_in("app", "ann@example.com", "smtp")
    pair = f"{quote_plus('app')}:{quote_plus(SECRET)}".encode()
    headers = {"Authorization": "Basic " + base64.b64encode(pair).decode()}
    response = post(
        auth.token_endpoint,
        {"grant_type": "refresh_token", "refresh_token": token},
        headers=headers,
    )
    assert response.status_code == 200
    assert auth.requests[-1].client_auth == "client_secret_basic"


def test_two_client_authentication_methods_at_once_are_refused(auth: OAuthServer) -> None:
    token = auth.sign_in("app", "ann@example.com", "smtp")
    pair = base64.b64encode(f"app:{quote_plus(SECRET)}".encode()).decode()
    response = post(
        auth.token_endpoint,
        {"grant_type": "refresh_token", "refresh_token": token, "client_secret": SECRET},
        headers={"Authorization": "Basic " + pair},
    )
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")


@pytest.mark.parametrize("secret", ["wrong", None])
def test_a_wrong_or_missing_secret_is_invalid_client_with_401(
    auth: OAuthServer, secret: str | None
) -> None:
    form = {"grant_type": "client_credentials", "client_id": "app"}
    if secret is not None:
        form["client_secret"] = secret
    response = post(auth.token_endpoint, form)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert auth.requests[-1].error == "invalid_client"


def test_a_public_client_refreshes_with_its_id_alone(auth: OAuthServer) -> None:
    token = auth.sign_in("tv", "bob@example.com", "smtp")
    response = post(
        auth.token_endpoint,
        {"grant_type": "refresh_token", "refresh_token": token, "client_id": "tv"},
    )
    assert response.status_code == 200
    assert auth.requests[-1].client_auth == "none"


def test_client_credentials_checks_the_scope_against_the_registration(auth: OAuthServer) -> None:
    form = {"grant_type": "client_credentials", "client_id": "app", "client_secret": SECRET}
    ok = post(auth.token_endpoint, {**form, "scope": "smtp"})
    assert ok.status_code == 200
    assert auth.check_access_token(ok.json()["access_token"]).user == ""
    assert "refresh_token" not in ok.json()
    wide = post(auth.token_endpoint, {**form, "scope": "smtp admin"})
    assert (wide.status_code, wide.json()["error"]) == (400, "invalid_scope")
    assert auth.issued["client_credentials"] == 1


def test_refresh_may_narrow_but_not_widen_the_granted_scope(auth: OAuthServer) -> None:
    token = auth.sign_in("app", "ann@example.com", "smtp")
    assert refresh(auth, token, scope="smtp offline").json()["error"] == "invalid_scope"


def test_grant_types_a_client_may_not_use_are_unauthorized_client(auth: OAuthServer) -> None:
    response = post(auth.token_endpoint, {"grant_type": "client_credentials", "client_id": "tv"})
    assert response.json()["error"] == "unauthorized_client"
    other = post(
        auth.token_endpoint,
        {"grant_type": "password", "client_id": "app", "client_secret": SECRET},
    )
    assert other.json()["error"] == "unsupported_grant_type"


def test_rotation_returns_a_new_refresh_token_and_retires_the_old(clock: ManualClock) -> None:
    with authorization_server(clock, rotate_refresh_tokens=True) as auth:
        first = auth.sign_in("app", "ann@example.com", "smtp")
        body = refresh(auth, first).json()
        second = body["refresh_token"]
        assert second != first
        assert refresh(auth, first).json()["error"] == "invalid_grant"
        assert refresh(auth, second).status_code == 200


def test_access_tokens_expire_on_the_servers_clock(auth: OAuthServer, clock: ManualClock) -> None:
    token = auth.sign_in("app", "ann@example.com", "smtp")
    access = refresh(auth, token).json()["access_token"]
    clock.advance(599)
    assert auth.check_access_token(access).status == "valid"
    clock.advance(1)
    assert auth.check_access_token(access).status == "expired"
    assert auth.check_access_token("at-unknown").status == "unknown"
    assert auth.check_access_token(token).status == "unknown"  # a refresh token is no bearer


def test_revoking_a_refresh_token_leaves_issued_access_tokens_until_whole_grant(
    auth: OAuthServer,
) -> None:
    token = auth.sign_in("app", "ann@example.com", "smtp")
    access = refresh(auth, token).json()["access_token"]
    auth.revoke(token)
    assert refresh(auth, token).json()["error"] == "invalid_grant"
    assert auth.check_access_token(access).valid
    auth.revoke(token, whole_grant=True)
    assert auth.check_access_token(access).status == "revoked"


def test_revocation_endpoint_revokes_the_grant_of_a_refresh_token(auth: OAuthServer) -> None:
    token = auth.sign_in("app", "ann@example.com", "smtp")
    access = refresh(auth, token).json()["access_token"]
    response = post(
        auth.revocation_endpoint, {"token": token, "client_id": "app", "client_secret": SECRET}
    )
    assert response.status_code == 200
    assert auth.check_access_token(access).status == "revoked"
    unknown = post(
        auth.revocation_endpoint, {"token": "nope", "client_id": "app", "client_secret": SECRET}
    )
    assert unknown.status_code == 200  # RFC 7009: unknown tokens are no error


def device_code(auth: OAuthServer, client: str = "tv", **extra: str) -> dict[str, Any]:
    form = {"client_id": client, **extra}
    response = post(auth.device_endpoint, form)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def poll(auth: OAuthServer, code: str) -> httpx.Response:
    return post(
        auth.token_endpoint, {"grant_type": DEVICE_GRANT, "device_code": code, "client_id": "tv"}
    )


def test_device_flow_answers_pending_then_slow_down_then_tokens(
    auth: OAuthServer, clock: ManualClock
) -> None:
    body = device_code(auth)
    assert set(body) >= {"device_code", "user_code", "verification_uri", "expires_in", "interval"}
    assert body["verification_uri"] == auth.verification_uri
    assert body["user_code"] in auth.pending_user_codes()
    assert poll(auth, body["device_code"]).json()["error"] == "authorization_pending"
    assert poll(auth, body["device_code"]).json()["error"] == "slow_down"  # no wait at all
    clock.advance(body["interval"] + 5)
    assert poll(auth, body["device_code"]).json()["error"] == "authorization_pending"
    auth.approve(body["user_code"], "bob@example.com")
    clock.advance(60)
    tokens = poll(auth, body["device_code"]).json()
    assert tokens["refresh_token"].startswith("rt-")
    assert auth.check_access_token(tokens["access_token"]).user == "bob@example.com"
    assert poll(auth, body["device_code"]).json()["error"] == "invalid_grant"  # used once


def test_the_sign_in_page_approves_or_denies_like_a_browser(auth: OAuthServer) -> None:
    first, second = device_code(auth), device_code(auth)
    page = httpx.get(first["verification_uri_complete"], timeout=10)
    assert page.status_code == 200 and first["user_code"] in page.text
    approved = post(
        auth.verification_uri,
        {"user_code": first["user_code"], "user": "cy@example.com", "action": "approve"},
    )
    assert approved.status_code == 200
    denied = post(auth.verification_uri, {"user_code": second["user_code"], "action": "deny"})
    assert denied.status_code == 200
    bad = post(auth.verification_uri, {"user_code": "ZZZZ-ZZZZ", "action": "approve"})
    assert bad.status_code == 400
    tokens = poll(auth, first["device_code"]).json()
    assert auth.check_access_token(tokens["access_token"]).user == "cy@example.com"
    assert poll(auth, second["device_code"]).json()["error"] == "access_denied"


def test_device_codes_expire(auth: OAuthServer, clock: ManualClock) -> None:
    body = device_code(auth)
    clock.advance(body["expires_in"])
    assert poll(auth, body["device_code"]).json()["error"] == "expired_token"


def test_device_authorization_checks_client_grant_and_scope(auth: OAuthServer) -> None:
    assert device_code(auth, client="app", client_secret=SECRET, scope="smtp")["user_code"]
    auth.register_client("batch", SECRET, grant_types=["client_credentials"])
    refused = post(auth.device_endpoint, {"client_id": "batch", "client_secret": SECRET})
    assert refused.json()["error"] == "unauthorized_client"
    wide = post(
        auth.device_endpoint, {"client_id": "app", "client_secret": SECRET, "scope": "admin"}
    )
    assert wide.json()["error"] == "invalid_scope"


def test_without_consent_every_grant_fails_like_aadsts65001(auth: OAuthServer) -> None:
    token = auth.sign_in("app", "ann@example.com", "smtp")
    auth.set_consent("app", False)
    body = refresh(auth, token).json()
    assert body["error"] == "invalid_grant"
    assert body["suberror"] == "consent_required"
    assert 65001 in body["error_codes"]


@pytest.mark.parametrize("name", sorted(SCRIPTED_ERRORS))
def test_scripted_errors_answer_once_with_the_providers_shape(auth: OAuthServer, name: str) -> None:
    token = auth.sign_in("app", "ann@example.com", "smtp")
    auth.fail(name)
    response = refresh(auth, token)
    status, body = SCRIPTED_ERRORS[name]
    assert response.status_code == status
    assert response.json() == body
    assert refresh(auth, token).status_code == 200


def test_scripted_http_status_drop_and_filters(auth: OAuthServer) -> None:
    token = auth.sign_in("app", "ann@example.com", "smtp")
    auth.fail(503, times=2)
    assert [refresh(auth, token).status_code for _ in range(3)] == [503, 503, 200]
    assert [r.error for r in auth.requests] == ["scripted: 503", "scripted: 503", ""]
    auth.fail("server_error", grant_type="client_credentials")
    assert refresh(auth, token).status_code == 200  # not that grant type
    auth.fail("drop")
    with pytest.raises(httpx.RemoteProtocolError):
        refresh(auth, token)
    auth.fail({"error": "custom", "error_description": "made up"}, status=418)
    scripted = refresh(auth, token)
    assert (scripted.status_code, scripted.json()["error"]) == (418, "custom")
    with pytest.raises(ValueError, match="unknown scripted error"):
        auth.fail("no_such_error")


def test_hold_keeps_token_requests_waiting_until_release(auth: OAuthServer) -> None:
    import threading

    token = auth.sign_in("app", "ann@example.com", "smtp")
    auth.hold()
    results: list[int] = []
    asker = threading.Thread(target=lambda: results.append(refresh(auth, token).status_code))
    asker.start()
    for _ in range(1000):
        if auth.held:
            break
        asker.join(0.01)
    assert auth.held == 1 and not results
    auth.release()
    asker.join(10)
    assert results == [200]


def test_the_server_listens_on_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback"):
        OAuthServer(host="0.0.0.0")

"""Token requests against the local authorization server: grants, client authentication,
the device flow, and every refusal turned into its error type."""

from __future__ import annotations

import dataclasses
import pickle
import socket
from collections.abc import Awaitable, Callable

import pytest

from mailconduit.config import Secret
from mailconduit.errors import ConfigError
from mailconduit.oauth import (
    AccessDeniedError,
    ConsentRequiredError,
    DeviceAuthorization,
    DeviceCodeExpiredError,
    InvalidClientError,
    InvalidGrantError,
    InvalidScopeError,
    NotSignedInError,
    OAuthError,
    SignInRequiredError,
    TokenEndpointDeniedError,
    TokenEndpointUnreachableError,
    TokenServerError,
    UnauthorizedClientError,
    client_credentials,
    poll_device_authorization,
    refresh,
    request_token,
    start_device_authorization,
    validate_oauth_settings,
)
from mailconduit.testing import run
from mailconduit.testing.oauth import ManualClock, OAuthServer
from oauth_support import SECRET, authorization_server

AUTH_SERVER = {"access_token_lifetime": 1800}


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
def test_refresh_returns_an_access_token_with_its_expiry(
    auth: OAuthServer, clock: ManualClock, method: str
) -> None:
    token = auth.sign_in("app", "ann@example.com", "smtp offline")
    settings = auth.settings("app", client_secret=SECRET, scope="smtp", client_auth=method)
    grant = run(refresh(settings, Secret(token), clock=clock))
    access = grant.access_token
    assert auth.check_access_token(access.value.reveal()).valid
    assert access.issued_at == clock.now
    assert access.expires_at == clock.now + 1800
    assert access.scope == "smtp"
    assert grant.refresh_token is None
    assert auth.requests[-1].client_auth == method


def test_a_public_client_sends_only_its_id(auth: OAuthServer, clock: ManualClock) -> None:
    token = auth.sign_in("tv", "ann@example.com", "smtp")
    grant = run(refresh(auth.settings("tv"), Secret(token), clock=clock))
    assert grant.access_token.value
    assert auth.requests[-1].client_auth == "none"


def test_rotated_refresh_tokens_come_back_as_secrets(clock: ManualClock) -> None:
    with authorization_server(clock, rotate_refresh_tokens=True) as auth:
        token = auth.sign_in("app", "ann@example.com", "smtp")
        grant = run(refresh(auth.settings("app", client_secret=SECRET), Secret(token), clock=clock))
        assert isinstance(grant.refresh_token, Secret)
        assert grant.refresh_token.reveal().startswith("rt-")
        assert grant.refresh_token.reveal() != token


def test_client_credentials_gets_an_app_token(auth: OAuthServer, clock: ManualClock) -> None:
    settings = auth.settings("app", client_secret=SECRET, flow="client_credentials", scope="smtp")
    grant = run(client_credentials(settings, clock=clock))
    check = auth.check_access_token(grant.access_token.value.reveal())
    assert (check.status, check.user, check.client_id) == ("valid", "", "app")
    assert run(request_token(settings, None, clock=clock)).access_token.value


def test_request_token_without_a_refresh_token_says_sign_in(auth: OAuthServer) -> None:
    with pytest.raises(NotSignedInError) as exc:
        run(request_token(auth.settings("app", client_secret=SECRET), None))
    assert isinstance(exc.value, SignInRequiredError)
    assert "sign in: mailconduit connections authorize NAME" in str(exc.value)
    assert auth.requests == []


@pytest.mark.parametrize(
    ("scripted", "kind"),
    [
        ("invalid_client", InvalidClientError),
        ("invalid_grant", InvalidGrantError),
        ("unauthorized_client", UnauthorizedClientError),
        ("invalid_scope", InvalidScopeError),
        ("consent_required", ConsentRequiredError),
        ("interaction_required", ConsentRequiredError),
        ("temporarily_unavailable", TokenServerError),
        ("server_error", TokenServerError),
        (503, TokenServerError),
        (429, TokenServerError),
        (404, OAuthError),
        ("drop", TokenEndpointUnreachableError),
    ],
)
def test_each_refusal_becomes_its_error_type(
    auth: OAuthServer, scripted: str | int, kind: type[OAuthError]
) -> None:
    token = auth.sign_in("app", "ann@example.com", "smtp")
    auth.fail(scripted)
    with pytest.raises(OAuthError) as exc:
        run(refresh(auth.settings("app", client_secret=SECRET), Secret(token)))
    assert type(exc.value) is kind
    assert exc.value.endpoint == auth.token_endpoint
    assert exc.value.retriable is (kind in (TokenServerError, TokenEndpointUnreachableError))
    assert "\n" not in str(exc.value)


def test_microsoft_descriptions_are_cut_to_their_first_line(auth: OAuthServer) -> None:
    token = auth.sign_in("app", "ann@example.com", "smtp")
    auth.fail("invalid_grant")
    with pytest.raises(InvalidGrantError) as exc:
        run(refresh(auth.settings("app", client_secret=SECRET), Secret(token)))
    error = exc.value
    assert error.code == "invalid_grant"
    assert error.status == 400
    assert error.description.startswith("AADSTS70000: ")
    assert "Trace ID" not in error.description
    assert str(error) == (
        f"token endpoint 127.0.0.1 answered HTTP 400 invalid_grant ({error.description}); "
        "sign in again: mailconduit connections authorize NAME"
    )
    named = error.for_connection("office")
    assert type(named) is InvalidGrantError
    assert str(named).endswith("sign in again: mailconduit connections authorize office")


def test_consent_errors_keep_the_specific_code(auth: OAuthServer) -> None:
    token = auth.sign_in("app", "ann@example.com", "smtp")
    settings = auth.settings("app", client_secret=SECRET)
    auth.fail("consent_required")
    with pytest.raises(ConsentRequiredError) as consent:
        run(refresh(settings, Secret(token)))
    auth.fail("interaction_required")
    with pytest.raises(ConsentRequiredError) as interaction:
        run(refresh(settings, Secret(token)))
    assert consent.value.code == "consent_required"
    assert "administrator" in consent.value.hint
    assert interaction.value.code == "interaction_required"
    assert "multi-factor" in interaction.value.hint


def test_errors_pickle_with_every_field(auth: OAuthServer) -> None:
    error = InvalidGrantError("invalid_grant", "gone", auth.token_endpoint, 400, "office")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is InvalidGrantError
    assert str(copy) == str(error)
    assert copy.connection == "office"


def test_echoed_secrets_are_cut_out_of_descriptions(auth: OAuthServer) -> None:
    token = auth.sign_in("app", "ann@example.com", "smtp")
    auth.fail(
        {"error": "invalid_grant", "error_description": f"bad token {token} for {SECRET}"},
        status=400,
    )
    with pytest.raises(InvalidGrantError) as exc:
        run(refresh(auth.settings("app", client_secret=SECRET), Secret(token)))
    assert token not in str(exc.value) and SECRET not in str(exc.value)
    assert exc.value.description == "bad token ******** for ********"


def test_an_endpoint_nobody_listens_on_is_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = validate_oauth_settings(
        {"provider": "generic", "client_id": "x", "token_endpoint": f"http://127.0.0.1:{port}/t"}
    )
    with pytest.raises(TokenEndpointUnreachableError) as exc:
        run(refresh(settings, Secret("rt")))
    assert exc.value.code == "unreachable"
    assert exc.value.retriable


def test_an_endpoint_that_never_answers_times_out(auth: OAuthServer) -> None:
    token = auth.sign_in("app", "ann@example.com", "smtp")
    auth.fail("hang")
    with pytest.raises(TokenEndpointUnreachableError) as exc:
        run(refresh(auth.settings("app", client_secret=SECRET), Secret(token), timeout=0.3))
    assert exc.value.code == "timeout"
    assert "0.3 s" in str(exc.value)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"token_type": "Bearer", "expires_in": 60}, "invalid_response"),
        ({"access_token": "at", "token_type": "mac"}, "unsupported_token_type"),
    ],
)
def test_malformed_token_answers_are_refused(
    auth: OAuthServer, body: dict[str, object], code: str
) -> None:
    token = auth.sign_in("app", "ann@example.com", "smtp")
    auth.fail(body, status=200)
    with pytest.raises(OAuthError) as exc:
        run(refresh(auth.settings("app", client_secret=SECRET), Secret(token)))
    assert exc.value.code == code


def test_expires_in_may_be_a_string_or_missing(auth: OAuthServer, clock: ManualClock) -> None:
    token = auth.sign_in("app", "ann@example.com", "smtp")
    settings = auth.settings("app", client_secret=SECRET)
    auth.fail({"access_token": "at-1", "token_type": "bearer", "expires_in": "3599"}, status=200)
    assert (
        run(refresh(settings, Secret(token), clock=clock)).access_token.expires_at
        == clock.now + 3599
    )
    auth.fail({"access_token": "at-2", "token_type": "Bearer"}, status=200)
    assert (
        run(refresh(settings, Secret(token), clock=clock)).access_token.expires_at
        == clock.now + 3600
    )


def approving_sleep(
    auth: OAuthServer, clock: ManualClock, device: DeviceAuthorization, waits: list[float]
) -> Callable[[float], Awaitable[None]]:
    """A sleep that records each wait and signs the user in during the third."""

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            auth.approve(device.user_code, "dee@example.com")
        await clock.sleep(seconds)

    return sleep


def test_device_flow_polls_until_the_user_approves(auth: OAuthServer, clock: ManualClock) -> None:
    settings = auth.settings("tv", scope="smtp")
    device = run(start_device_authorization(settings))
    assert device.verification_uri == auth.verification_uri
    assert (
        device.user_code in device.instructions()
        and device.verification_uri in device.instructions()
    )
    waits: list[float] = []
    sleep = approving_sleep(auth, clock, device, waits)
    grant = run(poll_device_authorization(settings, device, clock=clock, sleep=sleep))
    assert waits == [5.0, 5.0, 5.0]
    assert auth.check_access_token(grant.access_token.value.reveal()).user == "dee@example.com"
    assert grant.refresh_token is not None
    assert auth.issued["urn:ietf:params:oauth:grant-type:device_code"] == 1


def test_device_flow_waits_five_seconds_more_after_slow_down(
    auth: OAuthServer, clock: ManualClock
) -> None:
    settings = auth.settings("tv", scope="smtp")
    device = dataclasses.replace(run(start_device_authorization(settings)), interval=1.0)
    waits: list[float] = []
    sleep = approving_sleep(auth, clock, device, waits)
    run(poll_device_authorization(settings, device, clock=clock, sleep=sleep))
    assert waits == [1.0, 1.0, 6.0]  # the server said slow_down after the second poll


def test_device_flow_declined(auth: OAuthServer, clock: ManualClock) -> None:
    settings = auth.settings("tv", scope="smtp")
    device = run(start_device_authorization(settings))
    auth.deny(device.user_code)
    with pytest.raises(AccessDeniedError) as exc:
        run(poll_device_authorization(settings, device, clock=clock, sleep=clock.sleep))
    assert "declined" in str(exc.value)


def test_device_flow_gives_up_when_the_code_expires(auth: OAuthServer, clock: ManualClock) -> None:
    settings = auth.settings("tv", scope="smtp")
    auth.device_code_lifetime = 30
    device = run(start_device_authorization(settings))
    polls_before = len(auth.requests)
    with pytest.raises(DeviceCodeExpiredError):
        run(poll_device_authorization(settings, device, clock=clock, sleep=clock.sleep))
    polls = len(auth.requests) - polls_before
    assert 0 < polls <= device.expires_in / device.interval == 6


def test_google_spells_it_verification_url(auth: OAuthServer) -> None:
    auth.fail(
        {
            "device_code": "dc-google",
            "user_code": "GQVQ-JKEC",
            "verification_url": "https://www.google.com/device",
            "expires_in": 1800,
            "interval": 5,
        },
        endpoint="device",
        status=200,
    )
    device = run(start_device_authorization(auth.settings("tv")))
    assert device.verification_uri == "https://www.google.com/device"
    assert device.expires_in == 1800


def test_device_flow_needs_a_device_endpoint() -> None:
    settings = validate_oauth_settings(
        {"provider": "generic", "client_id": "x", "token_endpoint": "http://127.0.0.1:9/t"}
    )
    with pytest.raises(ConfigError) as exc:
        run(start_device_authorization(settings))
    assert exc.value.field == "device_endpoint"


@pytest.mark.parametrize("denied", ["127.0.0.0/8", "127.0.0.1"])
def test_a_token_endpoint_the_network_policy_denies_is_never_asked(
    auth: OAuthServer, monkeypatch: pytest.MonkeyPatch, denied: str
) -> None:
    """The SSRF guard of SMTP servers covers token endpoints too: a generic endpoint typed in
    the console cannot make the server POST secrets to a metadata service or a denied net."""
    token = auth.sign_in("app", "ann@example.com", "smtp offline")
    settings = auth.settings("app", client_secret=SECRET, scope="smtp")
    asked = len(auth.requests)
    monkeypatch.setenv("MAILCONDUIT_DENY_NETWORKS", denied)
    with pytest.raises(TokenEndpointDeniedError) as exc:
        run(refresh(settings, Secret(token)))
    assert exc.value.code == "network_policy"
    assert "MAILCONDUIT_ALLOW_NETWORKS" in exc.value.hint
    assert len(auth.requests) == asked  # nothing reached the endpoint
    monkeypatch.delenv("MAILCONDUIT_DENY_NETWORKS")
    assert run(refresh(settings, Secret(token))).access_token.value.reveal()

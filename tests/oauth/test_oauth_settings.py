"""OAuth settings: provider endpoints and scopes filled in, every wrong field named."""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

import mailconduit.oauth as oauth
from mailconduit.config import Secret
from mailconduit.errors import ConfigError
from mailconduit.oauth import Flow, Provider, validate_oauth_settings


def fields_of(exc: pytest.ExceptionInfo[ConfigError]) -> set[str]:
    return {e.field for e in exc.value.errors}


def test_microsoft_delegated_gets_the_published_endpoints_and_smtp_scope() -> None:
    s = validate_oauth_settings(
        {"provider": "microsoft", "tenant": "contoso.onmicrosoft.com", "client_id": "abc"}
    )
    assert s.token_endpoint == (
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    )
    assert s.device_endpoint.endswith("/contoso.onmicrosoft.com/oauth2/v2.0/devicecode")
    assert s.scope == "https://outlook.office.com/SMTP.Send offline_access"
    assert s.flow is Flow.REFRESH_TOKEN


def test_microsoft_tenant_defaults_to_common_for_delegated_sign_in() -> None:
    s = validate_oauth_settings({"provider": "microsoft", "client_id": "abc"})
    assert s.tenant == "common"
    assert "/common/" in s.token_endpoint


def test_microsoft_app_only_needs_a_real_tenant_and_a_secret() -> None:
    with pytest.raises(ConfigError) as exc:
        validate_oauth_settings(
            {"provider": "microsoft", "client_id": "abc", "flow": "client_credentials"}
        )
    assert fields_of(exc) == {"tenant", "client_secret"}
    s = validate_oauth_settings(
        {
            "provider": "microsoft",
            "client_id": "abc",
            "flow": "client-credentials",
            "tenant": "0a1b2c3d-0000-4000-8000-000000000000",
            "client_secret": "shh",
        }
    )
    assert s.scope == "https://outlook.office365.com/.default"
    assert s.client_secret == Secret("shh")


def test_google_gets_its_endpoints_and_refuses_client_credentials() -> None:
    s = validate_oauth_settings({"provider": "google", "client_id": "x.apps.googleusercontent.com"})
    assert s.token_endpoint == "https://oauth2.googleapis.com/token"
    assert s.device_endpoint == "https://oauth2.googleapis.com/device/code"
    assert s.scope == "https://mail.google.com/"
    with pytest.raises(ConfigError) as exc:
        validate_oauth_settings(
            {
                "provider": "google",
                "client_id": "x",
                "flow": "client_credentials",
                "client_secret": "y",
            }
        )
    assert fields_of(exc) == {"flow"}


def test_provider_endpoints_cannot_be_redirected() -> None:
    with pytest.raises(ConfigError) as exc:
        validate_oauth_settings(
            {"provider": "google", "client_id": "x", "token_endpoint": "https://evil.example/t"}
        )
    assert fields_of(exc) == {"token_endpoint"}


def test_generic_needs_a_token_endpoint_over_https_except_on_loopback() -> None:
    with pytest.raises(ConfigError) as exc:
        validate_oauth_settings({"provider": "generic", "client_id": "x"})
    assert fields_of(exc) == {"token_endpoint"}
    with pytest.raises(ConfigError, match="must use https"):
        validate_oauth_settings(
            {"provider": "generic", "client_id": "x", "token_endpoint": "http://idp.example/token"}
        )
    with pytest.raises(ConfigError, match="credentials"):
        validate_oauth_settings(
            {"provider": "generic", "client_id": "x", "token_endpoint": "https://u:p@idp.example/t"}
        )
    local = validate_oauth_settings(
        {"provider": "generic", "client_id": "x", "token_endpoint": "http://127.0.0.1:9/token"}
    )
    assert local.scope == ""  # a generic provider has no default scope


def test_every_wrong_field_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as exc:
        validate_oauth_settings(
            {
                "provider": "yahoo",
                "client_id": "",
                "flow": "password",
                "client_auth": "jwt",
                "colour": "blue",
                "refresh_token": "two\nlines",
            }
        )
    assert fields_of(exc) == {
        "provider",
        "client_id",
        "flow",
        "client_auth",
        "colour",
        "refresh_token",
    }
    assert str(exc.value).startswith("invalid OAuth settings: ")


def test_tenant_is_microsofts_only() -> None:
    with pytest.raises(ConfigError) as exc:
        validate_oauth_settings({"provider": "google", "client_id": "x", "tenant": "contoso"})
    assert fields_of(exc) == {"tenant"}


@given(st.text(min_size=1, max_size=80))
def test_no_tenant_can_move_the_token_request_off_microsofts_host(tenant: str) -> None:
    try:
        s = validate_oauth_settings({"provider": "microsoft", "client_id": "abc", "tenant": tenant})
    except ConfigError as exc:
        assert {e.field for e in exc.errors} <= {"tenant"}
        return
    parts = urlsplit(s.token_endpoint)
    assert parts.scheme == "https"
    assert parts.hostname == "login.microsoftonline.com"
    assert parts.path == f"/{s.tenant}/oauth2/v2.0/token"
    assert not parts.query and not parts.fragment


def test_secrets_stay_hidden_in_repr_and_public_dict() -> None:
    s = validate_oauth_settings(
        {"provider": "google", "client_id": "x", "client_secret": "CS-1", "refresh_token": "RT-1"}
    )
    shown = repr(s) + str(s.public_dict())
    assert "CS-1" not in shown and "RT-1" not in shown
    assert s.public_dict()["has_refresh_token"] is True


def test_fingerprint_changes_with_who_the_tokens_are_for() -> None:
    base: dict[str, Any] = {"provider": "microsoft", "client_id": "abc", "tenant": "a.example"}
    one = validate_oauth_settings(base)
    assert one.fingerprint == validate_oauth_settings({**base, "refresh_token": "new"}).fingerprint
    assert one.fingerprint != validate_oauth_settings({**base, "tenant": "b.example"}).fingerprint
    assert one.fingerprint != validate_oauth_settings({**base, "client_id": "abd"}).fingerprint


def test_provider_enum_values() -> None:
    assert [p.value for p in Provider] == ["microsoft", "google", "generic"]


def test_the_package_exports_exactly_its_public_names_sorted() -> None:
    exported = oauth.__all__
    assert exported == sorted(exported)
    modules = ("cache", "client", "errors", "provider", "settings", "token")
    public = {
        name
        for module in modules
        for name in importlib.import_module(f"mailconduit.oauth.{module}").__all__
    }
    assert set(exported) == public

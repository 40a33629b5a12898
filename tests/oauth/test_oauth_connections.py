"""OAuth2 connections from the CLI: presets, OAuth2 options, secrets kept out of every
output and stored encrypted, ``connections authorize`` through the device flow, and Test
Connection's token and XOAUTH2 stages."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from delivery_support import MAILCONDUIT, cli_env, wait_until
from mailconduit import api
from mailconduit.connections import oauth as oauth_store
from mailconduit.testing.oauth import EXCHANGE_REPLIES, ManualClock, OAuthServer, XOAuth2Server
from oauth_support import ANN, SECRET, authorization_server

SCOPE = "https://outlook.office.com/SMTP.Send offline_access"


@pytest.fixture
def auth() -> Iterator[OAuthServer]:
    with authorization_server(ManualClock(), device_interval=0.1) as server:
        yield server


def oauth_options(auth: OAuthServer, *, client_id: str = "app") -> list[str]:
    return [
        "--oauth-provider", "generic", "--client-id", client_id, "--scope", SCOPE,
        "--token-endpoint", auth.token_endpoint, "--device-endpoint", auth.device_endpoint,
    ]  # fmt: skip


def create(cli: Any, auth: OAuthServer, port: int, *extra: str) -> Any:
    return cli(
        "connections", "create", "office", "--server-url", "127.0.0.1", "--port", str(port),
        "--security", "none", "--username", ANN, *oauth_options(auth), *extra,
    )  # fmt: skip


def create_with_secrets_from_env(
    cli: Any, auth: OAuthServer, monkeypatch: pytest.MonkeyPatch, refresh_token: str, *extra: str
) -> None:
    """Create ``office`` taking the client secret and ``refresh_token`` from the environment."""
    monkeypatch.setenv("APP_SECRET", SECRET)
    monkeypatch.setenv("REFRESH", refresh_token)
    created = create(cli, auth, 2525, "--client-secret-env", "APP_SECRET", "--refresh-token-env",
                     "REFRESH", *extra)  # fmt: skip
    assert created.code == 0, created.output


def test_a_preset_fills_the_connection_and_options_win(
    cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_SECRET", SECRET)
    result = cli(
        "connections", "create", "m365", "--preset", "microsoft365", "--username", ANN,
        "--tenant", "contoso.onmicrosoft.com", "--client-id", "11111111-2222", "--client-secret-env",
        "APP_SECRET", "--rate-per-minute", "20", "--json",
    )  # fmt: skip
    assert result.code == 0, result.output
    shown = json.loads(result.out)
    assert (shown["server_url"], shown["port"], shown["security"]) == (
        "smtp.office365.com",
        587,
        "starttls",
    )
    assert shown["auth_mechanism"] == "xoauth2"
    assert (shown["rate_per_minute"], shown["daily_cap"]) == (20, 10_000)  # typed value wins
    assert shown["oauth_provider"] == "microsoft"
    assert shown["oauth_token_endpoint"] == (
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    )
    assert shown["oauth_scope"] == SCOPE
    assert shown["oauth_has_client_secret"] is True
    assert shown["oauth_has_refresh_token"] is False
    assert SECRET not in result.output

    text = cli("connections", "show", "m365")
    assert text.code == 0 and "oauth_client_id" in text.out and SECRET not in text.output
    assert oauth_store.get_preset_name("m365") == "microsoft365"


def test_wrong_oauth_fields_are_named_in_one_line(cli: Any) -> None:
    result = cli(
        "connections", "create", "bad", "--server-url", "smtp.example.com", "--port", "587",
        "--username", ANN, "--oauth-provider", "microsoft", "--flow", "client_credentials",
        "--port", "99999",
    )  # fmt: skip
    assert result.code == 2
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    for words in ("port", "oauth_client_id", "oauth_tenant", "oauth_client_secret"):
        assert words in lines[0]
    assert "Traceback" not in result.output
    assert api.list_connections()[-1][0].name != "bad"  # nothing stored


def test_xoauth2_without_a_sign_in_or_token_is_refused(cli: Any) -> None:
    result = cli(
        "connections", "create", "bare", "--server-url", "smtp.example.com", "--port", "587",
        "--security", "starttls", "--username", ANN, "--auth", "xoauth2",
    )  # fmt: skip
    assert result.code == 2 and "oauth_client_id" in result.err


def test_edit_changes_and_removes_the_oauth_settings(
    cli: Any, auth: OAuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_SECRET", SECRET)
    monkeypatch.setenv("REFRESH", "rt-given")
    assert create(cli, auth, 2525, "--client-secret-env", "APP_SECRET").code == 0
    edited = cli("connections", "edit", "office", "--refresh-token-env", "REFRESH", "--json")
    assert edited.code == 0, edited.output
    assert json.loads(edited.out)["oauth_has_refresh_token"] is True
    settings = oauth_store.get_oauth("office")
    assert settings is not None and settings.refresh_token is not None
    assert settings.refresh_token.reveal() == "rt-given"

    # another app: the secret and refresh token of the old one are forgotten
    moved = cli("connections", "edit", "office", "--client-id", "tv", "--json")
    assert moved.code == 0, moved.output
    assert json.loads(moved.out)["oauth_has_refresh_token"] is False
    assert json.loads(moved.out)["oauth_has_client_secret"] is False

    removed = cli("connections", "edit", "office", "--no-oauth", "--auth", "none", "--json")
    assert removed.code == 0, removed.output
    assert "oauth_provider" not in json.loads(removed.out)
    assert oauth_store.get_oauth("office") is None


def test_authorize_prints_the_code_and_stores_the_refresh_token(
    cli: Any, auth: OAuthServer, home: Path
) -> None:
    """The real console script, as a user runs it on a server: the code it prints is typed
    into the authorization server's sign-in page."""
    assert create(cli, auth, 2525, "--client-id", "tv").code == 0
    process = subprocess.Popen(
        [MAILCONDUIT, "connections", "authorize", "office"],
        env=cli_env(MAILCONDUIT_HOME=str(home)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert process.stderr is not None
    seen: list[str] = []
    code = ""
    for line in process.stderr:  # ends when the process closes stderr
        seen.append(line)
        if line.strip().startswith("code:"):
            code = line.split(":", 1)[1].strip()
            break
    assert code, "".join(seen)
    assert any(auth.verification_uri in line for line in seen)
    answer = httpx.post(auth.verification_uri, data={"user_code": code, "user": ANN})
    assert answer.status_code == 200
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, out + err
    assert "signed in" in out
    settings = oauth_store.get_oauth("office")
    assert settings is not None and settings.refresh_token is not None
    token = settings.refresh_token.reveal()
    assert token in auth.token_values() and token not in out + err + "".join(seen)
    assert auth.issued["urn:ietf:params:oauth:grant-type:device_code"] == 1


def test_authorize_a_declined_sign_in_says_so(cli: Any, auth: OAuthServer) -> None:
    assert create(cli, auth, 2525, "--client-id", "tv").code == 0

    def decline() -> None:
        wait_until(lambda: auth.pending_user_codes(), timeout=60, what="a device sign-in")
        code = auth.pending_user_codes()[0]
        httpx.post(auth.verification_uri, data={"user_code": code, "action": "deny"})

    browser = threading.Thread(target=decline)
    browser.start()
    result = cli("connections", "authorize", "office")
    browser.join(60)
    assert result.code == 1
    assert "declined" in result.err and "mailconduit connections authorize office" in result.err


@pytest.mark.parametrize(
    ("fault", "stage_words"),
    [
        ("unreachable", "check the network"),
        ("invalid_client", "check the client id and client secret"),
        ("invalid_grant", "sign in again: mailconduit connections authorize office"),
        ("unauthorized_client", "does not allow this flow"),
        ("invalid_scope", "check the scope"),
        ("consent_required", "grant consent"),
        ("not_signed_in", "sign in: mailconduit connections authorize office"),
    ],
)
def test_test_connection_names_what_the_token_endpoint_refused(
    auth: OAuthServer, fault: str, stage_words: str
) -> None:
    refresh_token = auth.sign_in("app", ANN, SCOPE)
    data: dict[str, Any] = {
        "name": "office", "server_url": "127.0.0.1", "port": 9, "security": "none",
        "username": ANN, "oauth_provider": "generic", "oauth_client_id": "app",
        "oauth_client_secret": SECRET, "oauth_refresh_token": refresh_token,
        "oauth_token_endpoint": auth.token_endpoint,
    }  # fmt: skip
    if fault == "unreachable":
        data["oauth_token_endpoint"] = "http://127.0.0.1:9/token"
    elif fault == "not_signed_in":
        del data["oauth_refresh_token"]
    elif fault == "unauthorized_client":
        auth.register_client("app", SECRET, grant_types=["client_credentials"])
    elif fault in ("invalid_client", "invalid_grant", "invalid_scope", "consent_required"):
        auth.fail(fault)
    api.create_connection(data)

    result = api.test_connection("office")

    assert not result.ok and result.stage == "token"
    assert stage_words in result.hint, result.hint
    assert result.passed == ()
    text = "\n".join(result.report_lines(verbose=True))
    assert SECRET not in text and refresh_token not in text


def stored_xoauth2(
    auth: OAuthServer, smtp: XOAuth2Server, *, scope: str = SCOPE, **extra: Any
) -> None:
    api.create_connection(
        {
            "name": "office",
            "server_url": "127.0.0.1",
            "port": smtp.port,
            "security": "none",
            "username": ANN,
            "oauth_provider": "generic",
            "oauth_client_id": "app",
            "oauth_client_secret": SECRET,
            "oauth_refresh_token": auth.sign_in("app", ANN, scope),
            "oauth_scope": scope,
            "oauth_token_endpoint": auth.token_endpoint,
            **extra,
        }
    )


def test_test_connection_signs_in_and_warns_beyond_the_presets_limits(
    auth: OAuthServer,
) -> None:
    with XOAuth2Server(auth) as smtp:
        stored_xoauth2(auth, smtp, preset="microsoft365", rate_per_minute=60)
        result = api.test_connection("office", send_to="rcpt@example.com")
    assert result.ok, result.report_lines()
    assert result.authenticated_as == ANN and "auth" in result.passed
    assert any(
        "rate_per_minute 60 exceeds Exchange Online's 30 messages a minute" in w
        for w in result.warnings
    ), result.warnings
    assert "warning: rate_per_minute 60" in "\n".join(result.report_lines())
    assert [a.outcome for a in smtp.auth_attempts] == ["ok"]
    transcript = "\n".join(result.transcript)
    assert "AUTH XOAUTH2 <redacted>" in transcript
    for token in auth.token_values():
        assert token not in transcript


@pytest.mark.parametrize(
    ("refusal", "hint_words"),
    [
        ("tenant_disabled", "Set-TransportConfig -SmtpClientAuthenticationDisabled $false"),
        ("mailbox_disabled", "Set-CASMailbox"),
        ("bad_credentials", "the username must be the mailbox"),
    ],
)
def test_test_connection_explains_exchanges_refusals(
    auth: OAuthServer, refusal: str, hint_words: str
) -> None:
    with XOAuth2Server(auth, refuse=refusal) as smtp:
        stored_xoauth2(auth, smtp)
        result = api.test_connection("office")
    assert not result.ok and result.stage == "auth"
    assert EXCHANGE_REPLIES[refusal].split(" ", 2)[2] in result.message
    assert hint_words in result.hint
    assert len(smtp.auth_attempts) == 1  # a policy refusal: no new token would help
    assert auth.refreshes == 1


def test_a_token_the_server_refuses_is_replaced_once_then_explained(
    auth: OAuthServer,
) -> None:
    with XOAuth2Server(auth, required_scope="https://outlook.office.com/SMTP.Send") as smtp:
        stored_xoauth2(auth, smtp, scope="other")
        result = api.test_connection("office")
    assert not result.ok and result.stage == "auth"
    assert "5.7.3" in result.message and "SMTP.Send permission" in result.hint
    assert [a.outcome for a in smtp.auth_attempts] == ["scope", "scope"]
    assert auth.refreshes == 2


def test_no_secret_reaches_the_store_in_clear(
    cli: Any, auth: OAuthServer, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_with_secrets_from_env(cli, auth, monkeypatch, "rt-very-secret-refresh-token")
    listed = cli("connections", "list", "--json")
    exported = cli("connections", "export")
    for output in (listed.output, exported.output):
        assert SECRET not in output and "rt-very-secret" not in output
    for path in home.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert SECRET.encode() not in content, path
            assert b"rt-very-secret" not in content, path
    assert os.environ["APP_SECRET"] == SECRET


def test_export_and_import_carry_the_sign_in(
    cli: Any, auth: OAuthServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_with_secrets_from_env(cli, auth, monkeypatch, "rt-exported", "--preset", "mailpit")
    public = cli("connections", "export", "--format", "json")
    item = json.loads(public.out)["connections"][0]
    assert item["oauth_client_id"] == "app" and item["preset"] == "mailpit"
    assert "oauth_client_secret" not in item and "rt-exported" not in public.out

    full = tmp_path / "all.json"
    assert cli("connections", "export", "--format", "json", "--include-passwords",
               "-o", str(full)).code == 0  # fmt: skip
    assert cli("connections", "delete", "office", "--yes").code == 0
    assert oauth_store.get_oauth("office") is None
    imported = cli("connections", "import", str(full))
    assert imported.code == 0, imported.output
    settings = oauth_store.get_oauth("office")
    assert settings is not None and settings.client_secret is not None
    assert settings.refresh_token is not None and settings.refresh_token.reveal() == "rt-exported"
    assert oauth_store.get_preset_name("office") == "mailpit"


def test_gmail_refusals_are_retried_once_then_explained(auth: OAuthServer) -> None:
    with XOAuth2Server(auth, style="google", required_scope="https://mail.google.com/") as smtp:
        stored_xoauth2(auth, smtp, scope="other")
        result = api.test_connection("office")
    assert not result.ok and result.stage == "auth"
    assert "5.7.8" in result.message and "https://mail.google.com/" in result.hint
    assert [a.outcome for a in smtp.auth_attempts] == ["scope", "scope"]


@pytest.mark.parametrize(
    ("server", "chosen", "expected"),
    [
        ("smtp.office365.com", "", "microsoft365"),
        ("email-smtp.eu-west-1.amazonaws.com", "", "amazon-ses"),
        ("smtp.example.com", "", None),
        ("smtp.example.com", "sendgrid", "sendgrid"),  # the chosen preset, wherever it points
    ],
)
def test_the_limits_come_from_the_chosen_preset_or_the_server(
    server: str, chosen: str, expected: str | None
) -> None:
    from mailconduit.connections import signin

    data: dict[str, Any] = {
        "name": "relay", "server_url": server, "port": 587, "security": "starttls",
        "username": "apikey", "password": "secret-key",
    }  # fmt: skip
    if chosen:
        data["preset"] = chosen
    conn = api.create_connection(data)
    preset = signin.preset_for(conn)
    assert (preset.name if preset else None) == expected
    if expected == "sendgrid":
        assert conn.messages_per_connection == 5_000  # filled by the preset
        assert signin.limit_warnings(conn) == []
        changed = api.update_connection("relay", {"messages_per_connection": 0})
        assert signin.limit_warnings(changed) == [
            "messages_per_connection 0 (no limit) exceeds SendGrid's 5,000 messages per SMTP "
            "connection"
        ]


def test_the_cli_options_cover_the_oauth_fields() -> None:
    from mailconduit.cli.signin import SIGN_IN_OPTIONS
    from mailconduit.connections.signin import OAUTH_KEYS

    assert set(SIGN_IN_OPTIONS.values()) == {"preset", "region", *OAUTH_KEYS}

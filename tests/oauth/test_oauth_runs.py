"""Exports through a stored OAuth2 connection, against the local authorization server and
the XOAUTH2 SMTP server that checks every token with it: tokens expiring mid-run, many
sessions sharing one refresh, a rotated refresh token saved, a revoked one stopping the run
cleanly and resume after a new device sign-in. Time is a clock the test moves (no waiting)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from delivery_support import (
    MESSAGE,
    final_rows,
    journal_rows,
    people,
    people_csv,
    wait_until,
    write_csv,
)
from mailconduit import api
from mailconduit.connections import oauth as oauth_store
from mailconduit.oauth import TokenProvider
from mailconduit.testing import run
from mailconduit.testing.oauth import ManualClock, OAuthServer, XOAuth2Server
from oauth_support import ANN, SECRET, authorization_server

SCOPE = "https://outlook.office.com/SMTP.Send offline_access"
NAME = "office"


class MailClock(ManualClock):
    """Time that passes as mail is delivered: ``per_message`` seconds for every message the
    SMTP server has accepted, so tokens expire part-way through a run, at the same row on
    every machine."""

    def __init__(self, per_message: float) -> None:
        super().__init__()
        self.per_message = per_message
        self.smtp: XOAuth2Server | None = None

    def __call__(self) -> float:
        delivered = len(self.smtp.messages) if self.smtp is not None else 0
        return self.now + self.per_message * delivered


@pytest.fixture
def clock() -> MailClock:
    return MailClock(per_message=0.0)


@pytest.fixture
def auth(clock: MailClock) -> Iterator[OAuthServer]:
    with authorization_server(clock, access_token_lifetime=3600, device_interval=0.1) as server:
        yield server


@pytest.fixture
def smtp(auth: OAuthServer, clock: MailClock) -> Iterator[XOAuth2Server]:
    with XOAuth2Server(auth, required_scope="https://outlook.office.com/SMTP.Send") as server:
        clock.smtp = server
        yield server


class OnMessage(list[Any]):
    """The SMTP server's list of received messages, doing ``action`` as message ``at``
    arrives (before the server answers its DATA): an event at a known row."""

    def __init__(self, action: Any, *, at: int) -> None:
        super().__init__()
        self.action = action
        self.at = at

    def append(self, item: Any) -> None:
        super().append(item)
        if len(self) == self.at:
            self.action()


def create_connection(auth: OAuthServer, smtp: XOAuth2Server, **extra: Any) -> str:
    """The stored connection ``office``: generic OAuth2 at ``auth``, SMTP at ``smtp``; returns
    the refresh token it was given."""
    refresh_token = auth.sign_in("app", ANN, SCOPE)
    api.create_connection(
        {
            "name": NAME,
            "server_url": "127.0.0.1",
            "port": smtp.port,
            "security": "none",
            "username": ANN,
            "from_address": ANN,
            "oauth_provider": "generic",
            "oauth_client_id": "app",
            "oauth_client_secret": SECRET,
            "oauth_refresh_token": refresh_token,
            "oauth_scope": SCOPE,
            "oauth_token_endpoint": auth.token_endpoint,
            "oauth_device_endpoint": auth.device_endpoint,
            **extra,
        }
    )
    return refresh_token


def export(source: Path, **options: Any) -> Any:
    settings: dict[str, Any] = {
        "connection": NAME,
        **MESSAGE,
        "retry": {"max_attempts": 3, "initial_delay": 0.01, "max_delay": 0.02},
        **options,
    }
    return api.export(source, **settings)


def delivered_once(smtp: XOAuth2Server, count: int) -> None:
    recipients = sorted(r for m in smtp.messages for r in m.rcpt_tos)
    assert recipients == sorted(f"user{i}@example.com" for i in range(count))


def test_a_run_crossing_token_expiries_loses_no_row(
    tmp_path: Path, auth: OAuthServer, smtp: XOAuth2Server, clock: MailClock
) -> None:
    clock.per_message = 600.0  # an access token lives for six messages
    create_connection(auth, smtp)
    source = people_csv(tmp_path, 40)

    report = export(source, concurrency=4, messages_per_connection=3)

    assert (report.status, report.sent, report.failed) == ("finished", 40, 0), report.message
    delivered_once(smtp, 40)
    final_rows(report.run_id, range(40))
    outcomes = [a.outcome for a in smtp.auth_attempts]
    assert "expired" in outcomes  # tokens did run out mid-run...
    assert set(outcomes) == {"ok", "expired"}
    assert outcomes.count("ok") == smtp.session_count  # ...and every session got in
    assert auth.refreshes >= 2


def test_a_token_endpoint_down_for_a_while_costs_no_row(
    tmp_path: Path, auth: OAuthServer, smtp: XOAuth2Server, clock: MailClock
) -> None:
    clock.per_message = 600.0  # the first token runs out after the sixth message
    create_connection(auth, smtp)
    smtp.messages = OnMessage(
        lambda: auth.fail("temporarily_unavailable", times=2, grant_type="refresh_token"), at=6
    )
    source = people_csv(tmp_path, 12)

    report = export(source, concurrency=1, messages_per_connection=3)

    assert (report.status, report.sent, report.failed) == ("finished", 12, 0), report.message
    delivered_once(smtp, 12)
    refused = [r for r in auth.requests if r.error == "scripted: temporarily_unavailable"]
    assert len(refused) == 2  # asked again after each failure, then got a token


def test_a_provider_on_the_runs_clock_renews_before_the_server_refuses(
    tmp_path: Path, auth: OAuthServer, smtp: XOAuth2Server, clock: MailClock
) -> None:
    from mailconduit.connections import signin
    from mailconduit.delivery.export import execute

    clock.per_message = 600.0
    create_connection(auth, smtp)
    source = people_csv(tmp_path, 30)
    spec = api.export_spec(
        {
            "source": str(source),
            "connection": NAME,
            **MESSAGE,
            "messages_per_connection": 2,
            "concurrency": 1,  # no message between fetching a token and sending it
        }
    )
    conn = signin.with_tokens(api.get_connection(NAME), clock=clock)

    report = run(execute(spec, conn))

    assert (report.status, report.sent) == ("finished", 30), report.message
    delivered_once(smtp, 30)
    assert {a.outcome for a in smtp.auth_attempts} == {"ok"}  # never a stale token
    assert 4 <= auth.refreshes <= 15


def test_sessions_of_two_runs_share_one_refresh(
    tmp_path: Path, auth: OAuthServer, smtp: XOAuth2Server
) -> None:
    create_connection(auth, smtp)
    first = write_csv(tmp_path / "first.csv", people(20))
    second = write_csv(tmp_path / "second.csv", people(20, start=20))
    auth.hold()  # the first refresh waits until both runs have asked for a token
    reports: list[Any] = []
    runs = [
        threading.Thread(target=lambda s=s: reports.append(export(s, concurrency=8)))
        for s in (first, second)
    ]
    for thread in runs:
        thread.start()
    wait_until(lambda: auth.held == 1, timeout=60, what="one refresh in flight")
    auth.release()
    for thread in runs:
        thread.join(120)

    assert sorted((r.status, r.sent) for r in reports) == [("finished", 20)] * 2
    delivered_once(smtp, 40)
    assert auth.refreshes == 1
    assert {a.outcome for a in smtp.auth_attempts} == {"ok"}


def test_a_rotated_refresh_token_is_saved_encrypted(
    tmp_path: Path, clock: MailClock, home: Path
) -> None:
    with (
        authorization_server(clock, rotate_refresh_tokens=True) as auth,
        XOAuth2Server(auth) as smtp,
    ):
        original = create_connection(auth, smtp)
        report = export(people_csv(tmp_path, 5))
        assert (report.status, report.sent) == ("finished", 5)

        settings = oauth_store.get_oauth(NAME)
        assert settings is not None and settings.refresh_token is not None
        saved = settings.refresh_token.reveal()
        assert saved != original
        # the saved token is the live one: a fresh provider (a new run) refreshes with it
        fresh = TokenProvider(settings, name="check", clock=clock)
        assert run(fresh.token()).value
        assert auth.refreshes == 2
        files = [p for p in home.rglob("*") if p.is_file()]
        assert any(p.suffix == ".db" for p in files)
        for path in files:
            content = path.read_bytes()
            for token in [SECRET, original, saved, *auth.token_values()]:
                assert token.encode() not in content, f"{path} holds a secret in clear"


def test_a_revoked_refresh_token_stops_the_run_and_resume_continues_after_sign_in(
    tmp_path: Path,
    auth: OAuthServer,
    smtp: XOAuth2Server,
    cli: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    refresh_token = create_connection(auth, smtp)
    source = people_csv(tmp_path, 24)
    smtp.messages = OnMessage(lambda: auth.revoke(refresh_token, whole_grant=True), at=9)

    result = cli(
        "export", str(source), "--connection", NAME, "--to", MESSAGE["to"],
        "--subject", MESSAGE["subject"], "--body", MESSAGE["body"], "--key", "id",
        "--run-id", "revoked", "--messages-per-connection", "3", "--concurrency", "1",
    )  # fmt: skip

    assert result.code != 0
    assert "sign in again: mailconduit connections authorize office" in result.out
    assert "Traceback" not in result.output
    rows = journal_rows("revoked")
    sent = {k for k, r in rows.items() if r.state == "sent"}
    assert sent == {str(i) for i in range(9)} and len(smtp.messages) == 9
    assert [a.outcome for a in smtp.auth_attempts][-1] == "revoked"

    # a new sign-in through the device flow, as a user would do it in a browser
    def sign_in_in_browser() -> None:
        wait_until(lambda: auth.pending_user_codes(), timeout=60, what="a device sign-in")
        code = auth.pending_user_codes()[0]
        page = httpx.get(auth.verification_uri, params={"user_code": code})
        assert page.status_code == 200 and code in page.text
        answer = httpx.post(auth.verification_uri, data={"user_code": code, "user": ANN})
        assert answer.status_code == 200

    browser = threading.Thread(target=sign_in_in_browser)
    browser.start()
    signed = cli("connections", "authorize", NAME)
    browser.join(60)
    assert signed.code == 0, signed.output
    assert "code:" in signed.err and auth.verification_uri in signed.err

    resumed = cli("runs", "resume", "revoked")
    assert resumed.code == 0, resumed.output
    delivered_once(smtp, 24)
    final_rows("revoked", range(24))

    secrets = [SECRET, *auth.token_values()]
    shown = result.output + signed.output + resumed.output + caplog.text
    for secret in secrets:
        assert secret not in shown

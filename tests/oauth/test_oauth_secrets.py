"""No client secret, refresh token, access token or device code shows in logs, in what the
objects print, in errors, in an SMTP transcript, or in clear in the database."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from mailconduit.config import Secret
from mailconduit.crypto import decrypt, encrypt
from mailconduit.errors import AuthenticationError
from mailconduit.oauth import (
    InvalidGrantError,
    OAuthError,
    SqlTokenCache,
    TokenProvider,
    client_credentials,
    oauth_tokens_table,
    poll_device_authorization,
    refresh,
    start_device_authorization,
)
from mailconduit.smtp import SMTPSession, Transcript
from mailconduit.testing import loopback_connection, run
from mailconduit.testing.oauth import ManualClock, OAuthServer, XOAuth2Server

CLIENT_SECRET = "CS-8f2e41d7c9b3"
ANN = "ann@example.com"


def test_no_secret_leaks_anywhere(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = ManualClock()
    secrets: set[str] = {CLIENT_SECRET}
    shown: list[str] = []  # everything the objects would print
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    cache = SqlTokenCache(engine, encrypt=encrypt, decrypt=lambda t: decrypt(t, name="office"))
    saved: list[Secret] = []

    with OAuthServer(clock=clock, rotate_refresh_tokens=True) as auth:
        auth.register_client("app", CLIENT_SECRET)
        first_refresh = auth.sign_in("app", ANN, "smtp")
        secrets.add(first_refresh)
        settings = auth.settings(
            "app", client_secret=CLIENT_SECRET, refresh_token=first_refresh, scope="smtp"
        )
        provider = TokenProvider(
            settings, name="office", cache=cache, on_refresh_token=saved.append, clock=clock
        )

        async def flow() -> None:
            # refreshes with rotation, an XOAUTH2 login with a transcript
            async with XOAuth2Server(auth, required_scope="smtp") as smtp:
                for _ in range(2):
                    token = await provider.token()
                    secrets.add(token.value.reveal())
                    shown.extend([repr(token), str(token)])
                    transcript = Transcript()
                    conn = loopback_connection(
                        smtp.port,
                        username=ANN,
                        password=token.value.reveal(),
                        auth_mechanism="xoauth2",
                    )
                    async with SMTPSession(conn, transcript=transcript) as session:
                        assert session.authenticated_as == ANN
                    shown.append(transcript.text())
                    clock.advance(3600)
                # a refused login: the error and its transcript
                transcript = Transcript()
                conn = loopback_connection(
                    smtp.port, username=ANN, password=token.value.reveal(), auth_mechanism="xoauth2"
                )
                try:
                    async with SMTPSession(conn, transcript=transcript):
                        pass
                except AuthenticationError as exc:
                    shown.extend([str(exc), repr(exc)])
                shown.append(transcript.text())
            # a refusal whose description echoes what was sent
            auth.fail(
                {
                    "error": "invalid_grant",
                    "error_description": f"{CLIENT_SECRET} / {saved[-1].reveal()}",
                }
            )
            try:
                await refresh(settings, saved[-1])
            except InvalidGrantError as exc:
                assert exc.description == "******** / ********"
                shown.extend([str(exc), repr(exc), str(exc.args)])
            # the device flow and client credentials
            device = await start_device_authorization(settings)
            secrets.add(device.device_code.reveal())
            shown.extend([repr(device), device.instructions()])
            auth.approve(device.user_code, ANN)
            grant = await poll_device_authorization(
                settings, device, clock=clock, sleep=clock.sleep
            )
            secrets.update({grant.access_token.value.reveal()})
            assert grant.refresh_token is not None
            secrets.add(grant.refresh_token.reveal())
            shown.append(repr(grant))
            app = auth.settings("app", client_secret=CLIENT_SECRET, flow="client_credentials")
            app_grant = await client_credentials(app, clock=clock)
            secrets.add(app_grant.access_token.value.reveal())
            shown.extend([repr(app), repr(app_grant), str(app.public_dict())])
            auth.revoke(saved[-1].reveal(), whole_grant=True)
            try:
                await provider.token()
            except OAuthError as exc:
                shown.append(str(exc))

        run(flow())

    secrets.update(s.reveal() for s in saved)
    entry = run(cache.load("office"))
    shown.extend([repr(settings), repr(entry), repr(provider.settings), str(saved)])
    with engine.connect() as conn:
        stored = " ".join(str(v) for row in conn.execute(select(oauth_tokens_table)) for v in row)
    printed = capsys.readouterr()

    assert len(secrets) >= 8  # client secret, refresh tokens, access tokens, device code
    for secret in secrets:
        encoded = base64.b64encode(f"user={ANN}\x01auth=Bearer {secret}\x01\x01".encode()).decode()
        for where, text in [
            ("logs", caplog.text),
            ("shown", "\n".join(shown)),
            ("database", stored),
            ("output", printed.out + printed.err),
        ]:
            assert secret not in text, f"a secret shows in {where}"
            assert encoded not in text, f"an XOAUTH2 payload shows in {where}"
    assert "new access token for office" in caplog.text  # the log did record the events
    assert sum("sign in again" in text for text in shown) >= 2  # the error paths ran
    assert len(saved) == 2

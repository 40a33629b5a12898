"""The XOAUTH2 test server checks tokens against the authorization server, and mailconduit's
SMTP client with a token provider gets through expiry, refusal and revocation."""

from __future__ import annotations

import base64
import json

import aiosmtplib
import pytest

from mailconduit.errors import AuthenticationError
from mailconduit.oauth import AccessToken, InvalidGrantError, TokenProvider
from mailconduit.smtp import Envelope, SMTPSession
from mailconduit.testing import loopback_connection, run
from mailconduit.testing.oauth import (
    EXCHANGE_REPLIES,
    GMAIL_REFUSAL,
    ManualClock,
    OAuthServer,
    XOAuth2Server,
)
from oauth_support import ANN, SECRET

SCOPE = "https://outlook.office.com/SMTP.Send"


def access_token(auth: OAuthServer, user: str = ANN, scope: str = SCOPE) -> str:
    refresh_token = auth.sign_in("app", user, scope)
    provider = TokenProvider(
        auth.settings("app", client_secret=SECRET, refresh_token=refresh_token),
        name="office",
        clock=auth.clock,
    )
    return run(provider.token()).value.reveal()


async def log_in(port: int, user: str, token: str) -> str:
    """AUTH XOAUTH2 with mailconduit's own session; the server's 235 text, or raises."""
    conn = loopback_connection(port, username=user, password=token, auth_mechanism="xoauth2")
    async with SMTPSession(conn) as session:
        return session.authenticated_as


def message(n: int) -> Envelope:
    return Envelope(
        ANN, (f"rcpt{n}@example.com",), f"Subject: {n}\r\n\r\nbody {n}\r\n".encode(), token=n
    )


def test_a_valid_token_logs_in_and_mail_goes_through(auth: OAuthServer) -> None:
    token = access_token(auth)

    async def scenario(smtp: XOAuth2Server) -> None:
        conn = loopback_connection(
            smtp.port, username=ANN, password=token, auth_mechanism="xoauth2"
        )
        async with SMTPSession(conn) as session:
            envelope = message(1)
            outcome = await session.send(envelope.sender, envelope.recipients, envelope.data)
            assert outcome.sent

    async def main() -> XOAuth2Server:
        async with XOAuth2Server(auth, required_scope=SCOPE) as smtp:
            await scenario(smtp)
        return smtp

    smtp = run(main())
    assert [a.outcome for a in smtp.auth_attempts] == ["ok"]
    assert smtp.messages[0].rcpt_tos == ("rcpt1@example.com",)


@pytest.mark.parametrize(
    ("spoil", "outcome"),
    [
        ("expire", "expired"),
        ("revoke", "revoked"),
        ("scope", "scope"),
        ("user", "user"),
        ("unknown", "unknown"),
    ],
)
def test_bad_tokens_get_exchanges_535_5_7_3(
    auth: OAuthServer, clock: ManualClock, spoil: str, outcome: str
) -> None:
    user = ANN
    token = access_token(auth, scope="other" if spoil == "scope" else SCOPE)
    if spoil == "expire":
        clock.advance(3600)
    elif spoil == "revoke":
        auth.revoke(token, whole_grant=True)
    elif spoil == "user":
        user = "bob@example.com"
    elif spoil == "unknown":
        token = "at-made-up"

    async def main() -> XOAuth2Server:
        async with XOAuth2Server(auth, required_scope=SCOPE) as smtp:
            with pytest.raises(AuthenticationError) as exc:
                await log_in(smtp.port, user, token)
            assert (exc.value.code, exc.value.enhanced) == (535, "5.7.3")
            assert "Authentication unsuccessful" in exc.value.reply
        return smtp

    smtp = run(main())
    assert [a.outcome for a in smtp.auth_attempts] == [outcome]


@pytest.mark.parametrize("refuse", sorted(EXCHANGE_REPLIES))
def test_exchange_refusals_carry_microsofts_text(auth: OAuthServer, refuse: str) -> None:
    token = access_token(auth)

    async def main() -> None:
        async with XOAuth2Server(auth, refuse=refuse) as smtp:
            with pytest.raises(AuthenticationError) as exc:
                await log_in(smtp.port, ANN, token)
            code, enhanced, text = EXCHANGE_REPLIES[refuse].split(" ", 2)
            assert (exc.value.code, exc.value.enhanced) == (int(code), enhanced)
            assert exc.value.reply == text

    run(main())


def test_gmail_style_answers_a_json_challenge_then_535_5_7_8(
    auth: OAuthServer, clock: ManualClock
) -> None:
    token = access_token(auth, scope="https://mail.google.com/")
    clock.advance(3600)

    async def main() -> None:
        async with XOAuth2Server(
            auth, style="google", required_scope="https://mail.google.com/"
        ) as smtp:
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp.port)
            await client.connect()
            blob = base64.b64encode(f"user={ANN}\x01auth=Bearer {token}\x01\x01".encode()).decode()
            challenge = await client.execute_command(b"AUTH", b"XOAUTH2", blob.encode())
            assert challenge.code == 334
            error = json.loads(base64.b64decode(challenge.message))
            assert error == {
                "status": "400",
                "schemes": "Bearer",
                "scope": "https://mail.google.com/",
            }
            final = await client.execute_command(b"")
            assert final.code == 535
            assert final.message.splitlines() == [line[4:] for line in GMAIL_REFUSAL.split("\r\n")]
            await client.quit()
            # mailconduit's own client sees the same refusal as one error
            with pytest.raises(AuthenticationError) as exc:
                await log_in(smtp.port, ANN, token)
            assert (exc.value.code, exc.value.enhanced) == (535, "5.7.8")

    run(main())


def test_mail_before_auth_is_refused_with_530(auth: OAuthServer) -> None:
    async def main() -> None:
        async with XOAuth2Server(auth) as smtp:
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp.port)
            await client.connect()
            assert client.server_auth_methods == ["xoauth2"]
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as exc:
                await client.sendmail(ANN, ["x@example.com"], b"Subject: x\r\n\r\nx\r\n")
            assert exc.value.code == 530
            await client.quit()

    run(main())


def test_app_only_tokens_act_for_the_allowed_mailboxes(auth: OAuthServer) -> None:
    settings = auth.settings("app", client_secret=SECRET, flow="client_credentials")
    token = run(TokenProvider(settings, name="app-only", clock=auth.clock).token()).value.reveal()

    async def main() -> XOAuth2Server:
        async with XOAuth2Server(auth, mailboxes=["reports@example.com"]) as smtp:
            assert await log_in(smtp.port, "reports@example.com", token) == "reports@example.com"
            with pytest.raises(AuthenticationError):
                await log_in(smtp.port, ANN, token)
        return smtp

    assert [a.outcome for a in run(main()).auth_attempts] == ["ok", "user"]


def test_the_server_runs_in_a_thread_for_sync_tests(auth: OAuthServer) -> None:
    token = access_token(auth)
    with XOAuth2Server(auth) as smtp:
        assert run(log_in(smtp.port, ANN, token)) == ANN
    assert [a.outcome for a in smtp.auth_attempts] == ["ok"]


async def send_with_retry(provider: TokenProvider, port: int, envelope: Envelope) -> bool:
    """What the SMTP session will do: a 535 with a token that looked valid gets one
    invalidate, one new token and one more AUTH."""
    for attempt in range(2):
        token = await provider.token()
        conn = loopback_connection(
            port, username=ANN, password=token.value.reveal(), auth_mechanism="xoauth2"
        )
        try:
            async with SMTPSession(conn) as session:
                outcome = await session.send(envelope.sender, envelope.recipients, envelope.data)
                return outcome.sent
        except AuthenticationError:
            if attempt:
                raise
            await provider.invalidate(token)
    return False


def test_a_long_run_across_token_expiries_loses_no_message(
    auth: OAuthServer, clock: ManualClock
) -> None:
    provider = TokenProvider(
        auth.settings("app", client_secret=SECRET, refresh_token=auth.sign_in("app", ANN, SCOPE)),
        name="office",
        clock=clock,
        sleep=clock.sleep,
    )

    async def main() -> tuple[list[bool], XOAuth2Server]:
        sent = []
        async with XOAuth2Server(auth, required_scope=SCOPE) as smtp:
            for n in range(30):  # one new session every 10 minutes: five hours
                sent.append(await send_with_retry(provider, smtp.port, message(n)))
                clock.advance(600)
        return sent, smtp

    sent, smtp = run(main())
    assert all(sent) and len(smtp.messages) == 30
    assert [m.session for m in smtp.messages] == list(range(1, 31))
    assert {a.outcome for a in smtp.auth_attempts} == {"ok"}
    assert 5 <= auth.refreshes <= 6


def test_a_token_refused_although_unexpired_is_replaced_once(auth: OAuthServer) -> None:
    provider = TokenProvider(
        auth.settings("app", client_secret=SECRET, refresh_token=auth.sign_in("app", ANN, SCOPE)),
        name="office",
        clock=auth.clock,
    )

    async def main() -> XOAuth2Server:
        async with XOAuth2Server(auth, required_scope=SCOPE) as smtp:
            first: AccessToken = await provider.token()
            auth.revoke(first.value.reveal())  # the access token alone, e.g. a password reset
            assert await send_with_retry(provider, smtp.port, message(1))
        return smtp

    smtp = run(main())
    assert [a.outcome for a in smtp.auth_attempts] == ["revoked", "ok"]
    assert auth.refreshes == 2


def test_a_refresh_token_revoked_mid_run_stops_with_sign_in_again(
    auth: OAuthServer, clock: ManualClock
) -> None:
    refresh_token = auth.sign_in("app", ANN, SCOPE)
    provider = TokenProvider(
        auth.settings("app", client_secret=SECRET, refresh_token=refresh_token),
        name="office",
        clock=clock,
    )

    async def main() -> tuple[int, XOAuth2Server]:
        sent = 0
        async with XOAuth2Server(auth, required_scope=SCOPE) as smtp:
            for n in range(10):
                if n == 3:
                    auth.revoke(refresh_token, whole_grant=True)
                try:
                    assert await send_with_retry(provider, smtp.port, message(n))
                except InvalidGrantError as exc:
                    assert str(exc).endswith(
                        "sign in again: mailconduit connections authorize office"
                    )
                    break
                sent += 1
                clock.advance(1800)
        return sent, smtp

    sent, smtp = run(main())
    assert sent == 3 and len(smtp.messages) == 3
    # after a new sign-in a fresh provider (a resumed run) carries on
    again = TokenProvider(
        auth.settings("app", client_secret=SECRET, refresh_token=auth.sign_in("app", ANN, SCOPE)),
        name="office",
        clock=clock,
    )

    async def resume() -> bool:
        async with XOAuth2Server(auth, required_scope=SCOPE) as smtp:
            return await send_with_retry(again, smtp.port, message(3))

    assert run(resume())

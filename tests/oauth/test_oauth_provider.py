"""The token provider: renewal ahead of expiry, one refresh for many askers, rotation,
invalidation after a refused token, and the errors that stop a run."""

from __future__ import annotations

import asyncio
import logging

import pytest

from mailconduit.config import Secret
from mailconduit.oauth import (
    AccessToken,
    InvalidGrantError,
    LockTimeoutError,
    MemoryTokenCache,
    NotSignedInError,
    TokenEndpointUnreachableError,
    TokenProvider,
    TokenServerError,
)
from mailconduit.testing import run
from mailconduit.testing.oauth import ManualClock, OAuthServer
from oauth_support import ANN, SECRET, authorization_server


def provider_for(
    auth: OAuthServer, clock: ManualClock, refresh_token: str | None, **options: object
) -> TokenProvider:
    settings = auth.settings("app", client_secret=SECRET, refresh_token=refresh_token, scope="smtp")
    options.setdefault("sleep", clock.sleep)
    return TokenProvider(settings, name="office", clock=clock, **options)  # type: ignore[arg-type]


@pytest.fixture
def provider(auth: OAuthServer, clock: ManualClock) -> TokenProvider:
    """The provider of a connection ANN signed in."""
    return provider_for(auth, clock, auth.sign_in("app", ANN, "smtp"))


def test_the_first_token_is_fetched_then_reused(provider: TokenProvider, auth: OAuthServer) -> None:
    async def twice() -> tuple[AccessToken, AccessToken]:
        return await provider.token(), await provider.token()

    first, second = run(twice())
    assert first is second
    assert auth.check_access_token(first.value.reveal()).valid
    assert auth.refreshes == 1


def test_twenty_coroutines_asking_at_once_cause_one_refresh(
    provider: TokenProvider, auth: OAuthServer
) -> None:
    async def crowd() -> list[AccessToken]:
        return await asyncio.gather(*(provider.token() for _ in range(20)))

    tokens = run(crowd())
    assert len({t.value.reveal() for t in tokens}) == 1
    assert auth.refreshes == 1


def test_renewal_comes_five_minutes_before_expiry(
    provider: TokenProvider, auth: OAuthServer, clock: ManualClock
) -> None:
    async def scenario() -> list[str]:
        seen = [(await provider.token()).value.reveal()]
        clock.advance(3600 - 301)
        seen.append((await provider.token()).value.reveal())
        clock.advance(2)  # 299 s left: inside the five minutes
        seen.append((await provider.token()).value.reveal())
        return seen

    first, still, renewed = run(scenario())
    assert first == still != renewed
    assert auth.refreshes == 2
    assert auth.check_access_token(first).valid  # renewed before the old one expired


def test_short_lived_tokens_renew_at_ninety_percent(clock: ManualClock) -> None:
    with authorization_server(clock, access_token_lifetime=60) as auth:
        provider = provider_for(auth, clock, auth.sign_in("app", ANN, "smtp"))

        async def scenario() -> None:
            await provider.token()
            clock.advance(53.9)
            await provider.token()
            assert auth.refreshes == 1
            clock.advance(0.2)
            await provider.token()

        run(scenario())
        assert auth.refreshes == 2


def test_a_run_crossing_many_expiries_always_holds_a_valid_token(
    provider: TokenProvider, auth: OAuthServer, clock: ManualClock
) -> None:
    async def long_run() -> list[str]:
        statuses = []
        for _ in range(60):  # five hours in five-minute steps
            token = await provider.token()
            statuses.append(auth.check_access_token(token.value.reveal()).status)
            clock.advance(300)
        return statuses

    assert set(run(long_run())) == {"valid"}
    assert 5 <= auth.refreshes <= 6


@pytest.mark.parametrize("callback_kind", ["sync", "async"])
def test_a_rotated_refresh_token_is_handed_over_and_used_next(
    clock: ManualClock, callback_kind: str
) -> None:
    with authorization_server(clock, rotate_refresh_tokens=True) as auth:
        initial = auth.sign_in("app", ANN, "smtp")
        saved: list[Secret] = []

        def keep(token: Secret) -> None:
            saved.append(token)

        async def keep_async(token: Secret) -> None:
            saved.append(token)

        provider = provider_for(
            auth, clock, initial, on_refresh_token=keep if callback_kind == "sync" else keep_async
        )

        async def two_refreshes() -> None:
            await provider.token()
            clock.advance(3600)
            await provider.token()

        run(two_refreshes())
        assert auth.refreshes == 2  # the second used the rotated token: the first is dead
        assert len(saved) == 2
        assert all(isinstance(s, Secret) for s in saved)
        assert saved[0].reveal() not in (initial, saved[1].reveal())


def test_a_revoked_refresh_token_is_invalid_grant_naming_the_command(
    auth: OAuthServer, clock: ManualClock
) -> None:
    token = auth.sign_in("app", ANN, "smtp")
    auth.revoke(token, whole_grant=True)
    provider = provider_for(auth, clock, token)
    with pytest.raises(InvalidGrantError) as exc:
        run(provider.token())
    assert exc.value.connection == "office"
    assert str(exc.value).endswith("sign in again: mailconduit connections authorize office")


def test_no_refresh_token_yet_says_sign_in(auth: OAuthServer, clock: ManualClock) -> None:
    with pytest.raises(NotSignedInError) as exc:
        run(provider_for(auth, clock, None).token())
    assert str(exc.value) == (
        "the connection has not been signed in; sign in: mailconduit connections authorize office"
    )


def test_client_credentials_tokens_renew_without_a_refresh_token(
    auth: OAuthServer, clock: ManualClock
) -> None:
    settings = auth.settings("app", client_secret=SECRET, flow="client_credentials", scope="smtp")
    cache = MemoryTokenCache()
    provider = TokenProvider(settings, name="app-only", cache=cache, clock=clock, sleep=clock.sleep)

    async def scenario() -> None:
        await provider.token()
        clock.advance(3600)
        await provider.token()

    run(scenario())
    assert auth.issued["client_credentials"] == 2
    entry = run(cache.load("app-only"))
    assert entry is not None and entry.refresh_token is None


def test_invalidate_after_a_refused_token_refreshes_once_for_all_sessions(
    provider: TokenProvider, auth: OAuthServer
) -> None:
    async def refused_everywhere() -> list[AccessToken]:
        bad = await provider.token()
        await asyncio.gather(*(provider.invalidate(bad) for _ in range(20)))
        return await asyncio.gather(*(provider.token() for _ in range(20)))

    tokens = run(refused_everywhere())
    assert len({t.value.reveal() for t in tokens}) == 1
    assert auth.refreshes == 2


def test_invalidating_an_old_token_keeps_the_new_one(
    provider: TokenProvider, auth: OAuthServer
) -> None:
    async def scenario() -> tuple[AccessToken, AccessToken]:
        old = await provider.token()
        await provider.invalidate(old)
        new = await provider.token()
        await provider.invalidate(old)  # a late session reporting the same old token
        return new, await provider.token()

    new, again = run(scenario())
    assert new is again
    assert auth.refreshes == 2


def test_a_failed_early_renewal_keeps_serving_the_valid_token(
    provider: TokenProvider, auth: OAuthServer, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        first = await provider.token()
        clock.advance(3600 - 120)  # two minutes left: time to renew
        auth.fail(503, times=50)
        with caplog.at_level(logging.WARNING, logger="mailconduit.oauth"):
            assert await provider.token() is first
            assert await provider.token() is first  # no new try for a few seconds
        assert [r.error for r in auth.requests] == ["", "scripted: 503"]  # one try, not two
        clock.advance(120)  # now it has expired: the failure surfaces
        with pytest.raises(TokenServerError) as exc:
            await provider.token()
        assert exc.value.retriable and exc.value.connection == "office"

    run(scenario())
    assert "could not renew the access token of office early" in caplog.text


def test_an_unreachable_endpoint_without_any_token_is_retriable(clock: ManualClock) -> None:
    with authorization_server(clock) as auth:
        provider = provider_for(auth, clock, auth.sign_in("app", ANN, "smtp"))
    with pytest.raises(TokenEndpointUnreachableError) as exc:  # the server is gone
        run(provider.token())
    assert exc.value.retriable


def test_providers_sharing_a_cache_refresh_once(auth: OAuthServer, clock: ManualClock) -> None:
    cache = MemoryTokenCache()
    token = auth.sign_in("app", ANN, "smtp")
    # The waiting provider polls with real sleeps: the manual clock's instant sleeps would
    # run its lock's expiry out while the holder's real HTTP request is still under way.
    one = provider_for(auth, clock, token, cache=cache, sleep=asyncio.sleep)
    two = provider_for(auth, clock, token, cache=cache, sleep=asyncio.sleep)

    async def both() -> tuple[AccessToken, AccessToken]:
        return await asyncio.gather(one.token(), two.token())

    a, b = run(both())
    assert a.value == b.value
    assert auth.refreshes == 1


def test_a_cached_token_for_other_settings_is_not_used(
    auth: OAuthServer, clock: ManualClock
) -> None:
    cache = MemoryTokenCache()
    token = auth.sign_in("app", ANN, "smtp offline")
    run(provider_for(auth, clock, token, cache=cache).token())
    wider = auth.settings("app", client_secret=SECRET, refresh_token=token, scope="smtp offline")
    run(TokenProvider(wider, name="office", cache=cache, clock=clock).token())
    assert auth.refreshes == 2


def test_after_a_new_sign_in_the_configured_token_wins_over_a_dead_cached_one(
    clock: ManualClock,
) -> None:
    with authorization_server(clock, rotate_refresh_tokens=True) as auth:
        cache = MemoryTokenCache()
        old = auth.sign_in("app", ANN, "smtp")
        run(provider_for(auth, clock, old, cache=cache).token())  # cache holds a rotated token
        entry = run(cache.load("office"))
        assert entry is not None and entry.refresh_token is not None
        auth.revoke(entry.refresh_token.reveal(), whole_grant=True)
        clock.advance(3600)
        fresh = auth.sign_in("app", ANN, "smtp")  # "connections authorize" again
        token = run(provider_for(auth, clock, fresh, cache=cache).token())
        assert auth.check_access_token(token.value.reveal()).valid
        errors = [r.error for r in auth.requests]
        assert errors == ["", "invalid_grant", ""]


def test_a_lock_left_by_a_dead_holder_frees_itself(auth: OAuthServer, clock: ManualClock) -> None:
    cache = MemoryTokenCache(clock=clock)
    run(cache.try_lock("office", "crashed-host:1", 3))
    provider = provider_for(auth, clock, auth.sign_in("app", ANN, "smtp"), cache=cache, lock_ttl=5)
    start = clock.now
    assert auth.check_access_token(run(provider.token()).value.reveal()).valid
    assert 3 <= clock.now - start < 5
    assert auth.refreshes == 1


def test_a_lock_held_past_the_wait_is_a_retriable_error(
    auth: OAuthServer, clock: ManualClock
) -> None:
    cache = MemoryTokenCache(clock=clock)
    run(cache.try_lock("office", "stuck-host:1", 1000))
    provider = provider_for(auth, clock, auth.sign_in("app", ANN, "smtp"), cache=cache, lock_ttl=5)
    with pytest.raises(LockTimeoutError) as exc:
        run(provider.token())
    assert exc.value.retriable and exc.value.connection == "office"
    assert auth.refreshes == 0

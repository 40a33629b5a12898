"""The SQL token cache on SQLite and PostgreSQL: tokens encrypted at rest, the refresh lock,
and two processes sharing one database refreshing once."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, select

from mailconduit.config import Secret
from mailconduit.crypto import decrypt, encrypt
from mailconduit.errors import ConfigError
from mailconduit.oauth import AccessToken, CachedToken, SqlTokenCache, oauth_tokens_table
from mailconduit.testing import run
from mailconduit.testing.oauth import OAuthServer

SECRET = "app-secret-1"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tokens.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = create_engine(db_url, connect_args={"timeout": 10} if db_url.startswith("sqlite") else {})
    yield eng
    eng.dispose()


def cache_on(engine: Engine) -> SqlTokenCache:
    return SqlTokenCache(engine, encrypt=encrypt, decrypt=lambda text: decrypt(text, name="office"))


def entry(access: str = "at-plain-1", refresh: str | None = "rt-plain-1") -> CachedToken:
    token = AccessToken(
        Secret(access), expires_at=2_000_003_600.5, issued_at=2_000_000_000.5, scope="smtp"
    )
    return CachedToken("fp-1", token, Secret(refresh) if refresh else None)


def test_tokens_round_trip_and_are_stored_encrypted(engine: Engine) -> None:
    cache = cache_on(engine)
    run(cache.save("office", entry()))
    loaded = run(cache.load("office"))
    assert loaded == entry()
    with engine.connect() as conn:
        row = conn.execute(select(oauth_tokens_table)).one()
    stored = " ".join(str(v) for v in row)
    assert "at-plain-1" not in stored and "rt-plain-1" not in stored
    assert row.access_token and row.refresh_token  # ciphertext is there
    assert run(cache.load("other")) is None


def test_a_token_encrypted_with_another_key_counts_as_absent(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    run(cache_on(engine).save("office", entry()))

    def refuse(text: str) -> str:
        raise ConfigError("cannot decrypt")

    other = SqlTokenCache(engine, encrypt=encrypt, decrypt=refuse)
    loaded = run(other.load("office"))
    assert loaded == CachedToken("fp-1", None, None)
    assert "cannot be decrypted" in caplog.text


def test_discard_drops_only_the_named_access_token(engine: Engine) -> None:
    cache = cache_on(engine)
    run(cache.save("office", entry()))
    run(cache.discard("office", Secret("at-someone-else")))
    assert run(cache.load("office")) == entry()
    run(cache.discard("office", Secret("at-plain-1")))
    assert run(cache.load("office")) == CachedToken("fp-1", None, Secret("rt-plain-1"))
    run(cache.clear("office"))
    assert run(cache.load("office")) == CachedToken("", None, None)


def test_the_lock_has_one_owner_until_let_go_or_expired(engine: Engine) -> None:
    cache = cache_on(engine)
    assert run(cache.try_lock("office", "a", 60))
    assert run(cache.try_lock("office", "a", 60))  # its owner may take it again
    assert not run(cache.try_lock("office", "b", 60))
    assert run(cache.try_lock("other", "b", 60))  # one lock per key
    run(cache.unlock("office", "b"))  # not b's to let go
    assert not run(cache.try_lock("office", "b", 60))
    run(cache.unlock("office", "a"))
    assert run(cache.try_lock("office", "b", 0))
    assert run(cache.try_lock("office", "c", 60))  # b's lock expired at once


def test_saving_keeps_the_lock_and_the_table_is_created_once(engine: Engine) -> None:
    cache = cache_on(engine)
    assert run(cache.try_lock("office", "a", 60))
    run(cache.save("office", entry()))
    assert not run(cache_on(engine).try_lock("office", "b", 60))


CHILD = """
import asyncio, hashlib, pathlib, sys, time
from sqlalchemy import create_engine
from mailconduit.crypto import decrypt, encrypt
from mailconduit.oauth import SqlTokenCache, TokenProvider, validate_oauth_settings

endpoint, db_url, refresh_token, go = sys.argv[1:5]
settings = validate_oauth_settings({
    "provider": "generic", "client_id": "app", "client_secret": "app-secret-1",
    "refresh_token": refresh_token, "token_endpoint": endpoint, "scope": "smtp",
})
engine = create_engine(db_url, connect_args={"timeout": 10} if db_url.startswith("sqlite") else {})
cache = SqlTokenCache(engine, encrypt=encrypt, decrypt=lambda t: decrypt(t, name="office"))
print("ready", flush=True)
for _ in range(1200):
    if pathlib.Path(go).exists():
        break
    time.sleep(0.05)
print("asking", flush=True)
token = asyncio.run(TokenProvider(settings, name="office", cache=cache).token())
print("token", hashlib.sha256(token.value.reveal().encode()).hexdigest(), flush=True)
"""


def expect(process: subprocess.Popen[str], word: str) -> str:
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    assert line.startswith(word), f"child said {line!r}, stderr: {process.communicate()[1]}"
    return line


def test_two_processes_sharing_the_database_refresh_once(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    cache_on(engine)  # the table exists before either child starts
    go = tmp_path / "go"
    with OAuthServer(access_token_lifetime=3600) as auth:
        auth.register_client("app", SECRET, scopes=["smtp"])
        refresh_token = auth.sign_in("app", "ann@example.com", "smtp")
        auth.hold()
        children = [
            subprocess.Popen(
                [sys.executable, "-c", CHILD, auth.token_endpoint, db_url, refresh_token, str(go)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        try:
            for child in children:
                expect(child, "ready")
            go.touch()
            for child in children:
                expect(child, "asking")
            arrived = threading.Event()
            for _ in range(600):  # until the first refresh waits at the gate
                if auth.held:
                    arrived.set()
                    break
                arrived.wait(0.05)
            assert arrived.is_set()
            arrived.wait(0.3)  # the other child now spins on the lock
            assert auth.held == 1  # ...instead of sending a second request
            auth.release()
            tokens = {expect(child, "token") for child in children}
            for child in children:
                assert child.wait(60) == 0
        finally:
            auth.release()
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
        assert len(tokens) == 1
        assert auth.refreshes == 1

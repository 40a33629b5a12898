"""Console accounts, API tokens, sessions, the secret key: ``mailconduit users`` and the store."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest

from mailconduit.accounts import users
from mailconduit.errors import ConfigError, NotFoundError
from mailconduit.web.security import load_secret_key, safe_next


def test_create_list_delete_with_the_cli(cli, home: Path) -> None:  # type: ignore[no-untyped-def]
    created = cli("users", "create", "alice", "--password-stdin", stdin="s3cret-enough\n")
    assert created.code == 0, created.err
    assert "s3cret-enough" not in created.output
    listed = cli("users", "list", "--json")
    assert [u["name"] for u in json.loads(listed.out)] == ["alice"]
    assert users.authenticate("alice", "s3cret-enough")
    assert not users.authenticate("alice", "s3cret-enoug")
    assert b"s3cret-enough" not in (home / "mailconduit.db").read_bytes()
    assert cli("users", "delete", "alice", "--yes").code == 0
    assert not users.authenticate("alice", "s3cret-enough")
    assert cli("users", "list").out.startswith("no users yet")


def test_cli_refuses_bad_input(cli) -> None:  # type: ignore[no-untyped-def]
    short = cli("users", "create", "bob", "--password-stdin", stdin="short\n")
    assert short.code == 2
    assert "password: must be at least 8 characters long" in short.err
    bad_name = cli("users", "create", "-x y", "--password-stdin", stdin="long enough pass\n")
    assert bad_name.code == 2
    assert cli("users", "create", "bob", "--password-stdin", stdin="long enough pass\n").code == 0
    duplicate = cli("users", "create", "bob", "--password-stdin", stdin="long enough pass\n")
    assert duplicate.code == 2 and "already exists" in duplicate.err
    assert cli("users", "delete", "nobody", "--yes").code == 2
    assert cli("users", "token", "nobody").code == 2


def test_token_is_printed_once_and_stored_as_a_digest(cli, home: Path) -> None:  # type: ignore[no-untyped-def]
    cli("users", "create", "robot", "--password-stdin", stdin="robot-password\n")
    issued = cli("users", "token", "robot", "--label", "nightly job")
    assert issued.code == 0
    token = issued.out.strip()
    assert token.startswith(users.TOKEN_PREFIX) and len(token) > 40
    assert users.token_user(token) == "robot"
    assert token.encode() not in (home / "mailconduit.db").read_bytes()
    assert json.loads(cli("users", "list", "--json").out)[0]["tokens"] == 1
    revoked = cli("users", "token", "robot", "--revoke-all")
    assert "revoked 1 token" in revoked.out
    assert users.token_user(token) is None


def test_tokens_and_sessions_die_with_their_user() -> None:
    users.create_user("carol", "carol-password")
    token = users.issue_token("carol")
    session_id, session = users.create_session("carol")
    assert users.valid_session(session_id) == session
    users.delete_user("carol")
    assert users.token_user(token) is None
    assert users.valid_session(session_id) is None
    with pytest.raises(NotFoundError):
        users.delete_user("carol")


def test_password_change_ends_sessions(cli) -> None:  # type: ignore[no-untyped-def]
    users.create_user("dave", "first-password")
    session_id, _ = users.create_session("dave")
    assert cli("users", "password", "dave", "--password-stdin", stdin="second-password\n").code == 0
    assert users.valid_session(session_id) is None
    assert users.authenticate("dave", "second-password")
    assert not users.authenticate("dave", "first-password")


def test_sessions_expire_and_end(monkeypatch: pytest.MonkeyPatch) -> None:
    users.create_user("erin", "erin-password")
    session_id, _ = users.create_session("erin")
    users.end_session(session_id)
    assert users.valid_session(session_id) is None
    later_id, _ = users.create_session("erin")
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + users.SESSION_SECONDS + 1)
    assert users.valid_session(later_id) is None


def test_unknown_tokens_and_names() -> None:
    assert users.token_user("") is None
    assert users.token_user("not-a-token") is None
    assert users.token_user(users.TOKEN_PREFIX + "x" * 300) is None
    assert not users.authenticate("ghost", "whatever-password")
    with pytest.raises(ConfigError) as info:
        users.create_user("a b", "long enough pass")
    assert info.value.field == "name"


def test_secret_key_file_is_private_and_stable(home: Path) -> None:
    first = load_secret_key()
    path = home / "web-secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert load_secret_key() == first


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/connections", "/connections"),
        ("/inbox?q=a", "/inbox?q=a"),
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("javascript:alert(1)", "/"),
        ("", "/"),
        (None, "/"),
    ],
)
def test_safe_next(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


def test_serve_refuses_a_public_address_without_allow_remote(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("serve", "--host", "0.0.0.0", "--port", "8999")
    assert result.code == 2
    assert "--allow-remote" in result.err
    help_text = cli("serve", "--help").out
    for option in (
        "--host",
        "--port",
        "--allow-remote",
        "--allowed-host",
        "--max-upload-mb",
        "--no-sink",
    ):
        assert option in help_text

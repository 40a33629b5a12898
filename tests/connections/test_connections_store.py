"""Stored connections: SQLite and PostgreSQL, encryption at rest, environment URLs, import/export."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet

from mailconduit.config import Security
from mailconduit.connections import store
from mailconduit.connections.transfer import dump_connections, load_connections
from mailconduit.errors import ConfigError, NotFoundError

PASSWORD = "Tr0ub4dor&3-unique-marker"
DATA = {
    "name": "corp",
    "server_url": "smtp.example.com",
    "port": 587,
    "use_ssl": True,
    "username": "ann@example.com",
    "password": PASSWORD,
}


def files_contain(root: Path, needle: str) -> list[Path]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and needle.encode() in path.read_bytes():
            hits.append(path)
    return hits


def test_round_trip_and_encryption_at_rest(home: Path) -> None:
    store.create(DATA)
    conn = store.get("corp")
    assert conn.password is not None and conn.password.reveal() == PASSWORD
    assert conn.security is Security.STARTTLS
    assert files_contain(home, PASSWORD) == []  # the db, its WAL and the key file
    key = home / "secret.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_duplicate_name_is_a_field_error() -> None:
    store.create(DATA)
    with pytest.raises(ConfigError) as exc:
        store.create(DATA)
    assert exc.value.field == "name" and "already exists" in str(exc.value)


def test_local_is_reserved() -> None:
    with pytest.raises(ConfigError) as exc:
        store.create({**DATA, "name": "local"})
    assert "reserved" in str(exc.value)


def test_update_keeps_password_unless_server_changes() -> None:
    store.create(DATA)
    conn = store.update_connection("corp", {"timeout_ms": 5000, "use_html_body": True})
    assert conn.timeout_ms == 5000 and conn.use_html_body
    assert conn.password is not None and conn.password.reveal() == PASSWORD
    with pytest.raises(ConfigError) as exc:
        store.update_connection("corp", {"server_url": "evil.example.net"})
    assert exc.value.field == "password" and "entered again" in str(exc.value)
    assert store.get("corp").server_url == "smtp.example.com"  # nothing was written
    moved = store.update_connection("corp", {"server_url": "new.example.net", "password": "x2"})
    assert moved.password is not None and moved.password.reveal() == "x2"


def test_port_change_rederives_security_and_ssl_toggle() -> None:
    store.create(DATA)
    conn = store.update_connection("corp", {"port": 465, "password": PASSWORD})
    assert conn.security is Security.TLS
    conn = store.update_connection("corp", {"security": "starttls"})
    assert conn.security is Security.STARTTLS and conn.use_ssl
    conn = store.update_connection("corp", {"use_ssl": False, "allow_insecure_auth": True})
    assert conn.security is Security.NONE


def test_rename_and_delete() -> None:
    store.create(DATA)
    store.update_connection("corp", {"name": "corp2"})
    with pytest.raises(NotFoundError):
        store.get("corp")
    store.delete_connection("corp2")
    with pytest.raises(NotFoundError):
        store.delete_connection("corp2")


def test_key_from_environment_and_wrong_key(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    monkeypatch.setenv("MAILCONDUIT_KEY", Fernet.generate_key().decode())
    store.create(DATA)
    assert not (home / "secret.key").exists()
    monkeypatch.setenv("MAILCONDUIT_KEY", Fernet.generate_key().decode())
    with pytest.raises(ConfigError) as exc:
        store.get("corp")
    assert "cannot be decrypted" in str(exc.value) and PASSWORD not in str(exc.value)
    monkeypatch.setenv("MAILCONDUIT_KEY", "short")
    with pytest.raises(ConfigError):
        store.get("corp")


def test_environment_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILCONDUIT_CONN_MY_RELAY", "smtps://bob%40example.com:p%25w@mail.example.com:465")
    conn = store.get("my-relay")
    assert conn.origin == "env" and conn.username == "bob@example.com"
    assert conn.password is not None and conn.password.reveal() == "p%w"
    assert "my_relay" in store.env_connections()
    with pytest.raises(ConfigError):
        store.update_connection("my-relay", {"port": 25})
    with pytest.raises(ConfigError):
        store.create({**DATA, "name": "my-relay"})


def test_bad_environment_url_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILCONDUIT_CONN_BROKEN", "smtps://u:p@bad host:465")
    with pytest.raises(ConfigError) as exc:
        store.get("broken")
    assert "MAILCONDUIT_CONN_BROKEN" in str(exc.value)


def test_export_leaves_passwords_out_unless_asked() -> None:
    store.create(DATA)
    text = dump_connections(store.list_stored())
    assert PASSWORD not in text
    doc = yaml.safe_load(text)
    assert doc["connections"][0]["server_url"] == "smtp.example.com"
    with_pw = json.loads(dump_connections(store.list_stored(), fmt="json", include_passwords=True))
    assert with_pw["connections"][0]["password"] == PASSWORD


def test_import_is_all_or_nothing(home: Path) -> None:
    good = dict(DATA, name="one")
    bad = dict(DATA, name="two", port=0)
    with pytest.raises(ConfigError) as exc:
        load_connections(yaml.safe_dump({"connections": [good, bad]}))
    assert "two.port" in str(exc.value)
    assert store.list_stored() == []
    assert load_connections(yaml.safe_dump({"connections": [good]})) == ["one"]
    with pytest.raises(ConfigError):
        load_connections(json.dumps([good]), fmt="json")
    load_connections(json.dumps([dict(good, timeout_ms=1234)]), fmt="json", replace=True)
    assert store.get("one").timeout_ms == 1234


def test_import_without_password_says_which() -> None:
    entry = {k: v for k, v in DATA.items() if k != "password"}
    with pytest.raises(ConfigError) as exc:
        load_connections(yaml.safe_dump([entry]))
    assert "corp.password" in str(exc.value)


def test_unreadable_import_file() -> None:
    with pytest.raises(ConfigError) as exc:
        load_connections("connections: [unclosed")
    assert "\n" not in str(exc.value)


@pytest.mark.postgres
def test_same_code_on_postgresql(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILCONDUIT_DB", pg_url)
    store.create(DATA)
    assert store.get("corp").password.reveal() == PASSWORD  # type: ignore[union-attr]
    with pytest.raises(ConfigError):
        store.create(DATA)
    store.record_test("corp", ok=True, message="fine")
    assert store.last_tests()["corp"].ok
    import psycopg

    with psycopg.connect(pg_url) as db:
        rows = db.execute("SELECT settings, password_token FROM connections").fetchall()
    assert rows and all(PASSWORD not in (s + (t or "")) for s, t in rows)


def test_unreachable_database_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILCONDUIT_DB", "postgresql://bob:hunter2@127.0.0.1:1/nope")
    with pytest.raises(ConfigError) as exc:
        store.list_stored()
    assert "hunter2" not in str(exc.value) and "MAILCONDUIT_DB" in str(exc.value)

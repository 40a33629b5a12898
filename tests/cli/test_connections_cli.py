"""``connections create`` and ``edit``: each flag sets its field, and edit keeps what it is not given."""

from __future__ import annotations

import json
from typing import Any

import pytest

#: Every field option of create and edit, with a value that is not the field's default, and
#: what the stored connection then holds.
FLAGS: list[tuple[list[str], str, Any]] = [
    (["--server-url", "smtp.example.com"], "server_url", "smtp.example.com"),
    (["--port", "2525"], "port", 2525),
    (["--username", "me@example.com"], "username", "me@example.com"),
    (["--ssl"], "use_ssl", True),
    (["--html-body"], "use_html_body", True),
    (["--timeout-ms", "1234"], "timeout_ms", 1234),
    (["--agent", "north"], "agent", "north"),
    (["--implementation-type", "celery"], "implementation_type", "celery"),
    (["--inactive"], "is_active", False),
    (["--no-target"], "is_target", False),
    (["--from", "sender@example.com"], "from_address", "sender@example.com"),
    (["--from-name", "Billing"], "from_name", "Billing"),
    (["--reply-to", "help@example.com"], "reply_to", "help@example.com"),
    (["--no-verify-tls"], "verify_tls", False),
    (["--security", "starttls"], "security", "starttls"),
    (["--ehlo-hostname", "client.example.com"], "ehlo_hostname", "client.example.com"),
    (["--auth", "login"], "auth_mechanism", "login"),
    (["--allow-insecure-auth"], "allow_insecure_auth", True),
    (["--concurrency", "7"], "concurrency", 7),
    (["--rate-per-second", "2.5"], "rate_per_second", 2.5),
    (["--rate-per-minute", "60"], "rate_per_minute", 60.0),
    (["--rate-per-hour", "600"], "rate_per_hour", 600.0),
    (["--daily-cap", "900"], "daily_cap", 900),
    (["--messages-per-connection", "3"], "messages_per_connection", 3),
]
#: Fields that move with another: --ssl and --security are two views of one setting.
MOVES_WITH = {"use_ssl": {"security"}, "security": {"use_ssl"}}


def _shown(cli: Any, name: str) -> dict[str, Any]:
    result = cli("connections", "show", name, "--json")
    assert result.code == 0, result.output
    shown: dict[str, Any] = json.loads(result.out)
    return shown


def test_create_sets_the_field_of_every_flag(cli: Any) -> None:
    args = [arg for flag, _field, _value in FLAGS for arg in flag]
    result = cli("connections", "create", "all", *args, "--password-stdin", stdin="pw\n")
    assert result.code == 0, result.output
    shown = _shown(cli, "all")
    assert {field: shown[field] for _flag, field, _value in FLAGS} == {
        field: value for _flag, field, value in FLAGS
    }
    assert shown["has_password"] is True


@pytest.mark.parametrize(("flag", "field", "value"), FLAGS, ids=[f[0][0] for f in FLAGS])
def test_edit_changes_only_the_field_given(cli: Any, flag: list[str], field: str, value: Any) -> None:
    created = cli("connections", "create", "one", "--server-url", "127.0.0.1", "--port", "25",
                  "--auth", "none", "--username", "base@example.com", "--password-stdin",
                  stdin="pw\n")  # fmt: skip
    assert created.code == 0, created.output
    before = _shown(cli, "one")
    result = cli("connections", "edit", "one", *flag)
    assert result.code == 0, result.output
    after = _shown(cli, "one")
    assert after[field] == value
    changed = {k for k in after if after[k] != before[k]}
    # a new server or port forgets the password; nothing else moves
    assert changed <= {field, "has_password", *MOVES_WITH.get(field, ())}


def test_edit_renames_and_takes_a_password_from_the_environment(
    cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = cli("connections", "create", "old", "--server-url", "127.0.0.1", "--port", "25",
                  "--auth", "none")  # fmt: skip
    assert created.code == 0, created.output
    monkeypatch.setenv("MC_TEST_PASSWORD", "from-env")
    result = cli("connections", "edit", "old", "--name", "new", "--password-env", "MC_TEST_PASSWORD",
                 "--json")  # fmt: skip
    assert result.code == 0, result.output
    assert json.loads(result.out)["name"] == "new"
    assert _shown(cli, "new")["has_password"] is True
    assert cli("connections", "show", "old").code == 2


def test_both_password_sources_are_refused_in_one_line(cli: Any) -> None:
    result = cli("connections", "create", "x", "--server-url", "127.0.0.1", "--password-stdin",
                 "--password-env", "HOME", stdin="pw\n")  # fmt: skip
    assert result.code == 2
    assert result.err.count("\n") == 1 and "password" in result.err

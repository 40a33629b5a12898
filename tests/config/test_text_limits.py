"""Length caps on every text field: one table (config.TEXT_LIMITS) for connections, exports
and console users; a value over its cap is refused naming the field, without quoting it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailconduit.accounts import users
from mailconduit.config import (
    CONNECTION_FIELDS,
    TEXT_LIMITS,
    validate_connection,
    validate_export_spec,
)
from mailconduit.errors import ConfigError

CONNECTION = {
    "name": "relay",
    "server_url": "127.0.0.1",
    "port": 2525,
    "auth_mechanism": "none",
}
EXPORT = {"source": "people.csv", "to": "{{ email }}", "subject": "s", "body": "b"}


def refusal(call: Any, data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        call(data)
    return info.value


def test_the_table_covers_every_connection_field() -> None:
    assert set(CONNECTION_FIELDS) - {"origin"} == set(TEXT_LIMITS["connection"])


def test_a_900_kib_display_name_is_refused_by_name() -> None:
    error = refusal(validate_connection, {**CONNECTION, "from_name": "x" * 900 * 1024})
    assert [e.field for e in error.errors] == ["from_name"]
    assert "is too long: 921600 characters, at most 256" in str(error)
    assert len(str(error)) < 200


@given(
    field=st.sampled_from(sorted(TEXT_LIMITS["connection"])),
    extra=st.integers(1, 5000),
    char=st.sampled_from(["x", "é", "\u4e2d", "\U0001f600"]),
)
def test_every_connection_field_over_its_cap_is_named(field: str, extra: int, char: str) -> None:
    limit = TEXT_LIMITS["connection"][field]
    error = refusal(validate_connection, {**CONNECTION, field: char * (limit + extra)})
    assert [e.field for e in error.errors] == [field]
    assert f"at most {limit}" in str(error) and char * 50 not in str(error)


@given(field=st.sampled_from(["from_name", "username", "server_url", "ehlo_hostname"]))
def test_a_value_at_its_cap_is_not_refused_for_its_length(field: str) -> None:
    limit = TEXT_LIMITS["connection"][field]
    try:
        validate_connection({**CONNECTION, field: "a" * limit})
    except ConfigError as error:  # other rules (a host name's shape...) may still apply
        assert all("too long" not in e.message for e in error.errors)


@given(
    field=st.sampled_from(["to", "subject", "body", "where", "order_by", "encoding", "run_id"]),
    extra=st.integers(1, 100),
)
def test_export_settings_over_their_cap_are_named(field: str, extra: int) -> None:
    limit = TEXT_LIMITS["export"][field]
    error = refusal(validate_export_spec, {**EXPORT, field: "y" * (limit + extra)})
    assert [e.field for e in error.errors] == [field]
    assert f"at most {limit}" in str(error)


def test_export_aliases_lists_and_unknown_fields() -> None:
    limit = TEXT_LIMITS["export"]["from_"]
    error = refusal(validate_export_spec, {**EXPORT, "from": "z" * (limit + 1)})
    assert [e.field for e in error.errors] == ["from"]
    error = refusal(validate_export_spec, {**EXPORT, "attach": ["a.pdf", "b" * 5000]})
    assert "item 2 is too long" in str(error)
    error = refusal(validate_export_spec, {**EXPORT, "q" * 10_000: 1})
    assert len(str(error)) < 200 and "is no field name (10000 characters)" in str(error)
    error = refusal(validate_export_spec, {**EXPORT, "colour": "w" * 100_000})
    assert "at most 65536" in str(error)


def test_rows_of_a_python_source_are_not_settings() -> None:
    rows = [{"email": "a@example.com", "note": "n" * 100_000}]
    assert validate_export_spec({**EXPORT, "source": rows}).source is rows


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: users.create_user("u" * 65, "long enough password"), "name"),
        (lambda: users.create_user("ann", "p" * (users.MAX_PASSWORD_LENGTH + 1)), "password"),
    ],
)
def test_user_fields(call: Any, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        call()
    assert info.value.field == field and "too long" in str(info.value)


def test_token_label_is_refused_not_cut() -> None:
    users.create_user("ann", "long enough password")
    with pytest.raises(ConfigError) as info:
        users.issue_token("ann", label="l" * (users.MAX_LABEL_LENGTH + 1))
    assert info.value.field == "label"
    assert users.issue_token("ann", label="l" * users.MAX_LABEL_LENGTH).startswith("mct_")


@given(
    kind_field=st.sampled_from(
        [("connection", f) for f in sorted(TEXT_LIMITS["connection"])]
        + [("export", f) for f in ["to", "subject", "body", "where", "order_by", "connection",
                                   "encoding", "charset", "run_id", "key", "by", "rate"]]
    ),
    surrogate=st.integers(0xD800, 0xDFFF).map(chr),
    before=st.text(alphabet="abc@. ", max_size=5),
)
def test_a_lone_surrogate_in_any_text_field_is_named(
    kind_field: tuple[str, str], surrogate: str, before: str
) -> None:
    """JSON may carry "\\ud800"; it is no text, and it once reached a database, a codec or a
    response encoder as a 500."""
    kind, field = kind_field
    call, base = (validate_connection, CONNECTION) if kind == "connection" else (
        validate_export_spec, EXPORT)
    error = refusal(call, {**base, field: before + surrogate})
    assert [e.field for e in error.errors] == [field]
    assert "a lone surrogate, which is not text" in str(error)
    str(error).encode("utf-8")  # the message itself never carries the surrogate


def test_lone_surrogates_in_lists_and_mappings_are_named() -> None:
    error = refusal(validate_export_spec, {**EXPORT, "attach": ["a.pdf", "b\udc80.pdf"]})
    assert [e.field for e in error.errors] == ["attach"] and "item 2 holds U+DC80" in str(error)
    error = refusal(validate_export_spec, {**EXPORT, "inline": {"logo": "\ud83d.png"}})
    assert [e.field for e in error.errors] == ["inline"]


@given(
    field=st.sampled_from(["rate_per_second", "rate_per_minute", "rate_per_hour", "port",
                           "timeout_ms", "concurrency", "daily_cap"]),
    number=st.one_of(
        st.integers(10**309, 10**400), st.integers(-(10**400), -(10**309)),
        st.integers(310, 5000).map(lambda n: "9" * n),
    ),
)
def test_numbers_beyond_any_setting_are_named(field: str, number: int | str) -> None:
    """10**400 cannot become a float (OverflowError), '9' * 5000 not even an int: both were
    500s from the REST API."""
    error = refusal(validate_connection, {**CONNECTION, field: number})
    assert [e.field for e in error.errors] == [field]
    assert len(str(error)) < 300

"""Validation of the connection: every field of the seed form and the rules beyond it."""

from __future__ import annotations

import pickle

import pytest

from mailconduit.config import (
    AuthMechanism,
    ImplementationType,
    Security,
    SourceKind,
    connection_from_url,
    derive_security,
    export_spec_to_dict,
    parse_server_url,
    validate_connection,
    validate_export_spec,
)
from mailconduit.errors import (
    ConfigError,
    NotFoundError,
    SMTPError,
    TemplateSandboxError,
    TransientSMTPError,
)

GOOD = {
    "name": "corp",
    "server_url": "smtp.example.com",
    "port": 587,
    "use_ssl": True,
    "username": "ann@example.com",
    "password": "s3cret!",
}


def fields_of(exc: pytest.ExceptionInfo[ConfigError]) -> set[str]:
    return {e.field for e in exc.value.errors}


def test_seed_defaults_and_derived_security() -> None:
    conn = validate_connection(GOOD)
    assert conn.is_active and conn.is_target and not conn.is_source
    assert conn.agent == "local"
    assert conn.implementation_type is ImplementationType.DEFAULT
    assert conn.security is Security.STARTTLS
    assert conn.timeout_ms == 30_000
    assert conn.query == "" and conn.datetime_format == ""
    assert conn.sender == "ann@example.com"  # the username is an address
    assert conn.password is not None and conn.password.reveal() == "s3cret!"
    assert "s3cret" not in repr(conn)


@pytest.mark.parametrize(
    ("use_ssl", "port", "scheme", "expected"),
    [
        (True, 465, "", Security.TLS),
        (True, 587, "", Security.STARTTLS),
        (True, 25, "", Security.STARTTLS),
        (False, 25, "", Security.NONE),
        (False, 465, "smtps", Security.TLS),
    ],
)
def test_derive_security(use_ssl: bool, port: int, scheme: str, expected: Security) -> None:
    assert derive_security(use_ssl, port, scheme) is expected


def test_every_wrong_field_is_named_in_one_message() -> None:
    with pytest.raises(ConfigError) as exc:
        validate_connection(
            {
                "name": "",
                "server_url": "http://mail.example.com",
                "port": 70000,
                "timeout_ms": 10,
                "query": "SELECT 1",
                "datetime_format": "yyyy",
                "is_source": True,
            }
        )
    assert fields_of(exc) >= {
        "name",
        "server_url",
        "port",
        "timeout_ms",
        "query",
        "datetime_format",
        "is_source",
        "username",
        "password",
    }
    text = str(exc.value)
    assert "\n" not in text
    assert "70000 is outside 1-65535" in text
    assert exc.value.exit_code == 2


@pytest.mark.parametrize("missing", ["name", "server_url", "port", "username", "password"])
def test_mandatory_fields(missing: str) -> None:
    data = dict(GOOD)
    del data[missing]
    with pytest.raises(ConfigError) as exc:
        validate_connection(data)
    assert missing in fields_of(exc)


@pytest.mark.parametrize(("field", "value"), [("agent", ""), ("implementation_type", "")])
def test_mandatory_seed_choices(field: str, value: str) -> None:
    with pytest.raises(ConfigError) as exc:
        validate_connection({**GOOD, field: value})
    assert field in fields_of(exc)


@pytest.mark.parametrize(
    "url",
    ["http://mail.example.com", "smtp://", "mail example.com", "smtp://host/path", "exa_mple..com", "999.1.1.1"],
)
def test_bad_server_urls(url: str) -> None:
    with pytest.raises(ConfigError) as exc:
        validate_connection({**GOOD, "server_url": url})
    assert "server_url" in fields_of(exc)


@pytest.mark.parametrize(
    ("url", "host", "scheme", "port"),
    [
        ("smtp.example.com", "smtp.example.com", "", None),
        ("192.0.2.7", "192.0.2.7", "", None),
        ("::1", "::1", "", None),
        ("[2001:db8::1]", "2001:db8::1", "", None),
        ("smtps://mail.example.com:465", "mail.example.com", "smtps", 465),
        ("smtp://[::1]:2525", "::1", "smtp", 2525),
        ("bücher.example", "xn--bcher-kva.example", "", None),
    ],
)
def test_parse_server_url(url: str, host: str, scheme: str, port: int | None) -> None:
    assert parse_server_url(url) == (scheme, host, port)


@pytest.mark.parametrize(
    ("url", "port"),
    [("smtps://mail.example.com", 587), ("smtps://mail.example.com", 25), ("smtp://mail.example.com", 465)],
)
def test_inconsistent_scheme_and_port(url: str, port: int) -> None:
    with pytest.raises(ConfigError) as exc:
        validate_connection({**GOOD, "server_url": url, "port": port})
    assert "server_url" in fields_of(exc)


def test_url_port_must_match_port_field() -> None:
    with pytest.raises(ConfigError) as exc:
        validate_connection({**GOOD, "server_url": "smtp://mail.example.com:2525", "port": 587})
    assert "port" in fields_of(exc)


def test_smtps_url_defaults_to_port_465_and_tls() -> None:
    data = {k: v for k, v in GOOD.items() if k not in ("port", "use_ssl")}
    conn = validate_connection({**data, "server_url": "smtps://mail.example.com"})
    assert (conn.port, conn.security, conn.use_ssl) == (465, Security.TLS, True)


def test_explicit_security_wins_and_use_ssl_follows() -> None:
    conn = validate_connection({**{k: v for k, v in GOOD.items() if k != "use_ssl"}, "security": "tls"})
    assert conn.security is Security.TLS and conn.use_ssl
    with pytest.raises(ConfigError) as exc:
        validate_connection({**GOOD, "use_ssl": False, "security": "starttls"})
    assert "use_ssl" in fields_of(exc)


def test_no_plaintext_credentials_to_a_remote_host() -> None:
    with pytest.raises(ConfigError) as exc:
        validate_connection({**GOOD, "use_ssl": False})
    assert "security" in fields_of(exc)
    # ...unless the connection explicitly allows it, or the host is loopback.
    assert validate_connection({**GOOD, "use_ssl": False, "allow_insecure_auth": True})
    assert validate_connection({**GOOD, "use_ssl": False, "server_url": "127.0.0.1"})
    assert validate_connection({**GOOD, "use_ssl": False, "server_url": "localhost"})


def test_auth_none_needs_no_credentials() -> None:
    conn = validate_connection({"name": "relay", "server_url": "10.0.0.5", "port": 25, "auth_mechanism": "none"})
    assert conn.auth_mechanism is AuthMechanism.NONE and conn.password is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timeout_ms", 99),
        ("timeout_ms", 3_600_001),
        ("port", 0),
        ("port", "abc"),
        ("concurrency", 0),
        ("security", "ssl3"),
        ("auth_mechanism", "kerberos"),
        ("implementation_type", "lambda"),
        ("from_address", "not-an-address"),
        ("reply_to", "a b@c"),
        ("name", "has space"),
        ("name", "x" * 65),
        ("username", "a\r\nRCPT TO:<x@y>"),
        ("is_active", "maybe"),
        ("rate_per_second", -1),
        ("ehlo_hostname", "bad host"),
        ("unknown_field", 1),
    ],
)
def test_field_rules(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as exc:
        validate_connection({**GOOD, field: value})
    assert field in fields_of(exc)


def test_ca_file_with_verification_off_is_refused() -> None:
    with pytest.raises(ConfigError) as exc:
        validate_connection({**GOOD, "ca_file": "/tmp/ca.pem", "verify_tls": False})
    assert "ca_file" in fields_of(exc)


def test_connection_from_url_percent_encoding() -> None:
    conn = connection_from_url("prod", "smtps://ann%40example.com:p%40ss%3Aw%2Frd@mail.example.com:465")
    assert conn.username == "ann@example.com"
    assert conn.password is not None and conn.password.reveal() == "p@ss:w/rd"
    assert conn.security is Security.TLS and conn.port == 465 and conn.origin == "env"


def test_connection_from_url_query_fields_and_no_auth() -> None:
    conn = connection_from_url("sink", "smtp://127.0.0.1:2525?from_address=me@example.com&timeout_ms=500")
    assert conn.auth_mechanism is AuthMechanism.NONE
    assert conn.security is Security.NONE
    assert conn.from_address == "me@example.com" and conn.timeout_ms == 500
    remote = connection_from_url("r", "smtp://u:p@mail.example.com:587")
    assert remote.security is Security.STARTTLS


def test_public_dict_never_holds_the_password() -> None:
    conn = validate_connection(GOOD)
    data = conn.public_dict()
    assert "password" not in data and data["has_password"] is True
    assert "s3cret!" not in str(data)
    assert conn.storable_dict(include_password=True)["password"] == "s3cret!"


def test_errors_pickle_with_their_fields() -> None:
    with pytest.raises(ConfigError) as exc:
        validate_connection({**GOOD, "port": 0})
    again = pickle.loads(pickle.dumps(exc.value))
    assert str(again) == str(exc.value) and again.errors == exc.value.errors
    smtp = TransientSMTPError(451, "try later", enhanced="4.3.0", command="RCPT", host="h")
    back = pickle.loads(pickle.dumps(smtp))
    assert isinstance(back, TransientSMTPError) and str(back) == str(smtp) and back.host == "h"
    assert isinstance(back, SMTPError)
    missing = pickle.loads(pickle.dumps(NotFoundError("run", "r1")))
    assert (missing.kind, missing.name, str(missing)) == ("run", "r1", "no run named 'r1'")
    render = TemplateSandboxError("refused", "row 3", "email", template="subject")
    again_render = pickle.loads(pickle.dumps(render))
    assert type(again_render) is TemplateSandboxError and again_render.args == render.args
    fields = ("message", "row_key", "column", "template", "field")
    assert [getattr(again_render, f) for f in fields] == [
        "refused", "row 3", "email", "subject", "subject"
    ]
    assert str(again_render) == "template subject: refused"


def test_export_spec_refuses_unknown_settings_even_when_empty() -> None:
    from mailconduit.config import validate_export_spec

    with pytest.raises(ConfigError) as exc:
        validate_export_spec({"source": "a.csv", "to": "x", "subject": "s", "body": "b", "colour": None})
    assert fields_of(exc) == {"colour"}
    assert validate_export_spec({"source": "a.csv", "to": "x", "subject": "s", "body": "b", "cc": None}).cc == ""


@pytest.mark.parametrize(
    ("given", "held", "stored"),
    [("csv", SourceKind.CSV, "csv"), (" TSV ", SourceKind.TSV, "tsv"),
     ("excel", SourceKind.XLSX, "xlsx"), ("ndjson", SourceKind.JSONL, "jsonl"), ("", None, "")],
)  # fmt: skip
def test_the_source_kind_is_held_as_an_enum_and_stored_as_its_word(
    given: str, held: SourceKind | None, stored: str
) -> None:
    spec = validate_export_spec({"source": "a.dat", "to": "x", "subject": "s", "body": "b",
                                 "kind": given})  # fmt: skip
    assert spec.kind is held
    assert export_spec_to_dict(spec)["kind"] == stored
    assert validate_export_spec(export_spec_to_dict(spec)).kind is held


def test_an_unknown_source_kind_is_named_with_the_known_ones() -> None:
    with pytest.raises(ConfigError) as refused:
        validate_export_spec({"source": "a.dat", "to": "x", "subject": "s", "body": "b",
                              "kind": "dbase"})  # fmt: skip
    assert refused.value.field == "kind" and refused.value.exit_code == 2
    known = "csv, json, jsonl, xlsx, parquet, sql, iterable, excel, ndjson, tsv"
    assert f"unknown kind 'dbase'; one of: {known}" in str(refused.value)

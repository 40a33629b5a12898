"""The config package's public names, the stored forms of its typed settings, and the
copies of the connection's fields (REST model, form, CLI options) held to the dataclass."""

from __future__ import annotations

import dataclasses
import inspect
import json
import types
import typing
from pathlib import Path
from typing import Any

import pytest

import mailconduit.config
from mailconduit.cli import connections as cli_connections
from mailconduit.cli import signin as cli_signin
from mailconduit.config import (
    CONNECTION_FIELDS,
    Connection,
    ExportSpec,
    Oversize,
    ReportFormat,
    export_spec_to_dict,
    validate_connection,
    validate_export_spec,
)
from mailconduit.config.connection import validate_connection as connection_module_validate
from mailconduit.errors import ConfigError, MailconduitError, NotFoundError
from mailconduit.journal import RunInfo, RunStatus
from mailconduit.web.forms import FIELDS
from mailconduit.web.rest import ConnectionOut, RunOut

BASE_EXPORT = {"source": "rows.csv", "to": "{{email}}", "subject": "Hi", "body": "Hello"}


def _isort_key(name: str) -> tuple[int, str]:
    """Constants, then classes, then functions: ruff's isort-style order of ``__all__``."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_config_all_is_sorted_and_complete() -> None:
    names = mailconduit.config.__all__
    assert names == sorted(names, key=_isort_key)
    public = set()
    for module in ("connection", "export", "limits", "secret", "text"):
        mod = getattr(mailconduit.config, module)
        assert isinstance(mod, types.ModuleType)
        public |= {
            n for n, v in vars(mod).items()
            if not n.startswith("_") and getattr(v, "__module__", mod.__name__) == mod.__name__
            and not isinstance(v, types.ModuleType) and n not in ("annotations", "Any")
        }  # fmt: skip
    assert public - set(names) == set()
    for name in names:
        assert getattr(mailconduit.config, name) is not None
    assert validate_connection is connection_module_validate


# --------------------------------------------------------------------------- state as types


def test_typed_export_settings_keep_their_stored_form() -> None:
    """An interface file or journal spec written before the types loads the same and is
    written back the same: '' / -1 / 0 mean "the default", now None."""
    old = {**BASE_EXPORT, "oversize": "split", "dry_run": "", "report_format": "",
           "messages_per_connection": -1, "concurrency": 0, "data_timeout_ms": 0,
           "mode": "table", "to_column": "email", "to": ""}  # fmt: skip
    spec = validate_export_spec(old)
    assert spec.oversize is Oversize.SPLIT
    assert spec.dry_run is None and spec.report_format is None
    assert spec.messages_per_connection is None and spec.concurrency is None
    assert spec.data_timeout_ms is None
    stored = export_spec_to_dict(spec)
    for key in ("oversize", "dry_run", "report_format", "messages_per_connection",
                "concurrency", "data_timeout_ms"):  # fmt: skip
        assert stored[key] == old[key], key
    assert json.loads(json.dumps(stored)) == stored
    assert validate_export_spec({k: v for k, v in stored.items() if k != "rate"} | {
        "rate": stored["rate"]}) == spec  # fmt: skip


def test_typed_export_settings_given() -> None:
    spec = validate_export_spec({**BASE_EXPORT, "dry_run": "out", "report_format": "json",
                                 "messages_per_connection": 0, "concurrency": 3,
                                 "data_timeout_ms": 500})  # fmt: skip
    assert spec.dry_run == Path("out") and spec.report_format is ReportFormat.JSON
    assert (spec.messages_per_connection, spec.concurrency, spec.data_timeout_ms) == (0, 3, 500)
    stored = export_spec_to_dict(spec)
    assert (stored["dry_run"], stored["report_format"]) == ("out", "json")
    assert ExportSpec(source="x").oversize == "fail"  # a StrEnum still equals its stored text


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("oversize", "FAIL", "oversize: must be fail, attach or split"),
        ("report_format", "xml", "report_format: must be csv or json"),
        ("messages_per_connection", -2, "messages_per_connection: must not be negative"),
        ("concurrency", -1, "concurrency: must not be negative"),
    ],
)
def test_typed_export_settings_refused_as_before(key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_export_spec({**BASE_EXPORT, key: value})
    assert message in [str(e) for e in caught.value.errors]


def test_not_found_is_beside_config_error() -> None:
    """A missing thing is not a wrong setting (404, not 422) but exits 2 the same."""
    error = NotFoundError("connection", "nope")
    assert not isinstance(error, ConfigError) and isinstance(error, MailconduitError)
    assert error.exit_code == ConfigError.exit_code == 2
    assert str(error) == "no connection named 'nope'"


# --------------------------------------------------------------------------- one source


def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(Connection)
    return {name: hints[name] for name in CONNECTION_FIELDS}


def _json_type(tp: Any) -> str:
    if tp is bool:
        return "boolean"
    if tp is int:
        return "integer"
    if tp is float:
        return "number"
    return "string"


def test_form_fields_are_the_connection_fields() -> None:
    types_ = _field_types()
    assert [f.name for f in FIELDS] != []
    assert {f.name for f in FIELDS} == set(CONNECTION_FIELDS) - {"origin"}
    for f in FIELDS:
        assert f.json_type == _json_type(types_[f.name]), f.name
        assert (f.kind == "checkbox") == (types_[f.name] is bool), f.name


def test_rest_connection_model_is_the_public_dict() -> None:
    conn = validate_connection(
        {"name": "x", "server_url": "127.0.0.1", "port": 25, "auth_mechanism": "none"}
    )
    # oauth: the sign-in kept beside the connection (connections/oauth.py), not a field of it
    assert set(ConnectionOut.model_fields) == set(conn.public_dict()) | {"last_test", "oauth"}
    types_ = _field_types()
    for name, info in ConnectionOut.model_fields.items():
        if name in types_:
            expected = types_[name]
            expected = str if inspect.isclass(expected) and issubclass(expected, str) else expected
            assert info.annotation is expected, name


def test_cli_options_cover_the_connection_fields() -> None:
    """create takes one option per settable connection field, under the field's own name."""
    assert set(cli_connections.CONNECTION_OPTIONS) == set(CONNECTION_FIELDS) - {"name", "origin", "password"}
    for command in (cli_connections.create, cli_connections.edit):
        params = set(inspect.signature(command).parameters)
        assert set(cli_connections.CONNECTION_OPTIONS) <= params, command.__name__
        assert set(cli_connections.PASSWORD_OPTIONS) <= params, command.__name__
        assert set(cli_signin.SIGN_IN_PARAMS) <= params, command.__name__
    params = set(inspect.signature(cli_connections.create).parameters)
    # the preset and OAuth2 options set the sign-in kept beside the connection
    not_fields = {"as_json", *cli_connections.PASSWORD_OPTIONS, *cli_signin.SIGN_IN_OPTIONS}
    assert params - not_fields == set(CONNECTION_FIELDS) - {"origin", "password"}
    assert set(cli_signin.SIGN_IN_PARAMS) == set(cli_signin.SIGN_IN_OPTIONS)
    data = cli_connections._changes({"is_source": True, "is_target": False, "port": None,
                                     "messages_per_connection": 3, "verify_tls": False})
    assert data == {"is_source": True, "is_target": False, "messages_per_connection": 3,
                    "verify_tls": False}  # fmt: skip


def test_rest_run_model_is_the_run_info() -> None:
    fields = {f.name for f in dataclasses.fields(RunInfo)}
    info = RunInfo(run_id="r", status=RunStatus.FINISHED, connection="local", mode="row", created_at=1.0,
                   updated_at=2.0, finished_at=None, total=None, message="", spec={},
                   fingerprint="")  # fmt: skip
    assert set(RunOut.model_fields) == set(info.to_dict()) | {"done"}
    assert set(info.to_dict()) <= fields


def test_a_sandbox_violation_has_its_own_type() -> None:
    """The pre-send check keeps a sandbox violation by its type, not by its message's words."""
    from mailconduit.errors import RenderError, TemplateSandboxError
    from mailconduit.message.render import MessageTemplate

    template = MessageTemplate(to="a@example.com", subject="{{ name|attr(amount) }}")
    template.check(["name", "amount"])
    with pytest.raises(TemplateSandboxError) as caught:
        template.check_render({"name": "Ann", "amount": "__class__"})
    assert isinstance(caught.value, RenderError) and caught.value.template == "subject"
    template.check_render({"name": "Ann", "amount": "upper"})  # no violation: no error


def test_a_stored_connection_loads_the_same() -> None:
    """A connection as the store and export files hold it (every field as text or JSON value)
    comes back field for field."""
    stored = {
        "name": "office", "server_url": "smtp.example.com", "port": 587,
        "username": "me@example.com", "password": "s3cret", "is_active": True, "agent": "local",
        "implementation_type": "default", "is_source": False, "is_target": True,
        "timeout_ms": 30000, "query": "", "datetime_format": "", "use_ssl": True,
        "use_html_body": False, "security": "starttls", "from_address": "", "from_name": "",
        "reply_to": "", "verify_tls": True, "ca_file": "", "ehlo_hostname": "",
        "auth_mechanism": "auto", "allow_insecure_auth": False, "concurrency": 4,
        "rate_per_second": 0.0, "rate_per_minute": 0.0, "rate_per_hour": 0.0, "daily_cap": 0,
        "messages_per_connection": 0,
    }  # fmt: skip
    conn = validate_connection(stored)
    assert conn.storable_dict(include_password=True) == stored
    assert json.loads(json.dumps(conn.public_dict()))["security"] == "starttls"

"""Schemathesis over the console's own OpenAPI schema: for every operation, generated requests
(valid and invalid) never get a 5xx, and every answer has a documented status, a declared
content type and a body of the declared shape.

The console runs on 127.0.0.1 with a network policy that allows loopback only, and the store
of each operation's run holds only the built-in connection, so nothing generated can make the
console connect anywhere else. Export previews get a real uploaded file, so the generated
settings reach the sources; starting exports does not (it would send in the background).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from mailconduit import netpolicy
from mailconduit.accounts import users
from mailconduit.netpolicy import NetworkPolicy
from mailconduit.web.app import create_app
from mailconduit.web.uploads import save_upload
from webconsole import Console, running_console

LOOPBACK = "127.0.0.0/8,::1/128"
SCHEMA = schemathesis.openapi.from_dict(create_app(secret_key=b"s" * 32).openapi())
#: Settings every preview starts from (generated ones replace them), so most requests get
#: past the required fields and into the sources and templates.
PREVIEW_BASE = {"to": "{{ email }}", "subject": "Hello {{ name }}", "body": "{{ amount }}"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def console() -> Iterator[Console]:
    policy = NetworkPolicy.from_env({netpolicy.ALLOW_ENV: LOOPBACK})
    with running_console(network_policy=policy) as running:
        yield running


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exports use the environment's policy: loopback only, like Test Connection above."""
    monkeypatch.setenv(netpolicy.ALLOW_ENV, LOOPBACK)


@pytest.fixture
def bearer() -> dict[str, str]:
    users.create_user("schemathesis", "schemathesis-password")
    return {"Authorization": f"Bearer {users.issue_token('schemathesis')}"}


@pytest.fixture
def upload_ref() -> str:
    import io

    data = b"email,name,amount\nann@example.com,Ann,3\nbob@example.com,Bob,-1\n"
    return save_upload("people.csv", io.BytesIO(data), max_bytes=1 << 20).ref


@SCHEMA.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_operation_answers_5xx(
    case: schemathesis.Case[Any],
    console: Console,
    loopback_only: None,
    bearer: dict[str, str],
    upload_ref: str,
) -> None:
    if case.path == "/api/exports/preview" and isinstance(case.body, dict):
        given = {k: v for k, v in case.body.items() if v is not None and k != "interface"}
        case.body = {**PREVIEW_BASE, **given, "upload": upload_ref}
    response = case.call(base_url=console.url, headers=bearer, timeout=60)
    case.validate_response(response, checks=CHECKS)

"""The REST API fuzzed from its own OpenAPI schema: whatever a client sends, the answer is a
documented status (never a 500) with a parseable body, and no password comes back.

Operations that would open network connections or start sending (Test Connection, starting
or resuming exports) are called with inputs that cannot reach anything; the others get
bodies generated from their schema plus arbitrary JSON.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailconduit.accounts import users
from mailconduit.web.app import create_app
from webconsole import Console

PASSWORD_MARK = "fuzz-pass-WORD-1234"
#: Operations that may act on the network: fuzzed only with paths that name nothing.
NETWORK_OPERATIONS = {
    ("post", "/api/connections/{name}/test"),
    ("post", "/api/exports"),
    ("post", "/api/runs/{run_id}/resume"),
}

#: Text as JSON may carry it: lone surrogates ("\\ud800") included, which are no text.
json_text = st.text(st.characters(codec=None) | st.characters(categories=["Cs"]), max_size=30)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.integers(10**300, 10**400)  # beyond any float
    | st.floats(allow_nan=False, allow_infinity=False)
    | json_text,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)


def value_for(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of a (small) JSON schema, often valid, sometimes of another type entirely."""
    kind = schema.get("type")
    if "enum" in schema:
        valid: st.SearchStrategy[Any] = st.sampled_from(schema["enum"])
    elif kind == "integer":
        valid = st.integers(schema.get("minimum", -(2**40)), schema.get("maximum", 2**40))
    elif kind == "number":
        valid = st.floats(allow_nan=False, allow_infinity=False)
    elif kind == "boolean":
        valid = st.booleans()
    elif kind == "string" and "pattern" in schema:
        valid = st.from_regex(schema["pattern"], fullmatch=True)
    else:
        valid = st.text(max_size=40)
    return st.one_of(valid, valid, json_values)


def body_for(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    props = schema.get("properties", {})
    if not props:
        return json_values
    fixed = {name: value_for(sub) for name, sub in props.items()}
    objects = st.fixed_dictionaries({}, optional=fixed).map(
        lambda d: {**d, "password": PASSWORD_MARK} if "password" in fixed else d
    )
    return st.one_of(objects, objects, objects, json_values)


@pytest.fixture
def token() -> str:
    users.create_user("fuzzer", "fuzzer-password")
    return users.issue_token("fuzzer")


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, ops in schema["paths"].items()
        for method, op in ops.items()
        if method in ("get", "post", "patch", "delete")
    ]


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref:
        name = ref.rsplit("/", 1)[1]
        return dict(schema["components"]["schemas"][name])
    if "anyOf" in node:
        return resolve(schema, next((n for n in node["anyOf"] if n.get("type") != "null"), {}))
    return node


@st.composite
def api_requests(
    draw: st.DrawFn, schema: dict[str, Any]
) -> tuple[str, str, dict[str, Any], set[int]]:
    """One request to one operation: (method, url, httpx keyword arguments, documented codes)."""
    method, path, op = draw(st.sampled_from(operations(schema)))
    network = (method, path) in NETWORK_OPERATIONS
    url = path
    query: dict[str, Any] = {}
    for param in op.get("parameters", []):
        sub = resolve(schema, param.get("schema", {}))
        if param["in"] == "path":
            if network:
                raw: Any = draw(st.sampled_from(["no-such-thing", "x%00", "..", "9" * 30]))
            else:
                raw = draw(st.one_of(value_for(sub), st.text(min_size=1, max_size=20)))
            text = quote(str(raw), safe="") or "x"
            url = url.replace("{" + param["name"] + "}", text)
        elif draw(st.booleans()):
            query[param["name"]] = str(draw(value_for(sub)))
    kwargs: dict[str, Any] = {"params": query}
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" in content and method != "get":
        body_schema = resolve(schema, content["application/json"].get("schema", {}))
        if network and path == "/api/exports":
            body: Any = draw(st.sampled_from([{}, {"upload": "x"}, {"interface": "none.yaml"}, []]))
        else:
            body = draw(body_for(body_schema))
        # Encoded here (ASCII, with \\u escapes): httpx cannot encode a lone surrogate.
        kwargs["content"] = json.dumps(body)
        kwargs["headers"] = {"content-type": "application/json"}
    elif "multipart/form-data" in content:
        kwargs["files"] = {"file": (draw(st.text(max_size=20)), draw(st.binary(max_size=200)))}
    documented = {int(code) for code in op.get("responses", {}) if code.isdigit()}
    return method.upper(), url, kwargs, documented


#: The schema the app publishes (the same as GET /api/openapi.json, which needs a token).
SCHEMA = create_app(secret_key=b"s" * 32).openapi()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=api_requests(SCHEMA))
def test_api_answers_every_input_with_a_documented_status(
    console: Console, token: str, request: tuple[str, str, dict[str, Any], set[int]]
) -> None:
    method, url, kwargs, documented = request
    with console.client(headers={"Authorization": f"Bearer {token}"}) as http:
        response = http.request(method, url, **kwargs)
    assert response.status_code < 500, (method, url, kwargs, response.text)
    assert response.status_code in documented | {404, 405, 413, 422}, (
        method,
        url,
        response.status_code,
    )
    assert PASSWORD_MARK not in response.text
    if response.headers.get("content-type", "").startswith("application/json"):
        json.loads(response.text)


def test_published_schema_is_the_one_fuzzed(console: Console, token: str) -> None:
    with console.client(headers={"Authorization": f"Bearer {token}"}) as http:
        assert http.get("/api/openapi.json").json() == json.loads(json.dumps(SCHEMA))


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("POST", "/api/exports/preview", {"connection": "\ud800"}),
        ("POST", "/api/exports/preview", {"where": "\udfff"}),
        ("POST", "/api/exports/preview", {"order_by": "a\ud800"}),
        ("POST", "/api/connections", {"name": "x", "server_url": "127.0.0.1", "port": 25,
                                      "rate_per_second": 10**400}),
        ("PATCH", "/api/connections/local", {"rate_per_hour": -(10**400)}),
        ("POST", "/api/connections", {"name": "x", "server_url": "127.0.0.1", "port": "9" * 5000}),
        ("POST", "/api/interfaces/import", {"yaml": "name: x\nexport:\n  limit: " + "9" * 5000}),
        ("POST", "/api/interfaces/import", {"yaml": "name: x\nexport: " + "[" * 3000}),
        ("POST", "/api/interfaces/import", {"yaml": "[" * 5000 + "]" * 5000}),
    ],
)  # fmt: skip
def test_inputs_that_were_500s_are_422s(
    console: Console, token: str, method: str, url: str, body: Any
) -> None:
    if url == "/api/exports/preview":  # a real upload, so the settings are what is judged
        import io

        from mailconduit.web.uploads import save_upload

        data = io.BytesIO(b"email,name\nann@example.com,Ann\n")
        upload = save_upload("people.csv", data, max_bytes=1 << 20).ref
        body = {"upload": upload, "to": "{{ email }}", "subject": "s", "body": "b", **body}
    with console.client(headers={"Authorization": f"Bearer {token}"}) as http:
        response = http.request(
            method, url, content=json.dumps(body), headers={"content-type": "application/json"}
        )
    assert response.status_code in (404, 422), (response.status_code, response.text)
    if url == "/api/exports/preview":
        assert "not text" in response.text
    assert "Traceback" not in response.text

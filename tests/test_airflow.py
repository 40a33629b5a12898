"""The Airflow provider: its pure parts here (no Airflow in this environment), and its
tests with a real Airflow (tests/airflow/check_*.py) run in the Airflow environment that
scripts/airflow-venv.sh builds, one subprocess per file."""

from __future__ import annotations

import ast
import email
import re
import subprocess
from dataclasses import fields
from email.policy import default as default_policy
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mailconduit
from mailconduit.airflow import get_provider_info
from mailconduit.airflow.mapping import (
    connection_name,
    connection_of,
    connection_url,
    jinja_literal,
    run_id_for,
)
from mailconduit.config import (
    AuthMechanism,
    Connection,
    ExportSpec,
    Security,
    connection_from_url,
    validate_export_spec,
)
from mailconduit.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
AIRFLOW_TESTS = ROOT / "tests" / "airflow"
OPERATORS = ROOT / "src" / "mailconduit" / "airflow" / "operators.py"

# --------------------------------------------------------------------------- connections


def _smtp(**extra: object) -> Connection:
    return connection_of("office", conn_type="smtp", host="smtp.example.com", port=None,
                         login="u@example.com", password="pw", extra=extra)  # fmt: skip


def test_an_smtp_connection_is_implicit_tls_unless_its_extras_say_otherwise() -> None:
    assert (_smtp().security, _smtp().port) == (Security.TLS, 465)
    assert (_smtp(disable_ssl=True).security, _smtp(disable_ssl="true").port) == (
        Security.STARTTLS,
        25,
    )
    assert _smtp(disable_ssl="1", disable_tls="yes", allow_insecure_auth=True).security is (
        Security.NONE
    )
    assert _smtp(security="starttls").security is Security.STARTTLS


def test_the_smtp_providers_extras_and_mailconduit_fields_both_count() -> None:
    conn = _smtp(from_email="noreply@example.com", timeout="2.5", ssl_context="none",
                 extra__smtp__from_name="Reports", concurrency=8, retry_limit=9,
                 subject_template="/x", reply_to="")  # fmt: skip
    assert conn.name == "airflow_office"
    assert (conn.from_address, conn.from_name) == ("noreply@example.com", "Reports")
    assert (conn.timeout_ms, conn.verify_tls, conn.concurrency) == (2500, False, 8)
    assert conn.reply_to == ""  # an empty form field is not set


def test_an_oauth2_access_token_logs_in_with_xoauth2() -> None:
    conn = _smtp(auth_type="oauth2", access_token="tok-123")
    assert conn.auth_mechanism is AuthMechanism.XOAUTH2
    assert conn.password is not None and conn.password.reveal() == "tok-123"


def test_a_connection_without_credentials_does_not_log_in() -> None:
    conn = connection_of("relay", conn_type="mailconduit", host="127.0.0.1", port=2525,
                         login=None, password=None, extra={"security": "none"})  # fmt: skip
    assert conn.auth_mechanism is AuthMechanism.NONE


@pytest.mark.parametrize(
    ("conn_type", "port", "extra", "error"),
    [
        ("http", 25, {}, "conn_type: 'http' is not an SMTP connection (smtp or mailconduit)"),
        ("smtp", 465, {"port": 25}, "extra.port: set it in the connection's port field"),
        ("smtp", 465, {"timeout": "soon"}, "extra.timeout: 'soon' is not a number of seconds"),
        ("smtp", 465, {"ssl_context": "tight"}, "extra.ssl_context: 'tight' must be default or none"),
        ("smtp", 587, {}, "extra.disable_ssl: implicit TLS (the smtp provider's default) on port "
                          "587, a STARTTLS port: set disable_ssl to true, or use port 465"),
        ("smtp", 465, {"disable_ssl": True}, "extra.disable_ssl: port 465 expects implicit TLS: "
                                             "leave disable_ssl false (security tls)"),
        ("mailconduit", None, {}, "port: is required"),
        ("mailconduit", 587, {"verify_tls": "nah"}, "extra.verify_tls: must be true or false"),
    ],
)  # fmt: skip
def test_a_wrong_field_is_named_in_airflows_terms(
    conn_type: str, port: int | None, extra: dict[str, object], error: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        connection_of("c", conn_type=conn_type, host="smtp.example.com", port=port,
                      login="u", password="pw", extra=extra)  # fmt: skip
    assert str(caught.value) == f"invalid Airflow connection 'c': {error}"


def test_a_wrong_host_and_login_are_named_as_the_form_shows_them() -> None:
    with pytest.raises(ConfigError) as caught:
        connection_of("c", conn_type="mailconduit", host="not a host", port=587,
                      login=None, password="pw", extra={})  # fmt: skip
    assert {e.field for e in caught.value.errors} == {"host", "login"}


_TEXT = st.text(
    st.characters(min_codepoint=33, max_codepoint=0x2FF, exclude_categories=["Cc"]), max_size=12
)
_NAME = st.text(st.characters(whitelist_categories=("L", "N")), max_size=12)


@st.composite
def _airflow_connections(draw: st.DrawFn) -> Connection:
    """Valid mailconduit connections, made from Airflow connection fields."""
    security = draw(st.sampled_from(list(Security)))
    port = 465 if security is Security.TLS else draw(st.sampled_from([25, 587, 2525, 1025]))
    host = draw(st.sampled_from(["smtp.example.com", "127.0.0.1", "::1", "[2001:db8::5]",
                                 "bücher.example"]))  # fmt: skip
    login = draw(_TEXT.filter(lambda t: t.strip() == t))
    extra: dict[str, object] = {
        "security": security.value,
        "allow_insecure_auth": True,
        "verify_tls": draw(st.booleans()),
        "timeout_ms": draw(st.integers(100, 3_600_000)),
        "concurrency": draw(st.integers(1, 1000)),
        "rate_per_minute": draw(st.floats(0, 1e6, allow_nan=False)),
        "from_name": draw(_NAME),
    }
    if login and draw(st.booleans()):
        extra["auth_mechanism"] = draw(st.sampled_from(["plain", "login", "cram-md5"]))
    password = draw(_TEXT.filter(bool)) if login else ""
    conn_id = draw(st.from_regex(r"[A-Za-z0-9_.-]{1,80}", fullmatch=True))
    return connection_of(conn_id, conn_type="mailconduit", host=host, port=port,
                         login=login, password=password, extra=extra)  # fmt: skip


@given(_airflow_connections())
@settings(max_examples=200)
def test_mailconduit_reads_the_connection_url_back_into_the_same_connection(
    conn: Connection,
) -> None:
    back = connection_from_url(conn.name, connection_url(conn))
    assert back.host == conn.host
    assert back.password == conn.password
    same = {"server_url", "origin"}
    assert {k: v for k, v in back.public_dict().items() if k not in same} == {
        k: v for k, v in conn.public_dict().items() if k not in same
    }


@given(st.text(min_size=1, max_size=300))
def test_a_connection_name_is_a_mailconduit_name_whose_variable_is_its_upper_case(
    conn_id: str,
) -> None:
    name = connection_name(conn_id)
    assert re.fullmatch(r"airflow_[a-z0-9_]{1,56}", name)
    assert connection_name(conn_id) == name


# --------------------------------------------------------------------------- run ids


@given(st.text(max_size=300), st.text(max_size=300), st.text(max_size=300), st.integers(-1, 10**6))
def test_a_run_id_is_one_mailconduit_accepts(dag: str, task: str, run: str, index: int) -> None:
    run_id = run_id_for(dag, task, run, index)
    assert run_id == run_id_for(dag, task, run, index)
    spec = validate_export_spec(
        {"source": "x.csv", "run_id": run_id, "to": "t", "subject": "s", "body": "b"}
    )
    assert spec.run_id == run_id


_TASK_INSTANCES = st.tuples(st.text(max_size=20), st.text(max_size=20), st.text(max_size=20),
                            st.integers(-1, 5))  # fmt: skip


@given(st.lists(_TASK_INSTANCES, min_size=2, max_size=2, unique=True))
def test_distinct_task_instances_have_distinct_run_ids(
    pair: list[tuple[str, str, str, int]],
) -> None:
    first, second = pair
    assert run_id_for(*first) != run_id_for(*second)


def test_a_run_id_reads_as_its_task_instance() -> None:
    run_id = run_id_for("reports", "send", "manual__2024-03-01T00:00:00+00:00", 3)
    assert run_id.startswith("af-reports.send.manual__2024-03-01T00:00:00-00:00.3-")


# --------------------------------------------------------------------------- templates


@given(st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Zs")), min_size=1,
               max_size=40))  # fmt: skip
@settings(max_examples=40)
def test_a_jinja_literal_renders_as_exactly_its_text(tmp_path_factory: pytest.TempPathFactory,
                                                     text: str) -> None:  # fmt: skip
    out = tmp_path_factory.mktemp("eml")
    mailconduit.export(
        [{"email": "ann@example.com"}], connection="local", to="{{ email }}",
        subject=jinja_literal(text) + "{{ email }}", body="b", dry_run=str(out),
    )  # fmt: skip
    [eml] = out.glob("*.eml")
    message = email.message_from_bytes(eml.read_bytes(), policy=default_policy)
    assert str(message["Subject"]) == text + "ann@example.com"


def test_an_empty_literal_adds_nothing() -> None:
    assert jinja_literal("") == ""


# --------------------------------------------------------------------------- the provider


def test_the_provider_info_names_this_distribution_and_its_classes() -> None:
    info = get_provider_info()
    assert info["package-name"] == "mailconduit"
    assert info["versions"] == [mailconduit.__version__]
    [conn_type] = info["connection-types"]
    assert conn_type["hook-class-name"] == "mailconduit.airflow.hooks.MailconduitHook"
    assert set(conn_type["conn-fields"]) <= {f.name for f in fields(Connection)}
    hooks_source = (OPERATORS.parent / "hooks.py").read_text(encoding="utf-8")
    assert "class MailconduitHook(" in hooks_source


def _operator_parameters() -> tuple[set[str], set[str]]:
    """The operator's keyword parameters and its templated export options, from the source
    (importing it needs Airflow)."""
    tree = ast.parse(OPERATORS.read_text(encoding="utf-8"))
    params: set[str] = set()
    templated: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "__init__":
            params = {a.arg for a in node.args.kwonlyargs}
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "TEMPLATED_OPTIONS" for t in node.targets)
            and isinstance(node.value, ast.Tuple)
        ):
            templated = {ast.literal_eval(e) for e in node.value.elts}
    return params, templated


def test_the_operator_takes_every_export_option() -> None:
    params, templated = _operator_parameters()
    options = {f.name for f in fields(ExportSpec)} - {"source", "connection"}
    assert options <= params
    assert templated <= options
    assert not templated & {"to", "cc", "bcc", "subject", "body", "html_body", "text_body",
                            "from_", "reply_to", "attach", "inline", "headers"}  # fmt: skip


def test_the_readme_shows_the_example_dag_that_the_airflow_tests_run() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    example = (ROOT / "examples" / "airflow_dag.py").read_text(encoding="utf-8")
    assert f"```python\n{example}```" in readme


# --------------------------------------------------------------------------- with Airflow


def _airflow_python() -> Path:
    """The Airflow environment's Python: built or brought up to date by the script (once
    per lock on this machine; ``make test`` has done it already)."""
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "airflow-venv.sh")],
        capture_output=True, text=True, timeout=3000, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"scripts/airflow-venv.sh failed:\n{done.stderr[-4000:]}"
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("check", sorted(p.name for p in AIRFLOW_TESTS.glob("check_*.py")))
def test_with_a_real_airflow(check: str) -> None:
    done = subprocess.run(
        [str(_airflow_python()), "-m", "pytest", "-c", str(AIRFLOW_TESTS / "pytest.ini"),
         "-q", "--color=no", "-p", "no:logging", str(AIRFLOW_TESTS / check)],
        capture_output=True, text=True, timeout=3000, check=False, cwd=ROOT,
    )  # fmt: skip
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, f"{check}: {summary}\n{done.stdout[-8000:]}\n{done.stderr[-2000:]}"
    assert re.search(r"\d+ passed", summary) and "skipped" not in summary, summary

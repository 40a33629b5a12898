"""Fixtures shared by the whole suite: an isolated MAILCONDUIT_HOME, the CLI, PostgreSQL, and
a running console with a signed-in client."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

# Property tests run on a shared, sometimes busy machine: no per-example deadline, and in
# CI (CI=true) a fixed sequence of examples so a run is reproducible.
settings.register_profile(
    "mailconduit",
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("mailconduit")

if TYPE_CHECKING:
    from agents_support import Cluster
    from webconsole import Console, SignedIn

PG_ADMIN_URL = os.environ.get("MAILCONDUIT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own MAILCONDUIT_HOME and store; nothing leaks between tests."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("MAILCONDUIT_HOME", str(path))
    monkeypatch.delenv("MAILCONDUIT_DB", raising=False)
    monkeypatch.delenv("MAILCONDUIT_KEY", raising=False)
    for var in list(os.environ):
        if var.startswith("MAILCONDUIT_CONN_"):
            monkeypatch.delenv(var)
    yield path
    from mailconduit.db import dispose_all

    dispose_all()


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def output(self) -> str:
        return self.out + self.err


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Run ``mailconduit ARGS`` in-process; returns exit code and captured stdout/stderr."""
    import io
    import sys

    from mailconduit.cli import main

    def run(*args: str, stdin: str | None = None) -> CliResult:
        capsys.readouterr()
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(list(args))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database on the local server, dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    name = "mc_" + secrets.token_hex(6)
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:  # pragma: no cover - the machine starts PostgreSQL
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        from mailconduit.db import dispose_all

        dispose_all()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def console() -> Iterator[Console]:
    """The console served by uvicorn on a free loopback port, shared by one test module."""
    from webconsole import running_console

    with running_console() as running:
        yield running


@pytest.fixture
def browser(console: Console) -> Iterator[SignedIn]:
    """A signed-in client of :func:`console` (the admin user is created when missing)."""
    signed = console.signed_in()
    yield signed
    signed.http.close()


@pytest.fixture(params=["redis", "rabbitmq"])
def cluster(
    request: pytest.FixtureRequest, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Cluster]:
    """Agents' tests: a broker (each of Redis and RabbitMQ), a shared PostgreSQL journal,
    and the worker processes a test starts (see tests/agents_support.py)."""
    from agents_support import BROKERS, running_cluster

    with running_cluster(BROKERS[request.param], pg_url, tmp_path, monkeypatch) as group:
        yield group

"""Fixtures of the Airflow provider's tests: a throw-away Airflow (home, metadata database on
SQLite, DAGs folder, an API server for the executor runs), SMTP servers and PostgreSQL.

The main suite imports this file too (it walks tests/), so nothing here imports Airflow or
does anything unless this folder is the test run's root (``-c tests/airflow/pytest.ini``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PG_ADMIN_URL = os.environ.get("MAILCONDUIT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pytest_configure(config: pytest.Config) -> None:
    """Before Airflow is imported: a fresh Airflow home with a migrated metadata database."""
    if config.rootpath != HERE:
        return
    base = Path(tempfile.mkdtemp(prefix="mailconduit-airflow-"))
    (base / "dags").mkdir()
    os.environ.update(
        {
            "AIRFLOW_HOME": str(base / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(base / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__API__PORT": str(_free_port()),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        }
    )
    os.environ["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = (
        f"http://127.0.0.1:{os.environ['AIRFLOW__API__PORT']}/execution/"
    )
    config.add_cleanup(lambda: shutil.rmtree(base, ignore_errors=True))
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=600,
    )


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own MAILCONDUIT_HOME (journal, sink mailbox)."""
    path = tmp_path / "mailconduit-home"
    path.mkdir()
    monkeypatch.setenv("MAILCONDUIT_HOME", str(path))
    monkeypatch.setenv("MAILCONDUIT_SINK_PORT", str(_free_port()))
    monkeypatch.delenv("MAILCONDUIT_DB", raising=False)
    return path


@pytest.fixture
def smtp_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """mailconduit's test SMTP server, and the Airflow ``smtp`` connection ``smtp_test``
    pointing at it (from the environment, Airflow's first secrets backend)."""
    from support import smtp_connection_json

    from mailconduit.testing import FaultServer

    with FaultServer() as server:
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_TEST", smtp_connection_json(server.port))
        yield server


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database on the local server, dropped afterwards."""
    import psycopg

    name = "mc_af_" + secrets.token_hex(6)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def api_server() -> Iterator[str]:
    """Airflow's API server, which tasks run by an executor report to; yields its URL."""
    port = os.environ["AIRFLOW__API__PORT"]
    log = open(Path(os.environ["AIRFLOW_HOME"]) / "api-server.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow", "api-server", "--host", "127.0.0.1", "--port", port,
         "--workers", "1"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # it takes ~15 s on a quiet machine
            if process.poll() is not None:
                pytest.fail(f"the API server exited with {process.returncode}: see {log.name}")
            try:
                if httpx.get(f"{url}/execution/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail(f"the API server did not answer: see {log.name}")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()

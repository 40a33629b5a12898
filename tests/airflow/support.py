"""Helpers of the Airflow provider's tests: DAG files, DAG runs, Airflow connections."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def smtp_connection_json(port: int, **extra: Any) -> str:
    """An Airflow ``smtp`` connection to 127.0.0.1:port without TLS, as JSON."""
    return json.dumps(
        {
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": port,
            "extra": {
                "disable_ssl": True,
                "disable_tls": True,
                "from_email": "reports@example.com",
                **extra,
            },
        }
    )


@dataclass
class DagRunResult:
    """What tests/airflow/dagrun.py printed about a finished DAG run."""

    state: str
    run_id: str
    tries: dict[str, int]
    states: dict[str, str]
    xcom: dict[str, Any]


def write_dag(name: str, text: str) -> Path:
    """Put a DAG file in the Airflow home's DAGs folder."""
    path = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / f"{name}.py"
    path.write_text(text, encoding="utf-8")
    return path


def dag_test(dag_file: Path, dag_id: str, logical_date: str, **options: Any) -> DagRunResult:
    """Run ``dag.test()`` in this process (the task runs here too) and read the outcome."""
    from dagrun import run

    return DagRunResult(**run(dag_file, dag_id, logical_date, **options))


def outcome_of(returncode: int, output: str) -> dict[str, Any]:
    """The outcome a ``dagrun.py`` process printed, or the end of its output if it failed."""
    from dagrun import RESULT

    found = [line for line in output.splitlines() if line.startswith(RESULT)]
    assert returncode == 0 and found, f"exit status {returncode}:\n{output[-4000:]}"
    outcome: dict[str, Any] = json.loads(found[-1][len(RESULT) :])
    return outcome


def dag_test_command(dag_file: Path, dag_id: str, logical_date: str, *flags: str) -> list[str]:
    """The command that runs ``dag.test()`` in a process of its own (see dagrun.py)."""
    return [sys.executable, str(HERE / "dagrun.py"), str(dag_file), dag_id, logical_date, *flags]

"""The issue's check: a DAG run by a real Airflow (``dag.test()`` through LocalExecutor, so
each task runs in a process of its own under Airflow's supervisor, reporting to the API
server), its export task killed with SIGKILL mid-run, then retried by Airflow: 200 rows,
each delivered once, the retry resuming the same mailconduit run.

"Once" as mailconduit defines it: a row whose confirmation was lost with the killed
process is sent again with the same Message-ID (README, "Delivery, journal and resume"),
so receivers can tell; every other row arrives exactly once.
"""

from __future__ import annotations

import contextlib
import csv
import email
import os
import signal
import sqlite3
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from support import dag_test_command, outcome_of, smtp_connection_json, write_dag

from mailconduit import api
from mailconduit.airflow.mapping import run_id_for

ROWS = 200
KILL_AFTER = 60  # messages at the server when the task process is killed

DAG = """
import datetime as dt
from airflow.sdk import DAG
from mailconduit.airflow.operators import MailconduitExportOperator

with DAG("{dag_id}", schedule=None, start_date=dt.datetime(2024, 1, 1),
         default_args={{"retries": 1, "retry_delay": dt.timedelta(seconds=0)}}) as dag:
    MailconduitExportOperator(
        task_id="send", to="{{{{ email }}}}", subject="Statement {{{{ n }}}}",
        body="Dear {{{{ name }}}}, your statement.", rate="25/s", {data}, {smtp},
    )
"""


def _wait(
    condition: Callable[[], bool], what: str, runner: subprocess.Popen[str], log: Path
) -> None:
    """Wait for ``condition`` while the DAG runs; the bound only ends a run that went wrong."""
    for _ in range(6000):
        if condition():
            return
        if runner.poll() is not None:
            pytest.fail(
                f"the DAG run ended before {what}:\n{log.read_text(encoding='utf-8')[-4000:]}"
            )
        time.sleep(0.05)
    pytest.fail(f"gave up waiting for {what}")


def _kill_task_process(runner: subprocess.Popen[str], log: Path) -> int:
    """SIGKILL the process running the export task (LocalExecutor's worker forks a
    supervisor, which forks the task process: ``airflow worker -- <task instance id>``)."""
    found: list[psutil.Process] = []

    def task_process() -> bool:
        for child in psutil.Process(runner.pid).children(recursive=True):
            with_title = " ".join(child.cmdline())
            if with_title.startswith("airflow worker -- ") and "LocalExecutor" not in with_title:
                found.append(child)
                return True
        return False

    _wait(task_process, "the task process", runner, log)
    found[0].send_signal(signal.SIGKILL)
    return found[0].pid


def _finish(runner: subprocess.Popen[str], log: Path, dag_id: str) -> dict[str, Any]:
    """Wait for the DAG run's process and read its outcome.

    Airflow 3.3's LocalExecutor, shut down by ``dag.test()``, now and then waits forever
    for one idle worker that never gets its stop message (about one run in five here, after
    the DAG run has ended). Once the run is over in the metadata database, idle workers
    still there a while later are ended, which lets the shutdown finish.
    """
    over = 0
    for _ in range(2400):  # 0.25 s each: a run takes about a minute
        if runner.poll() is not None:
            return outcome_of(runner.returncode, log.read_text(encoding="utf-8"))
        over = over + 1 if _dag_run_state(dag_id) in ("success", "failed") else 0
        if over > 60:
            for child in psutil.Process(runner.pid).children():
                with contextlib.suppress(psutil.NoSuchProcess):
                    # setproctitle pads the command line with empty arguments
                    if " ".join(child.cmdline()).rstrip().endswith("LocalExecutor: <idle>"):
                        child.kill()
        time.sleep(0.25)
    for process in [psutil.Process(runner.pid), *psutil.Process(runner.pid).children(True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGUSR1)  # each writes its threads' stacks to the log
    pytest.fail(f"the DAG run did not end; task instances: {_task_states()}; see {log}")


def _metadata(query: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of Airflow's metadata database (SQLite), to tell where a run is."""
    db = Path(os.environ["AIRFLOW_HOME"]) / "airflow.db"
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        return conn.execute(query, args).fetchall()


def _dag_run_state(dag_id: str) -> str:
    rows = _metadata("SELECT state FROM dag_run WHERE dag_id = ?", dag_id)
    return str(rows[0][0]) if rows else ""


def _task_states() -> list[tuple[Any, ...]]:
    return _metadata("SELECT dag_id, task_id, state, try_number, pid FROM task_instance")


@contextlib.contextmanager
def _running(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[str]]:
    """The DAG run in a process of its own; it and everything it started end with the block."""
    with open(log, "w", encoding="utf-8") as out:
        runner = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            yield runner
        finally:
            if runner.poll() is None:
                for child in psutil.Process(runner.pid).children(recursive=True):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        child.kill()
                runner.kill()
            runner.wait()


def _assert_each_row_once(delivered: Iterable[tuple[str, str]], resent: int) -> None:
    """(recipient, Message-ID) pairs: every row's recipient got its message, a repeat
    only as a resend of a row whose confirmation was lost, with the same Message-ID."""
    ids: dict[str, set[str]] = defaultdict(set)
    copies = 0
    for recipient, message_id in delivered:
        ids[recipient].add(message_id)
        copies += 1
    assert sorted(ids) == sorted(f"r{i}@example.com" for i in range(ROWS))
    assert all(len(found) == 1 for found in ids.values()), "a row went out with two Message-IDs"
    assert copies - ROWS <= resent


def _assert_one_resumed_run(outcome: dict[str, Any], dag_id: str, at_kill: int) -> None:
    assert outcome["state"] == "success"
    assert outcome["tries"]["send"] == 2  # the kill failed try 1; Airflow's retry finished
    report = outcome["xcom"]["send"]
    expected = run_id_for(dag_id, "send", outcome["run_id"], -1)
    assert report["run_id"] == expected
    assert 0 < report["sent_before"] <= at_kill  # the retry resumed, it did not start over
    runs = api.list_runs()
    assert [run.run_id for run in runs] == [expected]
    assert runs[0].status == "finished"
    assert runs[0].counts == {"sent": ROWS}


def test_a_csv_export_killed_mid_run_is_resumed_by_airflows_retry(
    api_server: str, tmp_path: Path
) -> None:
    source = tmp_path / "people.csv"
    with open(source, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["n", "email", "name"])
        writer.writerows([i, f"r{i}@example.com", f"Person {i}"] for i in range(ROWS))
    dag_file = write_dag("killed_csv", DAG.format(
        dag_id="killed_csv", data=f"source={str(source)!r}", smtp="smtp_conn_id='smtp_killed'"
    ))  # fmt: skip
    from mailconduit.testing import FaultServer

    log = tmp_path / "dag.log"
    with (
        FaultServer() as server,
        _running(
            dag_test_command(dag_file, "killed_csv", "2024-03-01", "--executor"),
            {**os.environ, "AIRFLOW_CONN_SMTP_KILLED": smtp_connection_json(server.port)},
            log,
        ) as runner,
    ):
        _wait(lambda: len(server.messages) >= KILL_AFTER, f"{KILL_AFTER} messages", runner, log)
        _kill_task_process(runner, log)
        at_kill = len(server.messages)
        outcome = _finish(runner, log, "killed_csv")

    parsed = [email.message_from_bytes(m.data) for m in server.messages]
    _assert_each_row_once(
        ((str(m["To"]), str(m["Message-ID"])) for m in parsed),
        outcome["xcom"]["send"]["uncertain_resent"],
    )
    assert at_kill < ROWS
    _assert_one_resumed_run(outcome, "killed_csv", at_kill)


def test_a_postgres_export_to_the_embedded_server_killed_mid_run_is_resumed(
    api_server: str, tmp_path: Path, pg_url: str
) -> None:
    from mailconduit.sink import count_messages, ensure_running, list_messages

    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute("CREATE TABLE people (n int PRIMARY KEY, email text, name text)")
        with db.cursor().copy("COPY people FROM STDIN") as copy:
            for i in range(ROWS):
                copy.write_row((i, f"r{i}@example.com", f"Person {i}"))
    dag_file = write_dag("killed_pg", DAG.format(
        dag_id="killed_pg", data="conn_id='pg_people', sql='SELECT n, email, name FROM people ORDER BY n'",
        smtp="connection='local'",
    ))  # fmt: skip

    log = tmp_path / "dag.log"
    with (
        ensure_running(),
        _running(
            dag_test_command(dag_file, "killed_pg", "2024-03-01", "--executor"),
            {**os.environ, "AIRFLOW_CONN_PG_PEOPLE": pg_url},
            log,
        ) as runner,
    ):
        _wait(lambda: count_messages() >= KILL_AFTER, f"{KILL_AFTER} in the sink", runner, log)
        _kill_task_process(runner, log)
        at_kill = count_messages()
        outcome = _finish(runner, log, "killed_pg")
        received = list_messages(limit=10 * ROWS)

    _assert_each_row_once(
        ((m.to_header, m.message_id) for m in received),
        outcome["xcom"]["send"]["uncertain_resent"],
    )
    assert at_kill < ROWS
    _assert_one_resumed_run(outcome, "killed_pg", at_kill)

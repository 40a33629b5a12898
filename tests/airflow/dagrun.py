"""Run one DAG with ``dag.test()`` and say how it went: imported by the tests, or run as

    python dagrun.py DAG_FILE DAG_ID LOGICAL_DATE [--executor] [--conn-file PATH]

in a process of its own, printing a line ``dagrun outcome: {JSON}`` with the run's state,
each task's state and try number, and each task's XCom return value. ``--executor`` runs the
tasks through the configured executor (LocalExecutor: a supervisor and a task process
each, reporting to the API server), so a task process can be killed like in production.
"""

from __future__ import annotations

import argparse
import datetime as dt
import faulthandler
import importlib.util
import json
import signal
from pathlib import Path
from typing import Any

#: Marks the line with the outcome among the log lines of the run's processes.
RESULT = "dagrun outcome: "


def run(
    dag_file: Path,
    dag_id: str,
    logical_date: str,
    *,
    executor: bool = False,
    conn_file: str | None = None,
) -> dict[str, Any]:
    """``dag.test()`` for the Airflow run of ``logical_date`` (also its run_after, so a second
    call makes the same run id again)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    spec = importlib.util.spec_from_file_location(f"dag_{dag_id}", dag_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = next(v for v in vars(module).values() if getattr(v, "dag_id", None) == dag_id)
    when = dt.datetime.fromisoformat(logical_date).replace(tzinfo=dt.UTC)
    dag_run = dag.test(
        logical_date=when, run_after=when, use_executor=executor, conn_file_path=conn_file
    )
    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == dag_run.run_id
            )
        ).all()
        xcoms = session.scalars(
            XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_id, key="return_value")
        ).all()
        return {
            "state": str(dag_run.state),
            "run_id": dag_run.run_id,
            "tries": {_label(ti): ti.try_number for ti in tis},
            "states": {_label(ti): str(ti.state) for ti in tis},
            "xcom": {_label(x): XComModel.deserialize_value(x) for x in xcoms},
        }


def _label(item: Any) -> str:
    """``task_id``, or ``task_id[i]`` for a mapped task's instance."""
    return item.task_id if item.map_index < 0 else f"{item.task_id}[{item.map_index}]"


def main() -> None:
    # A run that hangs can be asked where each of its processes is (forks inherit this).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    parser = argparse.ArgumentParser()
    parser.add_argument("dag_file", type=Path)
    parser.add_argument("dag_id")
    parser.add_argument("logical_date")
    parser.add_argument("--executor", action="store_true")
    parser.add_argument("--conn-file")
    args = parser.parse_args()
    outcome = run(
        args.dag_file,
        args.dag_id,
        args.logical_date,
        executor=args.executor,
        conn_file=args.conn_file,
    )
    print(RESULT + json.dumps(outcome, default=str), flush=True)


if __name__ == "__main__":
    main()

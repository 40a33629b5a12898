"""Agents benchmark (issue 11 §6): scale-out over Celery workers, and the cost of the
distributed path against the local default. A benchmark, not a test: nothing here asserts.

    .venv/bin/python bench/agents_bench.py scale    --rows 8000 --workers 1,2,4
    .venv/bin/python bench/agents_bench.py overhead --rows 50000

``scale``: the latency sink answers every reply 20 ms late (the WAN case); each worker
sends one chunk at a time over 8 sessions; M workers against one.
``overhead``: the same export on loopback (the latency sink at 0 ms), once through the
local default and once through one celery worker, both journaled on PostgreSQL.

Needs PostgreSQL (MAILCONDUIT_TEST_PG, default postgresql://postgres@127.0.0.1:5432/test:
a fresh database is made per run and dropped) and Redis at 127.0.0.1:6379 (or
--broker). Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable
MAILCONDUIT = str(Path(PY).with_name("mailconduit"))
PG_ADMIN = os.environ.get("MAILCONDUIT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def database() -> Iterator[str]:
    import psycopg

    name = "mcbench_" + secrets.token_hex(4)
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def sink(latency_ms: float, folder: Path) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [PY, str(HERE / "sinks" / "latency_sink.py"), "--port", str(port),
         "--latency-ms", str(latency_ms), "--summary", str(folder / f"sink-{port}.json")],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def write_rows(path: Path, n: int) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "email", "name"])
        for i in range(n):
            w.writerow([i, f"user{i}@example.com", f"Person {i}"])


def base_env(db: str, broker: str, home: Path) -> dict[str, str]:
    from cryptography.fernet import Fernet

    env = dict(os.environ)
    env.update(
        MAILCONDUIT_DB=db,
        MAILCONDUIT_BROKER_URL=broker,
        MAILCONDUIT_KEY=Fernet.generate_key().decode(),
        MAILCONDUIT_HOME=str(home),
        PYTHONUNBUFFERED="1",
    )
    return env


_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process, its reaped children and its live ones."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    own = sum(int(f) for f in fields[11:15]) / _TICK  # utime, stime, cutime, cstime
    return own + sum(process_cpu(int(c)) for c in children)


@contextmanager
def workers(env: dict[str, str], agent: str, count: int, folder: Path) -> Iterator[list[int]]:
    procs = []
    for n in range(count):
        home = folder / f"worker-{n}"
        home.mkdir(exist_ok=True)
        log = open(folder / f"worker-{n}.log", "wb")  # noqa: SIM115
        procs.append(subprocess.Popen(
            [MAILCONDUIT, "agent", "run", agent, "--concurrency", "1"],
            env={**env, "MAILCONDUIT_HOME": str(home)}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        ))  # fmt: skip
    try:
        import psycopg

        deadline = time.monotonic() + 120
        while True:
            with psycopg.connect(env["MAILCONDUIT_DB"]) as db:
                try:
                    live = db.execute(
                        "SELECT COUNT(*) FROM agent_workers WHERE agent = %s AND NOT stopped",
                        (agent,),
                    ).fetchone()[0]  # type: ignore[index]
                except psycopg.errors.UndefinedTable:
                    live = 0
            if live >= count:
                break
            if time.monotonic() > deadline:
                logs = "\n".join((folder / f"worker-{n}.log").read_text()[-2000:]
                                 for n in range(count))  # fmt: skip
                raise RuntimeError(f"workers did not start:\n{logs}")
            time.sleep(0.2)
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def export(
    env: dict[str, str], data: Path, sessions: int
) -> tuple[float, float, float, dict[str, object], float]:
    """(wall seconds, epoch at start, epoch at exit, the JSON report, CPU seconds of the
    command) of one CLI export."""
    import resource

    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started_at = time.time()
    started = time.monotonic()
    out = subprocess.run(
        [MAILCONDUIT, "export", str(data), "--connection", "bench", "--to", "{{ email }}",
         "--subject", "Hello {{ name }}", "--body", "Dear {{ name }},\nrow {{ id }}.\n",
         "--key", "id", "--concurrency", str(sessions), "--json"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.monotonic() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    if out.returncode != 0:
        raise RuntimeError(out.stderr or out.stdout)
    return wall, started_at, time.time(), json.loads(out.stdout), cpu


def phases(db: str, run_id: str) -> tuple[float, float, float]:
    """(run recorded, first outcome, last outcome), epoch seconds."""
    import psycopg

    with psycopg.connect(db) as conn:
        lo, hi = conn.execute(
            "SELECT MIN(updated_at), MAX(updated_at) FROM run_rows WHERE run_id = %s", (run_id,)
        ).fetchone()  # type: ignore[misc]
        (created,) = conn.execute(
            "SELECT created_at FROM runs WHERE run_id = %s", (run_id,)
        ).fetchone()  # type: ignore[misc]
    return float(created), float(lo), float(hi)


def one(kind: str, *, rows: int, workers_n: int, latency: float, broker: str,
        sessions: int, chunk_rows: int) -> dict[str, object]:  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="agents-bench-") as tmp, database() as db:
        folder = Path(tmp)
        data = folder / "rows.csv"
        write_rows(data, rows)
        env = base_env(db, broker, folder / "home")
        env["MAILCONDUIT_AGENT_CHUNK_ROWS"] = str(chunk_rows)
        agent = "bench-" + secrets.token_hex(3)
        with sink(latency, folder) as port:
            impl = "celery" if kind == "celery" else "default"
            env["MAILCONDUIT_CONN_BENCH"] = (
                f"smtp://127.0.0.1:{port}?from_address=sender@example.com"
                f"&implementation_type={impl}&agent={agent}"
            )
            workers_cpu = 0.0
            if kind == "celery":
                with workers(env, agent, workers_n, folder) as pids:
                    before = sum(process_cpu(p) for p in pids)
                    wall, t0, t1, report, cpu = export(env, data, sessions)
                    workers_cpu = sum(process_cpu(p) for p in pids) - before
            else:
                wall, t0, t1, report, cpu = export(env, data, sessions)
        created, first, last = phases(db, str(report["run_id"]))
        span = last - first
    sent = int(report["counts"]["sent"])  # type: ignore[index]
    return {
        "kind": kind, "workers": workers_n if kind == "celery" else 0, "rows": rows,
        "sent": sent, "latency_ms": latency, "sessions_per_worker": sessions,
        "wall_s": round(wall, 2), "rate_wall": round(sent / wall, 1),
        "sending_s": round(span, 2), "rate_sending": round(sent / span, 1) if span else None,
        # where the rest of the wall time went: start-up and checks until the run is recorded
        # (and its input frozen, for celery), then until the first outcome, then the tail
        "until_recorded_s": round(created - t0, 2), "until_first_s": round(first - created, 2),
        "after_last_s": round(t1 - last, 2),
        # CPU of the export command and of the workers while it ran (not the database's nor
        # the sink's): on a busy machine a steadier measure of the path's cost than wall time
        "cpu_s": round(cpu + workers_cpu, 2), "cpu_command_s": round(cpu, 2),
        "load": os.getloadavg()[0],
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("scale", "overhead"))
    ap.add_argument("--rows", type=int, default=0)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--broker", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--chunk-rows", type=int, default=None, help="MAILCONDUIT_AGENT_CHUNK_ROWS")
    ap.add_argument("--only", choices=("local", "celery"), default=None,
                    help="overhead: run one side only")
    ap.add_argument("--latency-ms", type=float, default=None,
                    help="the sink's reply delay (default: 20 for scale, 0 for overhead)")
    a = ap.parse_args()
    results = []
    for _ in range(a.repeat):
        if a.what == "scale":
            for m in (int(x) for x in a.workers.split(",")):
                latency = 20.0 if a.latency_ms is None else a.latency_ms
                r = one("celery", rows=a.rows or 8000, workers_n=m, latency=latency,
                        broker=a.broker, sessions=8, chunk_rows=a.chunk_rows or 250)  # fmt: skip
                print(json.dumps(r), flush=True)
                results.append(r)
        else:
            for kind in [a.only] if a.only else ["local", "celery"]:
                latency = 0.0 if a.latency_ms is None else a.latency_ms
                r = one(kind, rows=a.rows or 50000, workers_n=1, latency=latency,
                        broker=a.broker, sessions=8, chunk_rows=a.chunk_rows or 1000)  # fmt: skip
                print(json.dumps(r), flush=True)
                results.append(r)


if __name__ == "__main__":
    main()

"""Exports on Celery workers: real brokers (Redis and RabbitMQ), PostgreSQL as the shared
journal, worker processes with homes of their own, the fault server as the mail server."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest

from agents_support import (
    Cluster,
    agent_connection,
    detach,
    run_status,
    send_standard,
    use_agent_server,
    wait_for,
)
from delivery_support import (
    CONNECTION,
    TimedFaultServer,
    connection_url,
    deliveries,
    journal_rows,
    people,
    write_csv,
)
from mailconduit import api

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_three_workers_send_a_run_once(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "people.csv", people(60))
    with agent_connection(cluster, monkeypatch) as server:
        for _ in range(3):
            cluster.start_worker(MAILCONDUIT_AGENT_CHUNK_ROWS="7")
        cluster.wait_live(3)
        monkeypatch.setenv("MAILCONDUIT_AGENT_CHUNK_ROWS", "7")
        report = send_standard(source, CONNECTION)
        assert report.status == "finished", report.message
        assert report.counts.get("sent") == 60
        got = deliveries(server.messages)
        assert sorted(got) == sorted(f"user{i}@example.com" for i in range(60))
        assert all(len(ids) == 1 for ids in got.values()), got
        rows = journal_rows(report.run_id)
        assert {r.state for r in rows.values()} == {"sent"}
        for rcpt, ids in got.items():
            key = rcpt.removeprefix("user").removesuffix("@example.com")
            assert rows[key].message_id == ids[0]


def test_a_worker_that_cannot_see_the_coordinators_files_completes_the_run(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cli: Any
) -> None:
    """The data file, the body file and the attachment folder are gone before any worker
    starts: the worker sends from what the coordinator froze in the journal."""
    import email
    from email import policy

    here = tmp_path / "coordinator"
    files = here / "attachments"
    files.mkdir(parents=True)
    n = 12
    rows = [{**p, "file": f"invoices/{p['id']}.txt"} for p in people(n)]
    (files / "invoices").mkdir()
    for p in rows:
        (files / p["file"]).write_text(f"invoice for {p['name']}\n")
    (files / "brochure.txt").write_bytes(b"the same brochure for everyone\n" * 100)
    source = write_csv(here / "people.csv", rows)
    body = here / "body.txt"
    body.write_text("Dear {{ name }},\nyour invoice is attached.\n")
    with agent_connection(cluster, monkeypatch) as server:
        result = cli(
            "export", str(source), "--connection", CONNECTION, "--to", "{{ email }}",
            "--subject", "Invoice {{ id }}", "--body-file", str(body), "--key", "id",
            "--attach", "{{ file }}", "--attach", "brochure.txt", "--attach-dir", str(files),
            "--detach", "--queue",
        )  # fmt: skip
        assert result.code == 0, result.output
        run_id = result.out.strip()
        shutil.rmtree(here)
        cluster.start_worker()
        wait_for(lambda: api.get_run(run_id).status != "running", what="the run's end")
        assert api.get_run(run_id).status == "finished", api.get_run(run_id).message
        assert len(server.messages) == n
        for m in server.messages:
            msg = email.message_from_bytes(m.data, policy=policy.default)
            name = str(msg["To"]).removeprefix("user").split("@")[0]
            parts = {a.get_filename(): a.get_content() for a in msg.iter_attachments()}
            assert parts == {
                f"{name}.txt": f"invoice for Person {name}\n",
                "brochure.txt": "the same brochure for everyone\n" * 100,
            }
            plain = msg.get_body(("plain",))
            assert plain is not None and "your invoice is attached" in plain.get_content()
        store = cluster.store()
        try:
            blobs = store.blob_count(run_id)
        finally:
            store.close()
        assert blobs == n + 1  # the brochure stored once


def test_the_cli_run_is_attached_and_reports_as_a_local_run(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cli: Any
) -> None:
    source = write_csv(tmp_path / "people.csv", people(15))
    interface = tmp_path / "export.yaml"
    interface.write_text(
        f"source: {source}\nconnection: {CONNECTION}\nto: '{{{{ email }}}}'\n"
        "subject: 'Hi {{ name }}'\nbody: 'Hello'\nkey: id\n"
    )
    with agent_connection(cluster, monkeypatch) as server:
        cluster.start_worker()
        cluster.wait_live(1)
        result = cli("run", str(interface), "--json")
        assert result.code == 0, result.output
        report = json.loads(result.out)
        assert report["status"] == "finished"
        assert report["counts"]["sent"] == 15
        listed = cli("agents", "list", "--json")
        assert listed.code == 0, listed.output
        (agent,) = [a for a in json.loads(listed.out) if a["name"] == cluster.agent]
        assert len(agent["workers"]) == 1
        assert agent["workers"][0]["host"] == socket.gethostname()
        assert agent["queued_chunks"] == 0 and agent["running_chunks"] == 0
        assert len(server.messages) == 15


def test_runs_stop_stops_every_worker_and_resume_sends_the_rest(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cli: Any
) -> None:
    n = 60
    monkeypatch.setenv("MAILCONDUIT_AGENT_CHUNK_ROWS", "10")
    source = write_csv(tmp_path / "people.csv", people(n))
    with agent_connection(cluster, monkeypatch, faults={("DOT", "*"): "delay:0.05"}) as server:
        cluster.start_worker()
        cluster.start_worker()
        cluster.wait_live(2)
        result = cli(
            "export", str(source), "--connection", CONNECTION, "--to", "{{ email }}",
            "--subject", "s", "--body", "b", "--key", "id", "--concurrency", "1", "--detach",
        )  # fmt: skip
        assert result.code == 0, result.output
        run_id = result.out.strip()
        wait_for(lambda: api.get_run(run_id).counts.get("sent", 0) >= 8, what="8 rows sent")
        stopped = cli("runs", "stop", run_id)
        assert stopped.code == 0, stopped.output
        wait_for(lambda: api.get_run(run_id).status != "running", what="the workers to stop")
        info = api.get_run(run_id)
        assert info.status == "interrupted", info.message
        assert "runs stop" in info.message
        assert info.counts.get("sent", 0) < n
        resumed = cli("runs", "resume", run_id, "--json")
        assert resumed.code == 0, resumed.output
        assert json.loads(resumed.out)["status"] == "finished"
        got = deliveries(server.messages)
        assert sorted(got) == sorted(f"user{i}@example.com" for i in range(n))
        rows = journal_rows(run_id)
        assert {r.state for r in rows.values()} == {"sent"}
        for rcpt, ids in got.items():
            assert set(ids) == {rows[rcpt[4:].split("@")[0]].message_id}


def test_refusals_are_one_line_and_send_nothing(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Any
) -> None:
    source = write_csv(tmp_path / "people.csv", people(3))
    server = TimedFaultServer()
    with server:
        monkeypatch.setenv(
            f"MAILCONDUIT_CONN_{CONNECTION.upper()}",
            connection_url(server.port, implementation_type="celery", agent="nobody-here"),
        )
        args = ["export", str(source), "--connection", CONNECTION, "--to", "{{ email }}",
                "--subject", "s", "--body", "b"]  # fmt: skip
        # SQLite is one machine's journal
        monkeypatch.setenv("MAILCONDUIT_BROKER_URL", "redis://127.0.0.1:6379/0")
        result = cli(*args)
        assert result.code == 2
        assert "MAILCONDUIT_DB" in result.err and "PostgreSQL" in result.err
        assert len(result.err.strip().splitlines()) == 1
        # no broker
        monkeypatch.setenv("MAILCONDUIT_DB", pg_url)
        monkeypatch.delenv("MAILCONDUIT_BROKER_URL")
        result = cli(*args)
        assert result.code == 2 and "MAILCONDUIT_BROKER_URL" in result.err
        # no live worker: refused before any row is read, unless --queue
        monkeypatch.setenv("MAILCONDUIT_BROKER_URL", "redis://127.0.0.1:6379/0")
        result = cli(*args)
        assert result.code == 2
        assert "'nobody-here' has no live worker" in result.err and "--queue" in result.err
        assert len(result.err.strip().splitlines()) == 1
        assert api.list_runs() == []
        # bad input: exit 2, nothing recorded, as for a local run
        result = cli(*args[:-2], "--body", "{{ nosuchcolumn }}", "--queue")
        assert result.code == 2 and "nosuchcolumn" in result.err
        assert api.list_runs() == []
        result = cli(*args, "--queue", "--no-journal")
        assert result.code == 2 and "--no-journal" in result.err
        # --detach needs a celery connection
        monkeypatch.setenv(f"MAILCONDUIT_CONN_{CONNECTION.upper()}", connection_url(server.port))
        result = cli(*args, "--detach")
        assert result.code == 2 and "detach" in result.err
        assert server.messages == []


def test_console_and_rest_show_agents_and_chunks(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cli: Any
) -> None:
    from webconsole import running_console

    monkeypatch.setenv("MAILCONDUIT_AGENT_CHUNK_ROWS", "4")
    source = write_csv(tmp_path / "people.csv", people(10))
    server = TimedFaultServer()
    with server, running_console() as console:
        use_agent_server(cluster, monkeypatch, server.port)
        worker = cluster.start_worker()
        cluster.wait_live(1)
        report = send_standard(source, CONNECTION)
        assert report.status == "finished"
        signed = console.signed_in()
        agents = signed.api("GET", "/api/agents").json()
        (mine,) = [a for a in agents if a["name"] == cluster.agent]
        assert [w["host"] for w in mine["workers"]] == [socket.gethostname()]
        chunks = signed.api("GET", f"/api/runs/{report.run_id}/chunks").json()
        assert [(c["first_row"], c["last_row"], c["state"]) for c in chunks] == [
            (1, 4, "done"), (5, 8, "done"), (9, 10, "done")
        ]
        assert sum(c["counts"]["sent"] for c in chunks) == 10
        assert all(c["worker"].split(":")[1].isdigit() for c in chunks)
        page = signed.http.get("/agents")
        assert page.status_code == 200 and cluster.agent in page.text
        run_page = signed.http.get(f"/runs/{report.run_id}")
        assert 'id="chunks"' in run_page.text
        shown = cli("runs", "show", report.run_id)
        assert shown.code == 0 and "chunks" in shown.out and "worker" in shown.out
        stop = signed.api("POST", f"/api/runs/{report.run_id}/stop")
        assert stop.status_code == 202  # an ended run: nothing left to stop
        signed.http.close()
        assert worker.process.poll() is None


def test_ctrl_c_on_an_attached_export_stops_every_worker_once(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import signal
    import subprocess

    from delivery_support import MAILCONDUIT

    n = 80
    source = write_csv(tmp_path / "people.csv", people(n))
    with agent_connection(cluster, monkeypatch, faults={("DOT", "*"): "delay:0.05"}) as server:
        cluster.start_worker(MAILCONDUIT_AGENT_CHUNK_ROWS="10")
        cluster.start_worker()
        cluster.wait_live(2)
        coordinator = subprocess.Popen(
            [MAILCONDUIT, "export", str(source), "--connection", CONNECTION, "--to", "{{ email }}",
             "--subject", "s", "--body", "b", "--key", "id", "--concurrency", "1",
             "--run-id", "ctrl-c"],
            env={**cluster.env, "MAILCONDUIT_AGENT_CHUNK_ROWS": "10"},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            wait_for(lambda: len(server.messages) >= 6, what="six messages")
            coordinator.send_signal(signal.SIGINT)
            out, err = coordinator.communicate(timeout=120)
        finally:
            if coordinator.poll() is None:
                coordinator.kill()
        assert coordinator.returncode == 1, (out, err)
        info = api.get_run("ctrl-c")
        assert info.status == "interrupted" and "SIGINT" in info.message
        assert info.counts.get("sent", 0) < n
        assert all(w.process.poll() is None for w in cluster.workers)  # the workers go on
        resumed = api.resume("ctrl-c")
        assert resumed.status == "finished"
        assert len({m.rcpt_tos[0] for m in server.messages}) == n


def test_a_stored_connection_is_used_by_workers_with_the_same_key_only(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Connections live in the shared store, passwords encrypted at rest: a worker with
    another MAILCONDUIT_KEY cannot use one, and says so; one with the key sends."""
    from cryptography.fernet import Fernet

    source = write_csv(tmp_path / "people.csv", people(6))
    server = TimedFaultServer(credentials={"robot": "s3cret-pass"})
    with server:
        api.create_connection({
            "name": "vault", "server_url": "127.0.0.1", "port": server.port,
            "username": "robot", "password": "s3cret-pass", "from_address": "robot@example.com",
            "security": "none", "allow_insecure_auth": True, "agent": cluster.agent,
            "implementation_type": "celery",
        })  # fmt: skip
        stranger = cluster.start_worker(MAILCONDUIT_KEY=Fernet.generate_key().decode())
        cluster.wait_live(1)
        report = send_standard(source, "vault")
        assert report.status == "failed"
        assert "cannot be decrypted" in report.message and socket.gethostname() in report.message
        assert "s3cret-pass" not in report.message + stranger.output()
        assert server.messages == []
        stranger.process.terminate()
        stranger.process.wait(60)
        cluster.start_worker()
        cluster.wait_live(1)
        resumed = api.resume(report.run_id)
        assert resumed.status == "finished"
        assert len(server.messages) == 6


def test_an_interface_on_a_celery_connection_runs_on_its_agent(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A saved interface (as the scheduler runs it) goes through the connection's agent: the
    rows are sent by the workers, the run has chunks, and the interface's history has it."""
    from mailconduit.interfaces import runner, service
    from mailconduit.interfaces.model import DATA_DIRS_ENV
    from mailconduit.journal.agents import AgentStore

    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv(DATA_DIRS_ENV, str(data))
    source = write_csv(data / "people.csv", people(20))
    with agent_connection(cluster, monkeypatch) as server:
        cluster.start_worker(MAILCONDUIT_AGENT_CHUNK_ROWS="5")
        cluster.wait_live(1)
        monkeypatch.setenv("MAILCONDUIT_AGENT_CHUNK_ROWS", "5")
        service.save_interface(
            {"name": "on-agent", "export": {"source": str(source), "connection": CONNECTION,
                                            "to": "{{ email }}", "subject": "s", "body": "b",
                                            "key": "id"}}
        )  # fmt: skip
        report = runner.run_interface("on-agent")
        assert report.status == "finished", report.message
        assert report.counts.get("sent") == 20
        got = deliveries(server.messages)
        assert sorted(got) == sorted(f"user{i}@example.com" for i in range(20))
        assert all(len(ids) == 1 for ids in got.values())
        store = AgentStore()
        try:
            assert len(store.chunks(report.run_id)) == 4  # it ran as chunks on the agent
        finally:
            store.close()
        (entry,) = service.history("on-agent")
        assert entry.run_id == report.run_id


def test_max_errors_counts_the_whole_run_across_three_workers_and_resume_goes_on(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Chunks of 4 rows and --max-errors 6: no chunk alone can reach the budget, the run
    does. Once it does, every worker stops, the run is paused with why; resume sends the
    rows left (the failed ones stay failed, as a local resume leaves them)."""
    from mailconduit.errors import MailconduitError

    n, budget = 120, 6
    monkeypatch.setenv("MAILCONDUIT_AGENT_CHUNK_ROWS", "4")
    source = write_csv(tmp_path / "people.csv", people(n))
    # Every second message is refused for good at its ".": about half the rows fail.
    refusals = {("DOT", k): "554 5.6.0 refused by policy" for k in range(2, 2 * n, 2)}
    with agent_connection(
        cluster, monkeypatch, faults={**refusals, ("MAIL", "*"): "delay:0.02"}
    ) as server:
        for _ in range(3):
            # One chunk of 4 rows per task: no chunk merged into another can reach the budget.
            cluster.start_worker(MAILCONDUIT_AGENT_CHAIN_SECONDS="0.001")
        cluster.wait_live(3)
        run_id = detach(source, max_errors=budget)
        wait_for(lambda: run_status(run_id) != "running", what="the run to pause")
        info = api.get_run(run_id)
        assert info.status == "paused", info.message
        assert "across the run" in info.message and f"--max-errors {budget}" in info.message
        failed = info.counts.get("failed", 0)
        assert failed >= budget
        # Every worker stopped: far from every row has an outcome.
        assert failed + info.counts.get("sent", 0) < n // 2, info.counts
        chunks = api.run_chunks(run_id)
        assert all(c.state in ("done", "stopped") for c in chunks), chunks
        assert len({c.worker for c in chunks if c.counts.get("failed")}) >= 2  # several workers
        failed_keys = {k for k, r in journal_rows(run_id).items() if r.state == "failed"}
        server.clear_faults()
        try:
            report = api.resume(run_id)
        except MailconduitError as exc:  # pragma: no cover - the assertion says why
            pytest.fail(f"resume refused: {exc}")
        assert report.status == "finished", report.message
        rows = journal_rows(run_id)
        assert {k for k, r in rows.items() if r.state == "failed"} == failed_keys
        assert {k for k, r in rows.items() if r.state == "sent"} == {
            str(i) for i in range(n)
        } - failed_keys
        got = deliveries(server.messages)
        assert all(len(ids) == 1 for ids in got.values()), got  # no row sent twice
        assert len(got) == n - len(failed_keys)


def test_the_python_api_queues_a_run_until_a_worker_starts(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import asyncio
    import threading

    import mailconduit
    from mailconduit.errors import ConfigError

    source = write_csv(tmp_path / "people.csv", people(9))
    with agent_connection(cluster, monkeypatch) as server:
        # No live worker and no queue=True: refused before any row is read.
        with pytest.raises(ConfigError) as refused:
            asyncio.run(
                mailconduit.aexport(
                    str(source), connection=CONNECTION, to="{{ email }}", subject="s", body="b"
                )
            )
        assert refused.value.field == "agent"
        assert api.list_runs() == []
        # queue=True: the call waits for a worker, which sends the run.
        reports: list[Any] = []
        errors: list[BaseException] = []

        def export() -> None:
            try:
                report = mailconduit.export(
                    str(source), connection=CONNECTION, to="{{ email }}", subject="s", body="b",
                    key="id", queue=True,
                )  # fmt: skip
                reports.append(report)
            except BaseException as exc:  # shown by the assertion below
                errors.append(exc)

        caller = threading.Thread(target=export)
        caller.start()
        try:
            wait_for(lambda: bool(api.list_runs()) or bool(errors), what="the run queued")
            assert not errors, errors
            (queued,) = api.list_runs()
            assert queued.status == "running"
            assert queued.counts.get("sent", 0) == 0 and server.messages == []
            assert caller.is_alive()  # still waiting: no worker yet
            cluster.start_worker()
            caller.join(120)
        finally:
            if caller.is_alive():
                api.stop_run(api.list_runs()[0].run_id)
                caller.join(60)
        assert not errors, errors
        (report,) = reports
        assert report.status == "finished", report.message
        assert report.counts.get("sent") == 9
        assert sorted(deliveries(server.messages)) == sorted(
            f"user{i}@example.com" for i in range(9)
        )


@pytest.mark.parametrize("chain_seconds", ["60", "0.001"])
def test_a_task_goes_on_with_the_runs_next_chunks_through_its_sessions(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, chain_seconds: str
) -> None:
    """A worker whose chunk ended well claims the run's next queued chunk itself and sends it
    through the sessions it has open (one task, one owner, two sessions for six chunks); the
    chunk's own task message then finds it taken. With a chain too short for a second
    chunk, each chunk is its own task, with sessions of its own."""
    source = write_csv(tmp_path / "people.csv", people(30))
    with agent_connection(cluster, monkeypatch) as server:
        cluster.start_worker(MAILCONDUIT_AGENT_CHAIN_SECONDS=chain_seconds)
        cluster.wait_live(1)
        monkeypatch.setenv("MAILCONDUIT_AGENT_CHUNK_ROWS", "5")
        run_id = api.detach_export(
            api.export_spec({"source": str(source), "connection": CONNECTION, "to": "{{ email }}",
                             "subject": "Hi", "body": "Dear {{ name }}", "key": "id",
                             "concurrency": 2}),
            queue=True,
        )  # fmt: skip
        wait_for(lambda: run_status(run_id) != "running", what="the run's end")
        assert run_status(run_id) == "finished"
        got = deliveries(server.messages)
        assert sorted(got) == sorted(f"user{i}@example.com" for i in range(30))
        assert all(len(ids) == 1 for ids in got.values()), got
        store = cluster.store()
        try:
            chunks = store.chunks(run_id)
        finally:
            store.close()
        assert {c.state for c in chunks} == {"done"}
        ranges = sorted((c.first_row, c.last_row) for c in chunks)
        assert [r for a, b in ranges for r in range(a, b + 1)] == list(range(1, 31)), ranges
        owners = {c.owner for c in chunks}
        sessions = {m.session for m in server.messages}
        if chain_seconds == "60":
            assert len(owners) == 1, owners
            assert len(sessions) <= 2, sessions
            # Chunks no worker had tried were merged into the one claimed after the first
            # (a half of the rows still queued at most), then smaller ones towards the end.
            assert len(chunks) < 6 and max(b - a + 1 for a, b in ranges) == 10, ranges
        else:
            assert len(chunks) == 6, ranges
            assert len(owners) == 6, owners
            assert len(sessions) >= 6, sessions

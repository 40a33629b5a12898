"""``mailconduit run interface.yaml``: the export's settings in a file a scheduler runs from
anywhere; running it again with the same run id resumes (no row is ever sent twice).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from export_support import (
    by_recipient,
    connect_to,
    server_messages,
    sink_messages,
    write_csv,
)
from mailconduit.testing import FaultServer

ROWS = [{"id": str(n), "name": f"Person {n}", "email": f"p{n}@example.com"} for n in range(1, 13)]


@pytest.fixture
def job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A job folder: data, a body template and an interface file with relative paths;
    the working directory is somewhere else, as under cron."""
    folder = tmp_path / "job"
    (folder / "data").mkdir(parents=True)
    (folder / "templates").mkdir()
    (folder / "attachments").mkdir()
    write_csv(folder / "data" / "people.csv", ROWS)
    (folder / "templates" / "body.txt").write_text(
        "Dear {{ name }},\nyour number is {{ id }}.\n", encoding="utf-8"
    )
    (folder / "attachments" / "terms.txt").write_text("Terms.\n", encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return folder


def write_interface(folder: Path, **settings: Any) -> Path:
    doc = {
        "export": {
            "source": "data/people.csv",
            "connection": "local",
            "to": "{{ name }} <{{ email }}>",
            "subject": "Number {{ id }}",
            "body_file": "templates/body.txt",
            "attach": ["terms.txt"],
            "attach_dir": "attachments",
            "key": "id",
            "report": "report.json",
            **settings,
        }
    }
    path = folder / "interface.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def test_run_reads_relative_paths_from_the_files_folder(cli: Any, job: Path) -> None:
    interface = write_interface(job)
    result = cli("run", str(interface))
    assert result.code == 0, result.output
    got = by_recipient(sink_messages())
    assert sorted(got) == sorted(r["email"] for r in ROWS)
    seven = got["p7@example.com"]
    assert seven.header("Subject") == "Number 7"
    assert seven.text() == "Dear Person 7,\nyour number is 7.\n"
    assert seven.attachments() == {"terms.txt": b"Terms.\n"}
    report = json.loads((job / "report.json").read_text(encoding="utf-8"))
    assert report["counts"] == {"sent": 12} and report["status"] == "finished"
    assert not (Path.cwd() / "report.json").exists()


def test_rerunning_with_the_same_run_id_resumes_and_never_sends_a_row_twice(
    cli: Any, job: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A slow server without pipelining, so the stop lands while rows are still unsent.
    faults = {("RCPT", 4): "550 5.1.1 mailbox unavailable", ("DOT", "*"): "delay:0.05"}
    with FaultServer(pipelining=False, faults=faults) as server:
        name = connect_to(monkeypatch, server.port)
        interface = write_interface(job, connection=name, fail_fast=True, concurrency=1)

        first = cli("run", str(interface), "--run-id", "nightly", "--json")
        assert first.code == 1, first.output
        report = json.loads(first.out)
        assert report["status"] == "aborted" and report["counts"]["failed"] == 1
        sent_first = len(server.messages)
        assert 0 < sent_first < 11

        server.clear_faults()
        second = cli("run", str(interface), "--run-id", "nightly", "--json")
        assert second.code == 1, second.output  # the failed row stays failed
        report = json.loads(second.out)
        assert report["status"] == "finished"
        assert report["counts"] == {"sent": 11, "failed": 1}
        assert report["sent_before"] == sent_first

        third = cli("run", str(interface), "--run-id", "nightly")
        assert third.code == 1
        assert "11 sent (11 of them by an earlier attempt), 1 failed" in third.out
        assert "row 4 (4) failed: 550 5.1.1 mailbox unavailable" in third.out

        # each recipient exactly once (by_recipient fails on a second copy)
        got = by_recipient(server_messages(server))
        failed = next(r for r in report["rows"] if r["status"] == "failed")
        assert sorted(got) == sorted(
            r["email"] for r in ROWS if r["email"] not in failed["recipients"]
        )

        # the failed row goes again only when asked
        retried = cli("runs", "resume", "nightly", "--retry-failed")
        assert retried.code == 0, retried.output
        again = by_recipient(server_messages(server))
        assert sorted(again) == sorted(r["email"] for r in ROWS)


def test_a_run_id_cannot_resume_over_changed_data(cli: Any, job: Path) -> None:
    interface = write_interface(job)
    assert cli("run", str(interface), "--run-id", "weekly").code == 0
    write_csv(
        job / "data" / "people.csv", [*ROWS, {"id": "99", "name": "New", "email": "n@example.com"}]
    )
    result = cli("run", str(interface), "--run-id", "weekly")
    assert result.code == 2
    assert "changed" in result.err and "people.csv" in result.err
    assert len(sink_messages()) == len(ROWS)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("export:\n  source: data/people.csv\n  to: [unclosed\n", ("interface.yaml",)),
        ("- just\n- a list\n", ("interface.yaml", "mapping")),
        ("export:\n  source: data/people.csv\n  to: '{{ email }}'\n  subject: s\n  body: b\n"
         "  colour: blue\n", ("colour", "not an export setting")),
        ("export:\n  source: data/missing.csv\n  to: '{{ email }}'\n  subject: s\n  body: b\n",
         ("missing.csv",)),
        ("export:\n  source: data/people.csv\n  to: '{{ mail }}'\n  subject: s\n  body: b\n",
         ("'mail'", "people.csv")),
    ],
)  # fmt: skip
def test_a_broken_interface_file_exits_2_with_one_line(
    cli: Any, job: Path, content: str, words: tuple[str, ...]
) -> None:
    interface = job / "interface.yaml"
    interface.write_text(content, encoding="utf-8")
    result = cli("run", str(interface))
    assert result.code == 2, result.output
    lines = result.err.strip().splitlines()
    assert len(lines) == 1
    for word in words:
        assert word in lines[0]
    assert sink_messages() == []


def test_a_missing_interface_file(cli: Any, tmp_path: Path) -> None:
    result = cli("run", str(tmp_path / "nope.yaml"))
    assert result.code == 2
    assert "nope.yaml" in result.err and len(result.err.strip().splitlines()) == 1


def test_an_overlapping_run_with_the_same_id_is_refused(
    cli: Any, job: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cron job started again while the previous one is still sending must not send the
    rows the first one has claimed: it stops with one line, and a later run resumes."""
    mailconduit = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "mailconduit"
    with FaultServer(pipelining=False, faults={("DOT", "*"): "delay:0.15"}) as server:
        name = connect_to(monkeypatch, server.port)
        interface = write_interface(job, connection=name, concurrency=1)
        first = subprocess.Popen(
            [str(mailconduit), "run", str(interface), "--run-id", "cron", "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ),
        )  # fmt: skip
        try:
            server.wait_for_sync(lambda: len(server.messages) >= 1, timeout=30)
            second = cli("run", str(interface), "--run-id", "cron")
            assert first.wait(timeout=60) == 0, first.communicate()
        finally:
            if first.poll() is None:
                first.kill()
                first.wait(10)
        assert second.code == 2
        assert "'cron' is being sent by another process" in second.err
        assert len(second.err.strip().splitlines()) == 1
        assert len(by_recipient(server_messages(server))) == len(ROWS)  # no duplicate
        third = cli("run", str(interface), "--run-id", "cron")
        assert third.code == 0 and len(server.messages) == len(ROWS)

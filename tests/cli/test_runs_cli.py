"""``mailconduit runs list|show|report|resume`` and the run id ``export`` prints, in-process."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from delivery_support import (
    export_args,
    fault_connection,
    people,
    people_csv,
    write_csv,
)
from mailconduit.delivery.report import REPORT_COLUMNS

FAULTS = {
    ("RCPT", 2): "550 5.1.1 no such user",
    ("RCPT", 4): "550 5.1.1 b is gone",
}


@pytest.fixture
def finished_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cli: Any) -> str:
    """Run ``r1``: four rows; row 1 refused, row 2 sent to a but refused for b."""
    rows = people(4)
    rows[2]["email"] = "a@example.com, b@example.com"
    source = write_csv(tmp_path / "people.csv", rows)
    with fault_connection(monkeypatch, faults=FAULTS):
        result = cli(*export_args(source, "r1", "--concurrency", "1"))
    assert result.code == 1  # a row failed
    assert "run r1: finished: 3 sent, 1 failed" in result.out
    assert "row 2 (1) failed: 550 5.1.1 no such user" in result.out
    return "r1"


def test_runs_list_shows_each_run_with_its_counts(cli: Any, finished_run: str) -> None:
    result = cli("runs", "list")
    assert result.code == 0
    header, line = result.out.splitlines()
    assert header.split() == [
        "RUN", "STATUS", "CONNECTION", "MODE", "STARTED", "TOTAL", "SENT", "FAILED", "SKIPPED",
        "UNCERTAIN",
    ]  # fmt: skip
    cells = line.split()
    assert cells[:4] == ["r1", "finished", "fault", "row"]
    assert cells[-5:] == ["4", "3", "1", "0", "0"]

    as_json = json.loads(cli("runs", "list", "--json").out)
    assert [r["run_id"] for r in as_json] == ["r1"]
    assert as_json[0]["counts"] == {"sent": 3, "failed": 1}
    assert as_json[0]["status"] == "finished" and as_json[0]["total"] == 4


def test_runs_show_tells_status_source_and_counts(
    cli: Any, finished_run: str, tmp_path: Path
) -> None:
    result = cli("runs", "show", "r1")
    assert result.code == 0
    fields = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in result.out.splitlines())
    assert fields["run"] == "r1" and fields["status"] == "finished"
    assert fields["source"] == str(tmp_path / "people.csv")
    assert (fields["total"], fields["sent"], fields["failed"]) == ("4", "3", "1")
    assert fields["finished"] != "-"

    shown = json.loads(cli("runs", "show", "r1", "--json").out)
    assert shown["spec"]["to"] == "{{ email }}" and shown["counts"] == {"sent": 3, "failed": 1}


def test_runs_report_gives_every_row_with_its_reply_and_refused_recipients(
    cli: Any, finished_run: str
) -> None:
    result = cli("runs", "report", "r1")
    assert result.code == 0
    table = list(csv.DictReader(io.StringIO(result.out)))
    assert tuple(table[0]) == REPORT_COLUMNS
    assert [(r["row_key"], r["status"]) for r in table] == [
        ("0", "sent"),
        ("1", "failed"),
        ("2", "sent"),
        ("3", "sent"),
    ]
    failed = table[1]
    assert (failed["code"], failed["enhanced"], failed["reply"]) == ("550", "5.1.1", "no such user")
    assert table[2]["recipients"] == "a@example.com, b@example.com"
    assert table[2]["refused_recipients"] == "b@example.com 550 b is gone"
    assert all(re.fullmatch(r"<[^@]+@example\.com>", r["message_id"]) for r in table)
    assert len({r["message_id"] for r in table}) == 4

    as_json = json.loads(cli("runs", "report", "r1", "--format", "json").out)
    assert as_json["counts"] == {"sent": 3, "failed": 1}
    assert as_json["rows"][2]["refused_recipients"] == [
        {"recipient": "b@example.com", "code": 550, "reply": "b is gone"}
    ]


@pytest.mark.parametrize("name", ["out.csv", "out.json"])
def test_runs_report_to_a_file(cli: Any, finished_run: str, tmp_path: Path, name: str) -> None:
    target = tmp_path / name
    result = cli("runs", "report", "r1", "--output", str(target))
    assert result.code == 0 and f"report written to {target}" in result.out
    text = target.read_text(encoding="utf-8")
    if name.endswith(".json"):
        assert len(json.loads(text)["rows"]) == 4
    else:
        assert len(list(csv.DictReader(io.StringIO(text)))) == 4


def test_a_reply_that_looks_like_a_formula_is_neutralised_in_the_csv_report(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cli: Any
) -> None:
    source = people_csv(tmp_path, 1)
    faults = {("RCPT", 1): '550 5.7.1 =HYPERLINK("http://evil.example")'}
    with fault_connection(monkeypatch, faults=faults):
        assert cli(*export_args(source, "formula")).code == 1
    [row] = list(csv.DictReader(io.StringIO(cli("runs", "report", "formula").out)))
    assert row["reply"] == '\'=HYPERLINK("http://evil.example")'


def test_runs_list_is_newest_first_and_limited(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cli: Any
) -> None:
    source = people_csv(tmp_path, 2)
    with fault_connection(monkeypatch):
        for run_id in ("first", "second", "third"):
            assert cli(*export_args(source, run_id)).code == 0
    listed = [line.split()[0] for line in cli("runs", "list").out.splitlines()[1:]]
    assert listed == ["third", "second", "first"]
    limited = cli("runs", "list", "--limit", "1").out.splitlines()[1:]
    assert [line.split()[0] for line in limited] == ["third"]


def test_export_prints_its_generated_run_id_and_how_to_resume(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cli: Any
) -> None:
    source = people_csv(tmp_path, 3)
    with fault_connection(monkeypatch, faults={("RCPT", 1): "550 5.1.1 no such user"}):
        args = export_args(source, "x", "--max-errors", "1", "--concurrency", "1")
        args = args[: args.index("--run-id")] + args[args.index("--run-id") + 2 :]
        result = cli(*args)
    assert result.code == 1
    started = re.search(r"run (\d{8}-\d{6}-[0-9a-f]{6}) started \(3 rows\)", result.output)
    assert started is not None, result.output
    run_id = started.group(1)
    assert f"to resume if interrupted: mailconduit runs resume {run_id}" in result.output
    assert f"run {run_id}: paused" in result.out
    assert f"resume with: mailconduit runs resume {run_id}" in result.out
    assert cli("runs", "list").out.splitlines()[1].split()[:2] == [run_id, "paused"]


def test_runs_resume_json_reports_the_whole_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cli: Any
) -> None:
    source = people_csv(tmp_path, 5)
    with fault_connection(monkeypatch, faults={("RCPT", 1): "451 4.3.0 later"}):
        first = cli(*export_args(source, "j", "--max-attempts", "1", "--max-errors", "1",
                                 "--concurrency", "1"))  # fmt: skip
        assert first.code == 1
        resumed = cli("runs", "resume", "j", "--retry-failed", "--json")
    assert resumed.code == 0, resumed.output
    report = json.loads(resumed.out)
    assert report["run_id"] == "j" and report["status"] == "finished"
    assert report["counts"] == {"sent": 5}
    assert [r["status"] for r in report["rows"]] == ["sent"] * 5


@pytest.mark.parametrize("command", ["show", "report", "resume"])
def test_an_unknown_run_is_one_clear_line(cli: Any, command: str) -> None:
    result = cli("runs", command, "nope")
    assert result.code == 2
    assert result.err.strip() == "mailconduit: no run named 'nope'"

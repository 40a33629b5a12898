"""``mailconduit export`` as a user runs it: execution rules, dry run, fail-fast, reports,
JSON output and exit statuses (0 all sent, 1 some rows failed, 2 bad input, nothing sent).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from export_support import (
    by_recipient,
    connect_to,
    parse,
    server_messages,
    sink_messages,
    use_free_sink_port,
    write_csv,
)
from mailconduit.testing import FaultServer

PEOPLE = [
    {"id": "=HYPERLINK(\"http://evil.example\")", "name": "Ann", "email": "ann@example.com"},
    {"id": "+41", "name": "Bob", "email": "bob@example.com"},
    {"id": "-7", "name": "Cid", "email": "cid@"},
    {"id": "@SUM(A1)", "name": "Dee", "email": "dee@example.com"},
    {"id": "plain", "name": "Eve", "email": "eve@example.com"},
]  # fmt: skip
BASIC = (
    "--to",
    "{{ name }} <{{ email }}>",
    "--subject",
    "Hello {{ name }}",
    "--body",
    "Hi {{ name }}!",
)


@pytest.fixture(autouse=True)
def sink_port(monkeypatch: pytest.MonkeyPatch) -> int:
    return use_free_sink_port(monkeypatch)


@pytest.fixture
def people(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "people.csv", PEOPLE)


@pytest.fixture
def good_people(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "good.csv", [p for p in PEOPLE if p["email"] != "cid@"])


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as srv:
        yield srv


def test_a_clean_export_exits_0_and_says_what_it_did(cli: Any, good_people: Path) -> None:
    result = cli("export", str(good_people), *BASIC)
    assert result.code == 0, result.output
    summary = result.out.strip().splitlines()
    assert len(summary) == 1
    assert ": finished: 4 sent in " in summary[0]
    assert "started (4 rows)" in result.err and "mailconduit runs resume" in result.err
    got = by_recipient(sink_messages())
    assert sorted(got) == sorted(p["email"] for p in PEOPLE if p["email"] != "cid@")
    assert got["ann@example.com"].text() == "Hi Ann!\n"


# --------------------------------------------------------------------------- execution rules


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"is_active": "false"}, ("inactive", "connections edit target --active")),
        ({"is_target": "false"}, ("not a target", "--target")),
        # sent by agents now; still refused first when inactive (tests/test_agents.py: the rest)
        ({"implementation_type": "celery", "agent": "eu-workers", "is_active": "false"},
         ("inactive", "connections edit target --active")),
    ],
)  # fmt: skip
def test_a_connection_that_may_not_send_is_refused_before_any_row_is_read(
    cli: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: FaultServer,
    fields: dict[str, str], words: tuple[str, ...],
) -> None:  # fmt: skip
    name = connect_to(monkeypatch, server.port, **fields)
    # The source does not even exist: the refusal must come before it is opened.
    result = cli("export", str(tmp_path / "absent.csv"), "--connection", name, *BASIC)
    assert result.code == 2
    assert result.out == ""
    line = result.err.strip()
    assert len(line.splitlines()) == 1 and "'target'" in line and "absent.csv" not in line
    for word in words:
        assert word in line
    assert server.session_count == 0


def test_an_unknown_connection_is_refused(cli: Any, good_people: Path) -> None:
    result = cli("export", str(good_people), "--connection", "nowhere", *BASIC)
    assert result.code == 2
    assert result.err.strip() == "mailconduit: no connection named 'nowhere'"


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (("--mode", "group"), ("by", "--by")),
        (("--mode", "sideways"), ("mode",)),
        (("--to-column", "email"), ("to_column", "table or group mode")),
        (("--table-format", "pdf", "--mode", "table"), ("table_formats", "pdf")),
        (("--rate", "fast"), ("rate",)),
        (("--run-id", "bad id!"), ("run_id",)),
        (("--charset", "klingon"), ("charset", "klingon")),
        (("--attach", "{{ file }}"), ("attach_dir",)),
    ],
)
def test_bad_options_exit_2_with_one_line(
    cli: Any, good_people: Path, options: tuple[str, ...], words: tuple[str, ...]
) -> None:
    result = cli("export", str(good_people), *BASIC, *options)
    assert result.code == 2, result.output
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mailconduit: ")
    for word in words:
        assert word in lines[0]
    assert sink_messages() == []


# --------------------------------------------------------------------------- dry run


def test_dry_run_writes_eml_files_prints_a_preview_and_sends_nothing(
    cli: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: FaultServer,
    good_people: Path,
) -> None:  # fmt: skip
    name = connect_to(monkeypatch, server.port)
    out = tmp_path / "preview"
    result = cli(
        "export", str(good_people), "-c", name, *BASIC, "--dry-run", str(out), "--limit", "2"
    )
    assert result.code == 0, result.output
    files = sorted(out.iterdir())
    assert [f.suffix for f in files] == [".eml", ".eml"]
    first, second = (parse(f.read_bytes()) for f in files)
    assert str(first["Subject"]) == "Hello Ann" and str(second["Subject"]) == "Hello Bob"
    assert first["Message-ID"] and first["Date"] and first["MIME-Version"] == "1.0"
    # the preview of the first message: its headers and its text
    assert "Subject: Hello Ann" in result.out and "To: Ann <ann@example.com>" in result.out
    assert "Hi Ann!" in result.out
    assert "2 written" in result.out and str(out) in result.out
    assert server.session_count == 0 and server.messages == []


def test_dry_run_does_not_start_the_local_sink(cli: Any, tmp_path: Path, good_people: Path) -> None:
    from mailconduit import sink

    result = cli("export", str(good_people), *BASIC, "--dry-run", str(tmp_path / "out"))
    assert result.code == 0, result.output
    assert len(list((tmp_path / "out").iterdir())) == 4
    assert not sink.is_running() and sink.count_messages() == 0


# --------------------------------------------------------------------------- failures


def many(tmp_path: Path, count: int, *, broken: int = 0) -> Path:
    """many.csv: people P1..P``count`` (p1@example.com...); row ``broken`` has a bad address."""
    rows = [{"name": f"P{i}", "email": f"p{i}@example.com"} for i in range(1, count + 1)]
    if broken:
        rows[broken - 1]["email"] = "broken@"
    return write_csv(tmp_path / "many.csv", rows)


def export_many(
    cli: Any, monkeypatch: pytest.MonkeyPatch, data: Path, faults: dict[tuple[str, int], str],
    *args: str,
) -> tuple[FaultServer, Any]:
    """``mailconduit export`` of ``data`` through a server answering with ``faults``."""
    with FaultServer(faults=faults) as server:
        name = connect_to(monkeypatch, server.port)
        result = cli("export", str(data), "-c", name, *BASIC, *args)
    return server, result


def test_by_default_a_failed_row_is_reported_and_the_others_go_on(
    cli: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    faults = {("RCPT", 3): "550 5.1.1 no such user here"}
    server, result = export_many(cli, monkeypatch, many(tmp_path, 8), faults, "--json")
    assert result.code == 1, result.output
    report = json.loads(result.out)
    assert report["status"] == "finished"
    assert report["counts"] == {"sent": 7, "failed": 1}
    failed = [r for r in report["rows"] if r["status"] == "failed"]
    assert len(failed) == 1
    assert failed[0]["code"] == 550 and failed[0]["enhanced"] == "5.1.1"
    assert "no such user here" in failed[0]["reply"]
    assert len(server.messages) == 7
    refused = failed[0]["recipients"][0]
    assert refused not in by_recipient(server_messages(server))


def test_fail_fast_stops_at_the_first_failed_row(
    cli: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    faults = {("RCPT", 2): "550 5.1.1 no such user"}
    server, result = export_many(
        cli, monkeypatch, many(tmp_path, 40), faults, "--fail-fast", "--concurrency", "1", "--json"
    )
    assert result.code == 1, result.output
    report = json.loads(result.out)
    assert report["status"] == "aborted" and "--fail-fast" in report["message"]
    assert report["counts"]["failed"] == 1
    assert report["counts"].get("sent", 0) < 40
    # only rows the server had before the failure came back went out
    assert len(server.messages) == report["counts"].get("sent", 0) < 39
    pending = [r for r in report["rows"] if r["status"] not in ("sent", "failed")]
    assert pending, "the rows after the failure must stay unsent (resumable)"


def test_fail_fast_stops_at_a_row_that_cannot_be_built(
    cli: Any, monkeypatch: pytest.MonkeyPatch, server: FaultServer, tmp_path: Path
) -> None:
    data = many(tmp_path, 30, broken=15)
    name = connect_to(monkeypatch, server.port)
    result = cli("export", str(data), "-c", name, *BASIC, "--fail-fast")
    assert result.code == 1
    assert "aborted" in result.out and "--fail-fast" in result.out
    assert "row 15" in result.out and "broken@" in result.out
    sent = by_recipient(server_messages(server))
    assert not [r for r in sent if int(r.split("@")[0][1:]) > 15]
    # ...and every row before the broken one went out: the run stops exactly there.
    assert sorted(int(r.split("@")[0][1:]) for r in sent) == list(range(1, 15))


# --------------------------------------------------------------------------- reports


def test_report_files_csv_with_formulas_neutralised_and_json(
    cli: Any, tmp_path: Path, people: Path
) -> None:
    csv_report = tmp_path / "report.csv"
    options = ("--to", "{{ email }}", "--subject", "s", "--body", "b", "--key", "id")
    result = cli("export", str(people), *options, "--report", str(csv_report))
    assert result.code == 1  # one row was skipped
    json_report = tmp_path / "report.json"
    cli("runs", "report", json.loads(cli("runs", "list", "--json").out)[0]["run_id"],
        "--output", str(json_report))  # fmt: skip

    table = list(csv.DictReader(io.StringIO(csv_report.read_text(encoding="utf-8"))))
    assert [r["row_key"] for r in table] == [
        "'=HYPERLINK(\"http://evil.example\")", "'+41", "'-7", "'@SUM(A1)", "plain",
    ]  # fmt: skip
    assert [r["status"] for r in table] == ["sent", "sent", "skipped", "sent", "sent"]
    skipped = table[2]
    assert skipped["column"] == "email" and "cid@" in skipped["reply"]
    assert skipped["row_number"] == "3"
    sent = table[0]
    assert sent["recipients"] == "ann@example.com" and sent["code"] == "250"
    assert sent["message_id"].startswith("<") and sent["message_id"].endswith("@example.com>")

    data = json.loads(json_report.read_text(encoding="utf-8"))
    assert [r["row_key"] for r in data["rows"]] == [p["id"] for p in PEOPLE]
    assert [r["message_id"] for r in data["rows"]] == [r["message_id"] for r in table]
    delivered = {m.header("Message-ID") for m in sink_messages()}
    assert delivered == {r["message_id"] for r in table if r["status"] == "sent"}


def test_json_output_is_the_whole_report(cli: Any, good_people: Path, tmp_path: Path) -> None:
    report_file = tmp_path / "r.json"
    result = cli("export", str(good_people), *BASIC, "--json", "--report", str(report_file))
    assert result.code == 0
    printed = json.loads(result.out)
    assert printed == json.loads(report_file.read_text(encoding="utf-8"))
    assert printed["status"] == "finished" and printed["counts"]["sent"] == 4
    assert printed["connection"] == "local" and printed["total"] == 4
    assert [r["status"] for r in printed["rows"]] == ["sent"] * 4
    assert {r["recipients"][0] for r in printed["rows"]} == {
        m.recipients[0] for m in sink_messages()
    }


def test_html_and_text_flags_override_the_connection(
    cli: Any, monkeypatch: pytest.MonkeyPatch, server: FaultServer, good_people: Path
) -> None:
    html_conn = connect_to(monkeypatch, server.port, name="htmlconn", use_html_body="true")
    body = ("--body", "<p>Hi <b>{{ name }}</b></p>", "--limit", "1")
    options = ("--to", "{{ email }}", "--subject", "s", *body)
    assert cli("export", str(good_people), "-c", html_conn, *options).code == 0
    assert cli("export", str(good_people), "-c", html_conn, *options, "--text").code == 0
    assert cli("export", str(good_people), *options, "--html").code == 0  # local: text
    assert cli("export", str(good_people), *options).code == 0
    as_html, as_text = (m.message for m in server_messages(server))
    assert as_html.get_content_type() == "multipart/alternative"
    assert as_text.get_content_type() == "text/plain"
    local_html, local_text = sorted(
        (m.message for m in sink_messages()), key=lambda m: m.get_content_type()
    )
    assert local_html.get_content_type() == "multipart/alternative"
    assert local_text.get_content_type() == "text/plain"
    assert "<b>Ann</b>" in local_text.get_content()


@pytest.mark.parametrize(
    "source_args",
    [
        ["people.csv"],  # a file and a query
        ["postgresql://127.0.0.1/one", "--database-url", "postgresql://127.0.0.1/two"],
    ],
    ids=["file", "two-database-urls"],
)
def test_a_source_and_a_query_together_are_refused_in_one_line(
    cli: Any, source_args: list[str]
) -> None:
    result = cli("export", *source_args, "--query", "SELECT 1", "--to", "{{ email }}",
                 "--subject", "s", "--body", "b")  # fmt: skip
    assert result.code == 2, result.output
    [line] = result.err.strip().splitlines()
    assert "SOURCE" in line and "--query" in line
    assert result.out == ""

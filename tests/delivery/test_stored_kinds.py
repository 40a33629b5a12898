"""A run stored before the source kind became an enum still resumes.

Until then a run's settings kept the kind as the user wrote it (``excel``, ``ndjson``,
``TSV``); now they keep the kind's own word (``xlsx``, ``jsonl``, ``tsv``). A journal row
written the old way must read as the same kind, so its resume opens the file as before.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from delivery_support import (
    deliveries,
    fault_connection,
    final_rows,
    journal_rows,
    people,
    send,
)
from mailconduit import api
from mailconduit.config import SourceKind
from mailconduit.delivery.resume import spec_of_run
from mailconduit.home import home

ROWS = 30


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def _tsv(path: Path, rows: list[dict[str, Any]]) -> None:
    lines = ["\t".join(rows[0])] + ["\t".join(str(v) for v in row.values()) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _xlsx(path: Path, rows: list[dict[str, Any]]) -> None:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(list(rows[0]))
    for row in rows:
        sheet.append(list(row.values()))
    book.save(path)


WRITERS: dict[str, Callable[[Path, list[dict[str, Any]]], None]] = {
    "jsonl": _jsonl,
    "tsv": _tsv,
    "xlsx": _xlsx,
}


def _store_kind_as(run_id: str, word: str) -> None:
    """Rewrite the run's stored kind as the code before the enum wrote it."""
    with sqlite3.connect(home() / "mailconduit.db") as db:
        (text,) = db.execute("SELECT spec FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        spec = json.loads(text)
        spec["kind"] = word
        db.execute("UPDATE runs SET spec = ? WHERE run_id = ?", (json.dumps(spec), run_id))


@pytest.mark.parametrize(
    ("kind", "old_word"),
    [("jsonl", "ndjson"), ("xlsx", "excel"), ("tsv", "TSV")],
)
def test_a_run_stored_with_the_old_word_for_its_kind_resumes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kind: str, old_word: str
) -> None:
    # The file's name says nothing of its kind (openpyxl insists on .xlsx): only the stored
    # kind can open it right.
    source = tmp_path / ("people.xlsx" if kind == "xlsx" else "people.data")
    WRITERS[kind](source, people(ROWS))
    with fault_connection(monkeypatch, faults={("RCPT", "*"): "550 5.1.1 no such user"}) as server:
        report = send(source, kind=kind, max_errors=3)
        assert report.status == "paused"
        stored = json.loads(
            sqlite3.connect(home() / "mailconduit.db")
            .execute("SELECT spec FROM runs WHERE run_id = ?", (report.run_id,))
            .fetchone()[0]
        )
        assert stored["kind"] == kind  # stored as the kind's own word today
        _store_kind_as(report.run_id, old_word)
        assert spec_of_run(report.run_id).kind is SourceKind(kind)
        failed = {k for k, r in journal_rows(report.run_id).items() if r.state == "failed"}

        server.clear_faults()
        resumed = api.resume(report.run_id)
    assert resumed.status == "finished", resumed.message
    assert resumed.sent == ROWS - len(failed)
    rows = final_rows(report.run_id, range(ROWS))
    got = deliveries(server.messages)
    assert sorted(got) == sorted(f"user{k}@example.com" for k in set(rows) - failed)

"""What an export did: per-row results and a summary, written as CSV or JSON.

Rows come from the journal (so a report of a 1,000,000-row run streams instead of
sitting in memory); a run without a journal keeps only the rows that did not go out.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, overload

from mailconduit.journal import Journal, RowState, RowStatus, RunStatus

__all__ = [
    "REPORT_COLUMNS",
    "ExportReport",
    "neutralise_cell",
    "report_from_journal",
    "write_report",
]

REPORT_COLUMNS = (
    "row_key",
    "row_number",
    "status",
    "recipients",
    "message_id",
    "attempts",
    "code",
    "enhanced",
    "reply",
    "column",
    "refused_recipients",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(value: str) -> str:
    """Keep spreadsheets from running a cell as a formula (CSV injection)."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def row_dict(row: RowState) -> dict[str, Any]:
    return {
        "row_key": row.row_key,
        "row_number": row.row_number,
        "status": row.state,
        "recipients": list(row.recipients),
        "message_id": row.message_id,
        "attempts": row.attempts,
        "code": row.code or None,
        "enhanced": row.enhanced,
        "reply": row.reply,
        "column": row.column,
        "refused_recipients": [{"recipient": r, "code": c, "reply": t} for r, c, t in row.detail],
    }


class _Count:
    """A read-only count of :class:`ExportReport` named as the attribute (0 when absent)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, report: None, owner: type | None = None) -> _Count: ...
    @overload
    def __get__(self, report: ExportReport, owner: type | None = None) -> int: ...
    def __get__(self, report: ExportReport | None, owner: type | None = None) -> _Count | int:
        return self if report is None else report.counts.get(self._name, 0)

    def __set__(self, report: ExportReport, value: int) -> None:
        raise AttributeError(f"{self._name} is read from the counts")


@dataclass
class ExportReport:
    """The outcome of one export run (or dry run)."""

    run_id: str
    status: str
    connection: str
    counts: dict[str, int] = field(default_factory=dict)
    total: int = 0
    elapsed: float = 0.0
    message: str = ""
    uncertain_resent: int = 0
    #: Rows an earlier attempt of this run had already sent (a resumed run skips them).
    sent_before: int = 0
    dry_run_dir: str = ""
    kept_rows: list[RowState] = field(default_factory=list)
    #: What the export decided on its own and says (e.g. a body sent as HTML, and why).
    notes: tuple[str, ...] = ()
    row_source: Callable[[], Iterator[RowState]] | None = None

    sent = _Count()
    failed = _Count()
    skipped = _Count()
    uncertain = _Count()

    @property
    def ok(self) -> bool:
        return (
            self.status in ("finished", "dry-run")
            and not self.failed
            and not self.skipped
            and not self.uncertain
        )

    @property
    def rate(self) -> float:
        """Messages per second sent by this attempt (rows resumed from before not counted)."""
        sent_now = max(0, self.sent - self.sent_before)
        return sent_now / self.elapsed if self.elapsed > 0 else 0.0

    def rows(self) -> Iterator[RowState]:
        """Every row's final state, in processing order."""
        if self.row_source is not None:
            yield from self.row_source()
        else:
            yield from self.kept_rows

    def summary(self) -> str:
        # A dry run sends nothing: it says how many messages it wrote.
        shown = ("written", "skipped") if self.dry_run_dir else ("sent", "failed", "skipped")
        parts = [f"{self.counts.get(k, 0)} {k}" for k in shown if k in self.counts or k == shown[0]]
        if self.sent_before:
            parts[0] += f" ({self.sent_before} of them by an earlier attempt)"
        if self.uncertain:
            parts.append(f"{self.uncertain} uncertain")
        line = f"run {self.run_id}: {self.status}: " + ", ".join(parts)
        if self.elapsed and self.sent > self.sent_before:
            line += f" in {self.elapsed:.1f} s ({self.rate:,.0f} msg/s)"
        if self.uncertain_resent:
            line += f"; {self.uncertain_resent} row(s) whose confirmation was lost were sent again with the same Message-ID"
        if self.message:
            line += f" — {self.message}"
        return line

    def to_dict(self, *, with_rows: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "run_id": self.run_id,
            "status": self.status,
            "connection": self.connection,
            "counts": dict(self.counts),
            "total": self.total,
            "elapsed_seconds": round(self.elapsed, 3),
            "message": self.message,
            "uncertain_resent": self.uncertain_resent,
            "sent_before": self.sent_before,
        }
        if self.dry_run_dir:
            out["dry_run_dir"] = self.dry_run_dir
        if self.notes:
            out["notes"] = list(self.notes)
        if with_rows:
            out["rows"] = [row_dict(r) for r in self.rows()]
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    def to_csv(self) -> str:
        buf = io.StringIO()
        write_csv(self.rows(), buf)
        return buf.getvalue()


def write_csv(rows: Iterable[RowState], out: IO[str]) -> None:
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(REPORT_COLUMNS)
    for row in rows:
        d = row_dict(row)
        d["recipients"] = ", ".join(d["recipients"])
        d["refused_recipients"] = "; ".join(
            f"{r['recipient']} {r['code']} {r['reply']}" for r in d["refused_recipients"]
        )
        writer.writerow(
            [neutralise_cell("" if d[c] is None else str(d[c])) for c in REPORT_COLUMNS]
        )


def write_report(report: ExportReport, path: str | Path, *, fmt: str | None = None) -> Path:
    """Write the report as CSV or JSON (by ``fmt`` or the file extension)."""
    target = Path(path)
    kind = fmt or ("json" if target.suffix.lower() == ".json" else "csv")
    tmp = target.with_name(target.name + ".part")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        if kind == "json":
            json.dump(report.to_dict(), fh, indent=2, ensure_ascii=False)
            fh.write("\n")
        else:
            write_csv(report.rows(), fh)
    os.replace(tmp, target)
    return target


def report_from_journal(run_id: str, *, journal: Journal | None = None) -> ExportReport:
    """A run's report as its journal tells it (``journal``: an open one to read, else one
    is opened for the call); its rows are read again from the store when asked for."""
    if journal is None:
        with Journal() as opened:
            return report_from_journal(run_id, journal=opened)
    info = journal.get_run(run_id)
    counts = dict(info.counts)
    if counts.get(RowStatus.CLAIMED) and info.status != RunStatus.RUNNING:
        counts[RowStatus.UNCERTAIN] = counts.get(RowStatus.UNCERTAIN, 0) + counts.pop(
            RowStatus.CLAIMED
        )
    elapsed = (info.finished_at or info.updated_at) - info.created_at
    url = journal.url
    return ExportReport(
        run_id=run_id,
        status=info.status,
        connection=info.connection,
        counts=counts,
        total=info.total or 0,
        elapsed=max(0.0, elapsed),
        message=info.message,
        row_source=lambda: _journal_rows(url, run_id),
    )


def _journal_rows(url: str, run_id: str) -> Iterator[RowState]:
    """A run's rows from a journal opened for the reading and closed after it."""
    with Journal(url) as journal:
        yield from journal.rows(run_id)

"""Showing a run's progress: a live bar on a terminal, periodic lines otherwise, JSON on request."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import typer

from mailconduit.delivery.events import Progress
from mailconduit.delivery.report import ExportReport

__all__ = ["ProgressPrinter", "progress_printer", "show_run"]

LOG_INTERVAL = 5.0


class ProgressPrinter:
    """Receives :class:`Progress` snapshots and shows them on stderr."""

    def __init__(self, *, quiet: bool, log_json: bool, tty: bool) -> None:
        self.quiet = quiet
        self.log_json = log_json
        self.tty = tty and not quiet and not log_json
        self._last_log = 0.0
        self._bar: Any = None
        self._task: Any = None
        self.last: Progress | None = None

    def __enter__(self) -> ProgressPrinter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop the live bar, whatever ended the run."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def _start_bar(self, p: Progress) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import (
            Progress as Bar,
        )

        self._bar = Bar(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(p.run_id, total=p.total, stats="")

    def update(self, p: Progress) -> None:
        if p.phase == "note":
            if not self.quiet:
                self._emit(p, p.message)
            return
        self.last = p
        if p.phase == "started":
            if not self.quiet:
                self._emit(
                    p,
                    f"run {p.run_id} started"
                    + (f" ({p.total} rows)" if p.total is not None else ""),
                )
                if not self.log_json:
                    print(
                        f"  to resume if interrupted: mailconduit runs resume {p.run_id}",
                        file=sys.stderr,
                    )
            return
        if self.quiet:
            return
        if self.log_json:
            now = time.monotonic()
            if p.phase in ("done", "stopping") or now - self._last_log >= 1.0:
                self._last_log = now
                print(json.dumps({"event": "progress", **p.to_dict()}), file=sys.stderr, flush=True)
            return
        if self.tty:
            if self._bar is None:
                self._start_bar(p)
            stats = f"sent {p.sent}  failed {p.failed}  retrying {p.retrying}  {p.rate:,.0f} msg/s"
            self._bar.update(self._task, completed=p.done + p.resumed, total=p.total, stats=stats)
            return
        now = time.monotonic()
        if p.phase in ("done", "stopping") or now - self._last_log >= LOG_INTERVAL:
            self._last_log = now
            eta = f", ETA {p.eta:.0f} s" if p.eta is not None and p.phase == "sending" else ""
            total = f"/{p.total}" if p.total is not None else ""
            print(
                f"run {p.run_id}: {p.done + p.resumed}{total} done: {p.sent} sent, {p.failed} failed, "
                f"{p.skipped} skipped, {p.retrying} retrying, {p.rate:,.0f} msg/s{eta}",
                file=sys.stderr,
                flush=True,
            )

    def _emit(self, p: Progress, text: str) -> None:
        if self.log_json:
            print(
                json.dumps({"event": p.phase, "run_id": p.run_id, "message": text}),
                file=sys.stderr,
                flush=True,
            )
        else:
            print(text, file=sys.stderr, flush=True)

    def final_lines(self, report: ExportReport) -> list[str]:
        lines = [report.summary()]
        shown = 0
        for row in report.rows():
            if row.state in ("sent",) or shown >= 20:
                continue
            shown += 1
            # RowError texts already start with "column X:"; say it once.
            named = row.reply.startswith(f"column {row.column}:")
            where = f" column {row.column}:" if row.column and not named else ""
            code = " ".join(("", str(row.code), row.enhanced)).rstrip() if row.code else ""
            lines.append(
                f"  row {row.row_number} ({row.row_key}) {row.state}:{where}{code} {row.reply}".rstrip()
            )
        if report.dry_run_dir:
            lines.append(f"messages written to {report.dry_run_dir}")
        if report.status in ("paused", "interrupted", "aborted"):
            lines.append(f"resume with: mailconduit runs resume {report.run_id}")
        return lines


def progress_printer(*, quiet: bool, log_json: bool) -> ProgressPrinter:
    return ProgressPrinter(quiet=quiet, log_json=log_json, tty=sys.stderr.isatty())


def show_run(
    call: Callable[[Callable[[Progress], None]], ExportReport], *, as_json: bool, quiet: bool,
    log_json: bool,
) -> None:  # fmt: skip
    """Run ``call`` (given the progress callback) showing its progress, print its report, and
    exit with 0 when every row went, 1 otherwise."""
    printer = progress_printer(quiet=quiet or as_json, log_json=log_json)
    with printer:
        report = call(printer.update)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    elif not quiet:
        for line in printer.final_lines(report):
            typer.echo(line)
    raise typer.Exit(0 if report.ok else 1)

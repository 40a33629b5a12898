"""Dry run: every message built and written to a folder as an .eml file, nothing sent."""

from __future__ import annotations

import time
from pathlib import Path

from mailconduit.config import Connection, ExportSpec
from mailconduit.delivery.jobs import UNSAFE_FILE_CHARS, build_jobs, new_run_id
from mailconduit.delivery.prepare import prepare
from mailconduit.delivery.preview import preview_text
from mailconduit.delivery.report import ExportReport, write_report
from mailconduit.errors import ConfigError, FieldError
from mailconduit.journal import RowState, RowStatus

__all__ = ["dry_run"]


def _eml_name(seq: int, key: str) -> str:
    """The file name of a message written by a dry run: its position and row key."""
    safe = UNSAFE_FILE_CHARS.sub("_", key).strip("_")[:60] or "row"
    return f"{seq:06d}-{safe}.eml"


def dry_run(spec: ExportSpec, conn: Connection, out: Path) -> ExportReport:
    """Build every message into the folder ``out`` and report it; nothing is sent."""
    prepared = prepare(spec, conn, sending=False)
    run_id = spec.run_id or new_run_id()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        prepared.close()
        raise ConfigError.for_fields(
            "export", [FieldError("dry_run", f"{out}: {exc.strerror}")]
        ) from None
    kept: list[RowState] = []
    counts = {"sent": 0, "failed": 0, "skipped": 0, "written": 0}
    first: str = ""
    started = time.monotonic()
    try:
        for item in build_jobs(
            prepared, run_id, states={}, retry_failed=False, resend_uncertain=True, size_limit=0
        ):
            if isinstance(item, RowState):
                counts["skipped"] += 1
                kept.append(item)
                continue
            path = out / _eml_name(item.seq, item.row_key)
            path.write_bytes(item.data)
            counts["written"] += 1
            kept.append(
                RowState(item.row_key, item.seq, item.row_number, RowStatus.WRITTEN, recipients=tuple(item.recipients),
                         message_id=item.message_id, reply=str(path))
            )  # fmt: skip
            if not first:
                first = preview_text(item.data)
    finally:
        prepared.close()
    report = ExportReport(
        run_id=run_id,
        status="dry-run",
        connection=conn.name,
        counts=counts,
        total=prepared.total,
        elapsed=time.monotonic() - started,
        message="".join(f"{note}\n" for note in prepared.notes)
        + (f"nothing was sent; first message:\n{first}" if first else "nothing was sent"),
        dry_run_dir=str(out),
        kept_rows=kept,
        notes=prepared.notes,
    )
    if spec.report:
        write_report(report, spec.report, fmt=spec.report_format)
    return report

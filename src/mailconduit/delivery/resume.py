"""Resuming a run from its journal: rows confirmed sent are never sent again."""

from __future__ import annotations

import dataclasses
from typing import Any

from mailconduit.config import Connection, ExportSpec, validate_export_spec
from mailconduit.delivery.events import ProgressCallback
from mailconduit.delivery.execution import execute
from mailconduit.delivery.recorded import unseal_spec
from mailconduit.delivery.report import ExportReport
from mailconduit.errors import ConfigError, FieldError
from mailconduit.journal import Journal

__all__ = ["resume", "spec_of_run"]


async def resume(
    run_id: str,
    conn: Connection,
    *,
    retry_failed: bool = False,
    resend_uncertain: bool | None = None,
    source: Any = None,
    progress: ProgressCallback | None = None,
    handle_signals: bool = False,
    allow_address: Any = None,
) -> ExportReport:
    """Resume ``run_id`` from its journal: confirmed rows are never sent again."""
    with Journal() as journal:
        spec = _resumed_spec(run_id, journal, source=source, resend_uncertain=resend_uncertain)
        return await execute(
            spec, conn, progress=progress, handle_signals=handle_signals,
            allow_address=allow_address, resume_of=run_id, retry_failed=retry_failed,
            journal=journal,
        )  # fmt: skip


def _resumed_spec(
    run_id: str, journal: Journal, *, source: Any, resend_uncertain: bool | None
) -> ExportSpec:
    """The run's recorded settings, with what a resume may change."""
    spec = spec_of_run(run_id, journal=journal)  # NotFoundError for an unknown run
    changes: dict[str, Any] = {"run_id": run_id, "dry_run": None}
    if source is not None:
        changes["source"] = source
    elif spec.source == "<python iterable>":
        raise ConfigError.for_fields(
            "resume",
            [FieldError("source", "this run read Python data; pass the same data as source=...")],
        )
    if resend_uncertain is not None:
        changes["resend_uncertain"] = resend_uncertain
    return dataclasses.replace(spec, **changes)


def spec_of_run(run_id: str, *, journal: Journal | None = None) -> ExportSpec:
    """The settings a run was started with, as its journal recorded them."""
    if journal is None:
        with Journal() as opened:
            return spec_of_run(run_id, journal=opened)
    info = journal.get_run(run_id)
    data = unseal_spec(dict(info.spec), run_id=run_id)
    return validate_export_spec({k: v for k, v in data.items() if v not in (None,)})

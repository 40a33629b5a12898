"""Job building: each unit rendered into a message and made a Job for the runner, or a
journal entry (skipped, held, already done); table messages split to fit the server."""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Iterator
from typing import Any

from mailconduit.config import ExportMode
from mailconduit.delivery.feed import Job
from mailconduit.delivery.prepare import Prepared
from mailconduit.delivery.units import Unit, skipped, units
from mailconduit.errors import RowError
from mailconduit.journal import FINAL_STATES, RowState, RowStatus
from mailconduit.message import compose_message, make_message_id
from mailconduit.message.build import BuiltMessage

__all__ = ["UNSAFE_FILE_CHARS", "build_jobs", "new_run_id"]

#: Characters replaced in a name made into a file name.
UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def new_run_id() -> str:
    """A readable, unique run id: ``20261129-142501-3fa2c1``."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + os.urandom(3).hex()


def _table_extras(p: Prepared, unit: Unit, *, inline: bool) -> tuple[dict[str, Any], list[Any]]:
    """The table's template names and attached files for a table or group message."""
    spec = p.spec
    rows = unit.rows or []
    columns = p.source.columns
    group = unit.row.get(spec.by) if spec.mode is ExportMode.GROUP else None
    from mailconduit.message.table import table_attachment, table_context

    extras = table_context(columns, rows, group=group, max_rows=spec.table_row_cap or 500)
    if not inline:
        # Plain text: the HTML body escapes it (a tag here would show as text).
        extras["table_html"] = "The data is attached."
        extras["table_text"] = "The data is attached."
    attachments = []
    formats = [f for f in spec.table_formats if f != "html"]
    if not inline and not formats:
        formats = ["csv"]
    name = f"data-{group}" if group is not None else "data"
    stem = UNSAFE_FILE_CHARS.sub("_", name).strip("_") or "data"
    for kind in formats:
        attachments.append(table_attachment(kind, columns, rows, filename=f"{stem}.{kind}"))
    return extras, attachments


def _compose(p: Prepared, unit: Unit, run_id: str, *, inline: bool = True) -> BuiltMessage:
    """One unit's message, built (``inline``: a table goes in the body, else attached)."""
    spec = p.spec
    extras: dict[str, Any] | None = None
    attachments: list[Any] = []
    if unit.rows is not None:
        extras, attachments = _table_extras(p, unit, inline=inline)
        extras["to_column_addresses"] = unit.to_override
    return compose_message(
        p.template,
        unit.row,
        row_key=unit.key,
        message_id=make_message_id(run_id, unit.key, p.domain),
        default_from=p.default_from,
        default_reply_to=p.default_reply_to,
        extras=extras,
        extra_attachments=attachments,
        attachment_dir=p.attachment_dir,
        charset=spec.charset,
    )


def build_jobs(
    p: Prepared,
    run_id: str,
    *,
    states: dict[str, tuple[RowStatus, int]],
    retry_failed: bool,
    resend_uncertain: bool,
    size_limit: int,
    claimed_seq: int = 0,
    partial: dict[str, RowState] | None = None,
) -> Iterator[Job | RowState]:
    """The run's messages; ``partial`` (from :meth:`Journal.partial_rows`) names the rows an
    earlier attempt delivered to some recipients: they go to the ones still owed only."""
    partial = partial or {}
    for unit in units(p):
        if isinstance(unit, RowState):
            if unit.row_key in states:  # reported by an earlier attempt of this run
                yield RowState(unit.row_key, unit.seq, unit.row_number, RowStatus.RESUMED)
            else:
                yield unit
            continue
        prior = states.get(unit.key)
        if prior is None and unit.seq <= claimed_seq:
            prior = (
                RowStatus.CLAIMED,
                1,
            )  # claimed by an earlier attempt, its outcome never written
        attempts = 0
        uncertain = False
        if prior is not None:
            state, attempts = prior
            if state in FINAL_STATES and not (state == RowStatus.FAILED and retry_failed):
                yield RowState(unit.key, unit.seq, unit.number, RowStatus.RESUMED)
                continue
            uncertain = state in (RowStatus.CLAIMED, RowStatus.UNCERTAIN)
            if uncertain and not resend_uncertain:
                held = "held: its earlier delivery may have succeeded (--no-resend-uncertain)"
                if unit.key in partial:  # keep who is still owed it for a later resume
                    yield dataclasses.replace(
                        partial[unit.key], state=RowStatus.UNCERTAIN, reply=held, updated_at=0.0
                    )
                    continue
                yield RowState(
                    unit.key, unit.seq, unit.number, RowStatus.UNCERTAIN, attempts=attempts, reply=held,
                )  # fmt: skip
                continue
        try:
            for built in _fit(p, unit, run_id, size_limit):
                job = Job(
                    row_key=built[0],
                    seq=unit.seq,
                    row_number=unit.number,
                    sender=built[1].envelope_from,
                    recipients=list(built[1].envelope_recipients),
                    data=built[1].data,
                    smtputf8=built[1].needs_smtputf8,
                    message_id=built[1].message_id,
                    attempts=attempts,
                    uncertain_before=uncertain,
                )
                if built[0] in partial:
                    _owed_only(job, partial[built[0]])
                yield job
        except RowError as exc:
            yield skipped(unit, exc)


def _owed_only(job: Job, prior: RowState) -> None:
    """Narrow a resumed job to the recipients its journal entry still owes the message to;
    the others keep their earlier answer (served, or refused as recorded)."""
    owed = set(prior.owed)
    narrowed = [r for r in job.recipients if r in owed]
    if not narrowed:  # none of them is in the message any more: send it as it is
        return
    job.refused = tuple(d for d in prior.detail if d[0] not in owed)
    job.narrow(narrowed)


def _fit(p: Prepared, unit: Unit, run_id: str, size_limit: int) -> list[tuple[str, BuiltMessage]]:
    """The unit's message(s); in table/group mode, made to fit the server's SIZE if asked."""
    built = _compose(p, unit, run_id)
    if unit.rows is None or not size_limit or built.size <= size_limit or p.spec.oversize == "fail":
        return [(unit.key, built)]
    if p.spec.oversize == "attach":
        attached = _compose(p, unit, run_id, inline=False)
        return [(unit.key, attached)]
    # split: as many parts as needed, each under the limit (bounded: at most one row per part)
    rows = unit.rows
    parts = min(len(rows), max(2, -(-built.size // size_limit) + 1))
    while True:
        size = -(-len(rows) // parts)
        chunks = [rows[i : i + size] for i in range(0, len(rows), size)]
        out = []
        for n, chunk in enumerate(chunks, 1):
            key = f"{unit.key}#part{n}of{len(chunks)}"
            sub = dataclasses.replace(unit, key=key, rows=chunk, row=chunk[0])
            out.append((key, _compose(p, sub, run_id)))
        if all(b.size <= size_limit for _, b in out):
            return out
        if parts >= len(rows):
            break
        parts = min(parts * 2, len(rows))  # the last try is one row per message
    raise RowError(
        f"the table does not fit the server's SIZE limit of {size_limit} bytes even one row per message",
        unit.key,
    )

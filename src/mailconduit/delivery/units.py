"""What one message is made of: a row, a group of rows or the whole table (a Unit)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from mailconduit.config import ExportMode, ExportSpec
from mailconduit.errors import AddressError, RowError
from mailconduit.journal import RowState, RowStatus
from mailconduit.message import Address, parse_address_list
from mailconduit.sources import Row, Source

if TYPE_CHECKING:
    from mailconduit.delivery.prepare import Prepared

__all__ = ["Unit", "group_of", "message_rows", "skipped", "units"]


def group_of(value: Any) -> Any:
    """A group value as a dict key (a list or mapping from JSON stands for its text)."""
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def message_rows(spec: ExportSpec, source: Source) -> Iterator[Row]:
    """The rows table and group messages are made of: the first ``limit`` of the source."""
    for count, row in enumerate(source.rows(), 1):
        if spec.limit and count > spec.limit:
            return
        yield row


@dataclasses.dataclass
class Unit:
    """One message's worth of data: a row, a group or the whole table."""

    key: str
    seq: int
    number: int
    row: dict[str, Any]
    to_override: str = ""
    rows: list[dict[str, Any]] | None = None


def _rejected(key: str, seq: int, row: Row) -> RowState:
    """A row with a cell data may not hold: reported with its column and why, never sent."""
    assert row.problem is not None
    error = RowError(row.problem.reason, key, row.problem.column)
    return RowState(key, seq, row.number, RowStatus.SKIPPED, reply=str(error), column=error.column)


def units(p: Prepared) -> Iterator[Unit | RowState]:
    """The export's messages as units, in order; a row holding a forbidden cell comes as
    a skipped entry (in table and group mode, before the messages it is left out of)."""
    spec = p.spec
    limit = spec.limit
    if spec.mode is ExportMode.ROW:
        for seq, row in enumerate(p.source.rows(), 1):
            if limit and seq > limit:
                return
            if row.problem is not None:
                yield _rejected(row.key, seq, row)
            else:
                yield Unit(row.key, seq, row.number, row.values)
        return
    rows: list[dict[str, Any]] = []
    numbers: list[int] = []
    left_out: list[Row] = []  # rows with a forbidden character: reported, not in the message
    for row in message_rows(spec, p.source):
        if row.problem is not None:
            left_out.append(row)
        else:
            rows.append(row.values)
            numbers.append(row.number)
    made: list[Unit | RowState] = []
    if spec.mode is ExportMode.TABLE:
        if rows:
            unit = Unit("table", 1, 1, rows[0], rows=rows)
            made.append(_to_column(unit, spec.to_column, numbers))
    else:
        groups: dict[Any, list[int]] = {}
        for index, values in enumerate(rows):
            groups.setdefault(group_of(values.get(spec.by)), []).append(index)
        for seq, (value, indexes) in enumerate(groups.items(), 1):
            key = f"group:{'' if value is None else value}"
            members = [rows[i] for i in indexes]
            unit = Unit(key, seq, seq, members[0], rows=members)
            made.append(_to_column(unit, spec.to_column, [numbers[i] for i in indexes]))
    # Reported first (so --fail-fast sends nothing), numbered after the messages: the
    # journal's claim mark counts messages only.
    for seq, row in enumerate(left_out, len(made) + 1):
        yield _rejected(f"row:{row.key}", seq, row)
    yield from made


def _to_column(unit: Unit, column: str, numbers: Sequence[int]) -> Unit | RowState:
    """``unit`` with the recipients of its ``column`` cells, or skipped for a cell that is
    not an address list (naming the column and the data row)."""
    if not column:
        return unit
    seen: dict[str, Address] = {}
    for values, number in zip(unit.rows or (), numbers, strict=True):
        cell = values.get(column)
        if cell is None:
            continue
        try:
            found = parse_address_list(str(cell), field="to_column")
        except AddressError as exc:
            return skipped(
                unit, AddressError(f"row {number}: {exc.message}", exc.address, unit.key, column)
            )
        for address in found:  # every distinct address once: ANNA@ and anna@ are one mailbox
            seen.setdefault(address.envelope.lower(), address)
    unit.to_override = ", ".join(a.formatted for a in seen.values())
    return unit


def skipped(unit: Unit, exc: RowError) -> RowState:
    """The journal entry of a unit that cannot be sent, naming why (and the column)."""
    return RowState(
        row_key=unit.key,
        seq=unit.seq,
        row_number=unit.number,
        state=RowStatus.SKIPPED,
        reply=str(exc),
        column=exc.column,
    )

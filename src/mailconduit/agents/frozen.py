"""A run's input frozen into the journal, so a worker on any host sends it as read here.

The coordinator reads the source once (a SQL query runs once), stores each row with its
key and cells, and each attachment file the rows reference once per run (by sha256). A
worker rebuilds a :class:`FrozenSource` of its chunk's rows (keys as the coordinator made
them, so Message-IDs match) and writes the chunk's files into a folder of its own.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import hashlib
import itertools
import json
import os
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from mailconduit.config import ExportMode, ExportSpec, export_spec_to_dict, validate_export_spec
from mailconduit.delivery.units import group_of
from mailconduit.errors import RenderError, RowError
from mailconduit.journal.agents import AgentStore, FrozenRow
from mailconduit.message import MessageTemplate
from mailconduit.message.attachment import load_attachment
from mailconduit.sources import Row, Source, SourceKind
from mailconduit.sources.base import Record
from mailconduit.sources.cells import CellProblem

__all__ = [
    "ChunkPlan",
    "FrozenInput",
    "FrozenSource",
    "decode_cells",
    "encode_cells",
    "freeze",
    "materialize",
    "thawed_spec",
]

_TAG = "$t"


def _encode(value: Any) -> Any:
    """A cell as JSON, with a tag for the types JSON has not (read back as the same type)."""
    kind = type(value)
    if value is None or kind in (str, int, float, bool):
        return value
    if kind is dt.datetime:
        return {_TAG: "datetime", "v": value.isoformat()}
    if kind is dt.date:
        return {_TAG: "date", "v": value.isoformat()}
    if kind is dt.time:
        return {_TAG: "time", "v": value.isoformat()}
    if kind is dt.timedelta:
        return {_TAG: "timedelta", "v": value.total_seconds()}
    if kind is decimal.Decimal:
        return {_TAG: "decimal", "v": str(value)}
    if kind is uuid.UUID:
        return {_TAG: "uuid", "v": str(value)}
    if kind in (bytes, bytearray, memoryview):
        return {_TAG: "bytes", "v": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Mapping):
        return {_TAG: "dict", "v": [[str(k), _encode(v)] for k, v in value.items()]}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    return {_TAG: "str", "v": str(value)}


_DECODERS: dict[str, Any] = {
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "timedelta": lambda v: dt.timedelta(seconds=v),
    "decimal": decimal.Decimal,
    "uuid": uuid.UUID,
    "bytes": lambda v: base64.b64decode(v),
    "str": str,
}


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        tag = value[_TAG]
        if tag == "dict":
            return {k: _decode(v) for k, v in value["v"]}
        return _DECODERS[tag](value["v"])
    return value


_PLAIN = frozenset({str, int, float, bool, type(None)})
_DUMPS = json.JSONEncoder(separators=(",", ":")).encode


def encode_cells(values: Mapping[str, Any]) -> str:
    """A row's cells as JSON ([name, value] pairs, in order); plain values as they are."""
    if all(type(v) in _PLAIN for v in values.values()):  # CSV: every cell a str
        return _DUMPS(list(values.items()))
    return _DUMPS([[k, _encode(v)] for k, v in values.items()])


def decode_cells(text: str) -> dict[str, Any]:
    pairs = json.loads(text)
    if _TAG not in text:  # no tagged value (a CSV row: every cell a str): nothing to decode
        return dict(pairs)
    return {k: _decode(v) for k, v in pairs}


class FrozenSource(Source):
    """The frozen rows of one chunk, keyed as the coordinator keyed them."""

    kind = SourceKind.ITERABLE

    def __init__(self, rows: list[FrozenRow], *, location: str, columns: tuple[str, ...]) -> None:
        # Decoded once: a chunk is read three times (checks, a sample, the messages); under
        # cProfile, 10,000 rows cost 30,032 json.loads calls and 0.68 s before, 10,000 after.
        self._rows = [
            Row(r.key, r.number, r.line, decode_cells(r.cells), _problem(r.problem)) for r in rows
        ]
        super().__init__(location=location, columns=columns, key_column=None)
        self._count = len(rows)

    def _records(self) -> Iterator[Record]:
        for row in self._rows:
            yield row.number, row.line, row.values, row.problem

    def rows(self) -> Iterator[Row]:
        return iter(self._rows)

    def _fingerprint(self) -> str:
        return "frozen"

    def _describe_kind(self) -> str:
        return f"frozen rows of {self.location}"


def _problem(text: str) -> CellProblem | None:
    if not text:
        return None
    column, char = json.loads(text)
    return CellProblem(column, char)


@dataclasses.dataclass(frozen=True, slots=True)
class ChunkPlan:
    """Row positions and message positions (seq) of one chunk."""

    first_row: int
    last_row: int
    first_seq: int
    last_seq: int


@dataclasses.dataclass
class FrozenInput:
    """What :func:`freeze` made of a prepared export: rows, files and chunks.

    ``rows`` is read once, as the store copies it (the source is read while the journal
    writes, not before); ``blobs`` fills up meanwhile, and ``chunks(count)`` plans the
    chunks of the ``count`` rows copied.
    """

    rows: Iterator[FrozenRow]
    blobs: dict[str, bytes]
    chunks: Callable[[int], list[ChunkPlan]]
    spec: dict[str, Any]


def thawed_spec(spec: ExportSpec, *, html: bool) -> ExportSpec:
    """The spec a worker sends with: bodies inline (read here), the data's own options gone
    (the frozen rows are filtered, ordered and keyed already), no limit, no report file."""
    changes: dict[str, Any] = {
        "source": "<frozen>", "kind": None, "encoding": "", "delimiter": "", "sheet": "",
        "where": "", "order_by": "", "key": "", "database_url": "", "limit": 0,
        "report": "", "dry_run": None,
    }  # fmt: skip
    for field, inline in (("body_file", "body"), ("html_body_file", "html_body"),
                          ("text_body_file", "text_body")):  # fmt: skip
        path = getattr(spec, field)
        if path:
            changes[inline] = Path(path).read_text(encoding="utf-8-sig")
            changes[field] = ""
            if field == "body_file":
                changes["html"] = html
    return dataclasses.replace(spec, **changes)


def freeze(
    spec: ExportSpec,
    source: Source,
    *,
    html: bool,
    attachment_dir: Path | None,
    chunk_rows: int,
    workers: int = 1,
) -> FrozenInput:
    """Read ``source`` once into frozen rows, the files they attach, and the chunks
    (``workers``: how many chunks can be sent at once, see :func:`_plan`)."""
    rows = itertools.islice(source.rows(), spec.limit or None)
    ordered: Iterator[tuple[Row, list[Row] | None]]
    if spec.mode is ExportMode.ROW:
        # Row by row, in the source's order: nothing to hold in memory.
        ordered = _row_units(rows)

        def chunks(count: int) -> list[ChunkPlan]:
            return _row_chunks(count, chunk_rows, workers)
    else:
        planned, plan = _plan(spec, list(rows), chunk_rows, workers=workers)
        ordered = iter(planned)

        def chunks(count: int) -> list[ChunkPlan]:
            return plan

    files = _FileCollector(spec, source.columns, attachment_dir)
    data = export_spec_to_dict(thawed_spec(spec, html=html))
    return FrozenInput(_frozen_rows(ordered, files), files.blobs, chunks, data)


def _frozen_rows(
    ordered: Iterator[tuple[Row, list[Row] | None]], files: _FileCollector
) -> Iterator[FrozenRow]:
    for position, (row, unit_rows) in enumerate(ordered, 1):
        paths = files.collect(row, unit_rows) if unit_rows is not None else ()
        problem = json.dumps([row.problem.column, row.problem.char]) if row.problem else ""
        yield FrozenRow(position, row.key, row.number, row.line, encode_cells(row.values),
                        problem, paths)  # fmt: skip


def chunk_sizes(total: int, chunk_rows: int, workers: int) -> list[int]:
    """Rows per chunk, in order, for ``total`` rows sent by ``workers`` chunks at a time.

    ``chunk_rows`` each, except towards the end: once fewer than two chunks per worker are
    left, each chunk takes a half of an even share of the rest (down to a quarter of
    ``chunk_rows``), so the workers run out of work at about the same time instead of
    M-1 of them waiting on the last full chunk (guided self-scheduling).
    """
    sizes: list[int] = []
    left = total
    smallest = max(1, chunk_rows // 4)
    while left > 0:
        size = chunk_rows
        if workers > 1:
            size = min(chunk_rows, max(smallest, -(-left // (2 * workers))))
        size = min(size, left)
        sizes.append(size)
        left -= size
    return sizes


def _row_units(rows: Iterable[Row]) -> Iterator[tuple[Row, list[Row] | None]]:
    """Row mode: each row leads its own message (none for a row with a bad cell)."""
    return ((row, [row] if row.problem is None else None) for row in rows)


def _row_chunks(count: int, chunk_rows: int, workers: int) -> list[ChunkPlan]:
    """Row mode: one message a row, so rows and messages share their positions."""
    chunks = []
    first = 1
    for size in chunk_sizes(count, chunk_rows, workers):
        chunks.append(ChunkPlan(first, first + size - 1, first, first + size - 1))
        first += size
    return chunks


def _plan(
    spec: ExportSpec, rows: list[Row], chunk_rows: int, *, workers: int = 1
) -> tuple[list[tuple[Row, list[Row] | None]], list[ChunkPlan]]:
    """Rows in frozen order, each with the rows of the message it leads (None when it leads
    none), and the chunks: row ranges, a group never split, table mode one chunk."""
    if spec.mode is ExportMode.ROW:
        return list(_row_units(rows)), _row_chunks(len(rows), chunk_rows, workers)
    good = [row for row in rows if row.problem is None]
    bad = [row for row in rows if row.problem is not None]
    if spec.mode is ExportMode.TABLE:
        ordered = [(row, good if n == 0 else None) for n, row in enumerate(good)]
        ordered += [(row, None) for row in bad]
        return ordered, [ChunkPlan(1, len(rows), 1, 1 + len(bad))] if rows else []
    groups: dict[Any, list[Row]] = {}
    for row in good:
        groups.setdefault(group_of(row.values.get(spec.by)), []).append(row)
    ordered = []
    chunks = []
    start_row, start_group, size = 1, 1, 0
    for index, members in enumerate(groups.values(), 1):
        ordered += [(row, members if n == 0 else None) for n, row in enumerate(members)]
        size += len(members)
        if size >= chunk_rows:
            chunks.append(ChunkPlan(start_row, len(ordered), start_group, index))
            start_row, start_group, size = len(ordered) + 1, index + 1, 0
    ordered += [(row, None) for row in bad]
    if start_row <= len(ordered):
        chunks.append(ChunkPlan(start_row, len(ordered), start_group, len(groups) + len(bad)))
    return ordered, chunks


class _FileCollector:
    """The attachment and inline files a message reads: each one's bytes kept once."""

    def __init__(self, spec: ExportSpec, columns: tuple[str, ...], base: Path | None) -> None:
        self.spec = spec
        self.columns = columns
        self.base = base
        self.blobs: dict[str, bytes] = {}
        self._known: dict[str, str] = {}  # path → sha
        self._template: MessageTemplate | None = None
        if (spec.attach or spec.inline) and base is not None:
            self._template = MessageTemplate(
                to="", attachments=spec.attach, inline=spec.inline
            )

    def collect(self, row: Row, unit_rows: list[Row]) -> tuple[tuple[str, str], ...]:
        if self._template is None:
            return ()
        extras: dict[str, Any] | None = None
        if self.spec.mode is not ExportMode.ROW:
            from mailconduit.message.table import table_context

            group = row.values.get(self.spec.by) if self.spec.mode is ExportMode.GROUP else None
            extras = table_context(
                self.columns, [r.values for r in unit_rows], group=group,
                max_rows=self.spec.table_row_cap or 500,
            )  # fmt: skip
            extras["to_column_addresses"] = ""
        try:
            rendered = self._template.render(row.values, row_key=row.key, extras=extras)
        except RenderError:
            return ()  # the worker meets the same error and reports the row
        out: list[tuple[str, str]] = []
        for path in (*rendered.attachments, *(p for _, p in rendered.inline)):
            sha = self._add(path.strip(), row.key)
            if sha:
                out.append((path.strip(), sha))
        return tuple(out)

    def _add(self, path: str, key: str) -> str:
        if not path or self.base is None:
            return ""
        if path in self._known:
            return self._known[path]
        try:
            content = load_attachment(path, base_dir=self.base, row_key=key).content
        except RowError:
            self._known[path] = ""
            return ""  # missing or refused: the worker reports it the same way
        sha = hashlib.sha256(content).hexdigest()
        self.blobs.setdefault(sha, content)
        self._known[path] = sha
        return sha


_FOLDERS: dict[str, tempfile.TemporaryDirectory[str]] = {}
_FOLDERS_LOCK = threading.Lock()


def materialize(store: AgentStore, run_id: str, rows: list[FrozenRow]) -> Path:
    """A folder of this process holding the files ``rows`` attach, under their paths."""
    with _FOLDERS_LOCK:
        folder = _FOLDERS.get(run_id)
        if folder is None:
            while len(_FOLDERS) >= 4:
                _FOLDERS.pop(next(iter(_FOLDERS))).cleanup()
            folder = _FOLDERS[run_id] = tempfile.TemporaryDirectory(prefix="mailconduit-agent-")
    base = Path(folder.name)
    wanted: dict[str, list[str]] = {}
    for row in rows:
        for path, sha in row.files:
            target = base / path
            parts = PurePosixPath(path.replace("\\", "/")).parts
            if ".." in parts or PurePosixPath(path).is_absolute() or target.exists():
                continue
            wanted.setdefault(sha, []).append(path)
    if wanted:
        for sha, data in store.blobs(run_id, list(wanted)):
            for path in wanted[sha]:
                target = base / path
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
                tmp.write_bytes(data)
                os.replace(tmp, target)
    return base


def spec_for_worker(data: Mapping[str, Any], source: FrozenSource, attach_dir: Path) -> ExportSpec:
    """The frozen spec with the chunk's rows as its source and this host's file folder."""
    spec = validate_export_spec({k: v for k, v in data.items() if v is not None})
    return dataclasses.replace(
        spec, source=source, attach_dir=str(attach_dir) if spec.attach_dir else ""
    )

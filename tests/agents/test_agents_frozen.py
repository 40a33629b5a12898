"""A run's frozen input: cells keep their types, keys stay the coordinator's, chunks never
split a group and a table is one chunk."""

from __future__ import annotations

import datetime as dt
import decimal
import itertools
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailconduit.agents.frozen import _plan, chunk_sizes, decode_cells, encode_cells
from mailconduit.config import validate_export_spec
from mailconduit.sources import Row

CELLS = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.floats(allow_nan=False)
    | st.dates() | st.datetimes() | st.times() | st.decimals(allow_nan=False)
    | st.binary(max_size=20) | st.uuids(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip


@given(st.dictionaries(st.text(max_size=8), CELLS, max_size=6))
def test_cells_come_back_as_they_were_read(values: dict[str, Any]) -> None:
    back = decode_cells(encode_cells(values))
    assert back == values
    assert list(back) == list(values)
    for name, value in values.items():
        assert type(back[name]) is type(value)


def test_tagged_types() -> None:
    values = {
        "when": dt.datetime(2026, 12, 6, 23, 5, tzinfo=dt.UTC), "day": dt.date(2026, 1, 2),
        "amount": decimal.Decimal("10.50"), "id": uuid.UUID(int=7), "raw": b"\x00\xff",
        "late": dt.timedelta(seconds=90), "odd": {"$t": "not a tag"},
    }  # fmt: skip
    assert decode_cells(encode_cells(values)) == values


def _rows(groups: list[str]) -> list[Row]:
    return [Row(str(n), n, n + 1, {"g": g, "n": n}) for n, g in enumerate(groups, 1)]


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 5, 100])
def test_a_group_is_never_split_and_chunks_cover_every_row(chunk_rows: int) -> None:
    spec = validate_export_spec({"source": "x.csv", "mode": "group", "by": "g", "to": "a@b.c", "subject": "s", "body": "b"})
    groups = ["a", "b", "a", "c", "c", "b", "d", "a", "e"]
    ordered, chunks = _plan(spec, _rows(groups), chunk_rows)
    assert sorted(r.number for r, _ in ordered) == list(range(1, len(groups) + 1))
    seen: dict[str, int] = {}
    for index, chunk in enumerate(chunks):
        for row, _ in ordered[chunk.first_row - 1 : chunk.last_row]:
            assert seen.setdefault(row.values["g"], index) == index  # one chunk per group
    assert chunks[0].first_row == 1 and chunks[-1].last_row == len(groups)
    assert all(a.last_row + 1 == b.first_row for a, b in itertools.pairwise(chunks))
    assert all(a.last_seq + 1 == b.first_seq for a, b in itertools.pairwise(chunks))
    assert chunks[-1].last_seq == len(set(groups))


def test_a_table_is_one_chunk_and_rows_are_cut_in_order() -> None:
    table = validate_export_spec({"source": "x.csv", "mode": "table", "to": "a@b.c", "subject": "s", "body": "b"})
    _, chunks = _plan(table, _rows(["x"] * 7), 2)
    assert [(c.first_row, c.last_row) for c in chunks] == [(1, 7)]
    rows = validate_export_spec({"source": "x.csv", "to": "a@b.c", "subject": "s", "body": "b"})
    _, chunks = _plan(rows, _rows(["x"] * 7), 3)
    assert [(c.first_row, c.last_row, c.first_seq, c.last_seq) for c in chunks] == [
        (1, 3, 1, 3), (4, 6, 4, 6), (7, 7, 7, 7)
    ]


@pytest.mark.parametrize(("total", "chunk_rows", "workers"), [(8000, 250, 4), (50000, 1000, 2), (7, 3, 3), (1, 5, 4)])
def test_the_last_chunks_shrink_so_the_workers_end_together(total: int, chunk_rows: int, workers: int) -> None:
    sizes = chunk_sizes(total, chunk_rows, workers)
    assert sum(sizes) == total and all(0 < s <= chunk_rows for s in sizes)
    assert sizes == sorted(sizes, reverse=True)  # never a bigger chunk after a smaller one
    assert sizes[-1] <= max(1, chunk_rows // 4) or total <= chunk_rows
    # the work left when each chunk is taken: at least two chunks' worth per worker
    left = total
    for size in sizes:
        assert size <= max(chunk_rows // 4, 1, -(-left // (2 * workers)))
        left -= size
    # one worker: chunks as before (nobody waits for anybody)
    single = chunk_sizes(total, chunk_rows, 1)
    assert single[:-1] == [chunk_rows] * (len(single) - 1)

"""The one way a record becomes JSON for a page or the REST API: only the fields it names,
in their order, under the key given, each made plain."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import ClassVar

from mailconduit.view import Record, Shown, plain, view


@dataclasses.dataclass(frozen=True)
class _Part(Record):
    name: str

    _SHOWN: ClassVar[Shown] = ("name",)


@dataclasses.dataclass(frozen=True)
class _Record:
    when: dt.datetime
    path: Path
    tags: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]
    counts: dict[str, int]
    part: _Part | None
    secret: str = "never shown"


def test_a_view_shows_the_named_fields_only_in_their_order_and_under_their_keys() -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    counts = {"sent": 2}
    record = _Record(when, Path("/tmp/x"), ("a", "b"), (("k", "v"),), counts, _Part("p"))
    shown = view(record, ("tags", ("at", "when"), "path", "pairs", "counts", "part"))
    assert list(shown) == ["tags", "at", "path", "pairs", "counts", "part"]
    assert shown == {
        "tags": ["a", "b"],
        "at": "2026-01-02T03:04:05+00:00",
        "path": "/tmp/x",
        "pairs": [["k", "v"]],
        "counts": {"sent": 2},
        "part": {"name": "p"},
    }
    assert shown["counts"] is not counts  # a copy: the record stays frozen
    json.dumps(shown)


def test_plain_leaves_plain_values_and_none_as_they_are() -> None:
    for value in (None, "x", 1, 1.5, True):
        assert plain(value) is value


@dataclasses.dataclass(frozen=True, slots=True)
class _Shown(Record):
    name: str
    secret: str = "never shown"

    _SHOWN: ClassVar[Shown] = (("label", "name"),)


def test_a_record_shows_its_named_fields_and_keeps_its_slots() -> None:
    assert _Shown("x").to_dict() == {"label": "x"}
    assert not hasattr(_Shown("x"), "__dict__")

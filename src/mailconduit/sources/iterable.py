"""Python data: any iterable of mappings, or a pandas DataFrame (found by duck typing).

A one-shot iterator (a generator) is read into a list at open, because a source is
scanned more than once (columns, validation, rows); re-iterable data is not copied.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from mailconduit.errors import SourceError
from mailconduit.sources.base import Record, Source, SourceKind, check_column_names
from mailconduit.sources.cells import cell_problem

__all__ = ["IterableSource", "is_dataframe"]


def is_dataframe(data: object) -> bool:
    """True for a pandas (or look-alike) DataFrame, without importing pandas."""
    return all(hasattr(data, name) for name in ("itertuples", "columns", "dtypes"))


def _plain(value: Any) -> Any:
    """A DataFrame cell as a plain Python value; NaN, NaT and NA become ``None``."""
    kind = type(value)
    if value is None or kind is str or kind is int or kind is bool:
        return value
    if kind is float:
        return None if value != value else value
    if kind.__name__ in ("NaTType", "NAType"):
        return None
    if hasattr(value, "to_pydatetime"):
        return value.to_pydatetime()
    if hasattr(value, "to_pytimedelta"):
        return value.to_pytimedelta()
    if hasattr(value, "item") and hasattr(value, "dtype"):
        return _plain(value.item())
    return value


class IterableSource(Source):
    """Rows given as Python objects: each item a mapping of column name to value."""

    kind = SourceKind.ITERABLE

    def __init__(
        self,
        data: Any,
        *,
        key_column: str | None = None,
        location: str | None = None,
    ) -> None:
        self._frame: Any = None
        self._items: Iterable[Mapping[str, Any]] = ()
        if is_dataframe(data):
            self._frame = data
            self.location = location or "<DataFrame>"
            names = [str(name) for name in data.columns]
            columns = check_column_names(names, self.location, what="DataFrame's columns")
            total = len(data)
        else:
            self.location = location or "<data>"
            self._items = list(data) if iter(data) is data else data
            seen: dict[str, None] = {}
            total = 0
            for _number, _line, values, _problem in self._records():
                total += 1
                for name in values:
                    seen.setdefault(name)
            columns = check_column_names(list(seen), self.location, what="records' keys")
        super().__init__(location=self.location, columns=columns, key_column=key_column)
        self._count = total

    def _records(self) -> Iterator[Record]:
        if self._frame is not None:
            columns = self.columns
            for number, cells in enumerate(self._frame.itertuples(index=False, name=None), start=1):
                values = {name: _plain(cell) for name, cell in zip(columns, cells, strict=False)}
                yield number, None, values, cell_problem(values)
            return
        for number, item in enumerate(self._items, start=1):
            if not isinstance(item, Mapping):
                raise SourceError(
                    f"record {number} is not a mapping of column names to values "
                    f"(it is {type(item).__name__})",
                    self.location,
                )
            values = dict(item)
            for name in values:
                if type(name) is not str:
                    raise SourceError(
                        f"record {number} has a column name that is not text: {name!r}",
                        self.location,
                    )
            yield number, None, values, cell_problem(values)

    def count(self) -> int:
        if self._count is None:
            self._count = len(self._frame) if self._frame is not None else super().count()
        return self._count

    def _describe_kind(self) -> str:
        return f"Python data {self.location}"

    def _fingerprint(self) -> str:
        digest = hashlib.sha256(b"iterable\0")
        for _number, _line, values, _problem in self._records():
            text = json.dumps(values, sort_keys=True, default=str, separators=(",", ":"))
            digest.update(text.encode("ascii") + b"\n")
        return "sha256:" + digest.hexdigest()

"""Excel workbooks (.xlsx), read row by row with openpyxl's read-only mode.

The first non-empty row of the sheet is the header; empty rows are skipped. Cell values
keep their types: text, int, float, bool, ``datetime`` for dates (templates format them),
``None`` for an empty cell. Formulas give their last computed value.
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Iterator
from typing import Any

from mailconduit.errors import SourceError
from mailconduit.sources.base import FileSource, ReadOptions, Record, SourceKind, check_column_names

__all__ = ["ExcelSource"]


def _is_empty(cells: tuple[Any, ...]) -> bool:
    return all(c is None or (type(c) is str and not c.strip()) for c in cells)


def _column_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


class ExcelSource(FileSource):
    """One worksheet of an .xlsx workbook; the ``sheet`` option is a name or a 1-based position."""

    kind = SourceKind.XLSX

    def _read_columns(self, options: ReadOptions) -> tuple[str, ...]:
        workbook = self._load()
        try:
            self.sheet = self._pick_sheet(workbook, options.sheet)
            header, self._header_row = self._read_header(workbook)
        finally:
            workbook.close()
        self._width = len(header)
        return check_column_names(header, f"{self.location}:{self._header_row}", what="header row")

    def _load(self) -> Any:
        import openpyxl
        from openpyxl.utils.exceptions import InvalidFileException

        try:
            with warnings.catch_warnings():
                # Style and extension notices about the workbook say nothing about its data.
                warnings.simplefilter("ignore", UserWarning)
                return openpyxl.load_workbook(self.path, read_only=True, data_only=True)
        except (zipfile.BadZipFile, InvalidFileException, KeyError, OSError) as exc:
            raise SourceError(
                f"not a readable .xlsx workbook ({exc}); encrypted workbooks and the old "
                ".xls format are not supported: save it as .xlsx",
                self.location,
            ) from None

    def _pick_sheet(self, workbook: Any, sheet: str | int | None) -> str:
        names = [str(ws.title) for ws in workbook.worksheets]
        shown = ", ".join(repr(n) for n in names)
        if sheet is None:
            if not names:
                raise SourceError("the workbook has no worksheet", self.location)
            return names[0]
        if isinstance(sheet, str) and sheet in names:
            return sheet
        if isinstance(sheet, int) or (isinstance(sheet, str) and sheet.strip().isdigit()):
            position = int(sheet)
            if 1 <= position <= len(names):
                return names[position - 1]
            raise SourceError(
                f"the workbook has {len(names)} sheets, so there is no sheet {position}; "
                f"its sheets are: {shown}",
                self.location,
            )
        raise SourceError(
            f"no sheet named {sheet!r}; the workbook's sheets are: {shown}", self.location
        )

    def _iter_sheet(self, workbook: Any) -> Iterator[tuple[int, tuple[Any, ...]]]:
        worksheet = workbook[self.sheet]
        yield from enumerate(worksheet.iter_rows(values_only=True), start=1)

    def _read_header(self, workbook: Any) -> tuple[list[str], int]:
        for row_number, cells in self._iter_sheet(workbook):
            if _is_empty(cells):
                continue
            names = ["" if c is None else str(c).strip() for c in cells]
            while names and not names[-1]:
                names.pop()
            return names, row_number
        raise SourceError(f"sheet {self.sheet!r} is empty; it needs a header row", self.location)

    def _records(self) -> Iterator[Record]:
        width = self._width
        workbook = self._load()
        try:
            number = 0
            for row_number, cells in self._iter_sheet(workbook):
                if row_number <= self._header_row or _is_empty(cells):
                    continue
                if len(cells) > width and not _is_empty(cells[width:]):
                    extra = next(
                        i for i in range(width, len(cells)) if not _is_empty(cells[i : i + 1])
                    )
                    raise SourceError(
                        f"sheet {self.sheet!r} has a value in column {_column_letter(extra)}, "
                        "which has no name in the header row",
                        f"{self.location}:{row_number}",
                    )
                if len(cells) < width:
                    cells = cells + (None,) * (width - len(cells))
                number += 1
                yield self._record(number, row_number, cells)
        finally:
            workbook.close()

    def _describe_kind(self) -> str:
        return f"Excel workbook {self.location}, sheet {self.sheet!r}"

    def _read_with(self) -> tuple[str, ...]:
        return (self.sheet,)

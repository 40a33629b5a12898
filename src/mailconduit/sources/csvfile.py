"""CSV and TSV files, streamed with the ``csv`` module; values stay the file's exact strings."""

from __future__ import annotations

import csv
import itertools
from collections import deque
from collections.abc import Iterator
from typing import Any, TextIO

from mailconduit.errors import ConfigError, FieldError, SourceError
from mailconduit.sources.base import (
    FileSource,
    ReadOptions,
    Record,
    SourceKind,
    check_column_names,
    text_digest,
)
from mailconduit.sources.cells import cell_problem, holds_forbidden
from mailconduit.sources.text import decode_error, read_head, refuse_binary, resolve_encoding

__all__ = ["CANDIDATE_DELIMITERS", "CsvSource", "parse_delimiter"]

#: Delimiters we detect; any other single character can be named explicitly.
CANDIDATE_DELIMITERS = ",;\t|"
_SAMPLE_CHARS = 16 * 1024  # csv.Sniffer costs ~1 ms per KB; 16 KB is plenty of rows
#: Characters read and checked at a time (a block of whole lines).
_BLOCK_CHARS = 64 * 1024
_NAMED_DELIMITERS = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


def parse_delimiter(delimiter: str) -> str:
    """One character, accepting the spellings a shell makes easy (``tab``, ``\\t``)."""
    value = _NAMED_DELIMITERS.get(delimiter.lower(), delimiter)
    if len(value) != 1 or value in '"\r\n':
        raise ConfigError.for_fields(
            "source options",
            [
                FieldError(
                    "delimiter",
                    f"must be one character other than a quote or newline, not {delimiter!r}",
                )
            ],
        )
    return value


class CsvSource(FileSource):
    """A delimited text file with a header row; one record per row after it.

    Rows with a different number of fields than the header, quotes that never close
    and undecodable bytes are errors naming the file line. A row with a control
    character in a cell (quoted or not) is read, carrying the problem, so that it alone
    is rejected.
    """

    kind = SourceKind.CSV

    def _read_columns(self, options: ReadOptions) -> tuple[str, ...]:
        given = None if options.delimiter is None else parse_delimiter(options.delimiter)
        head = read_head(self.path)
        refuse_binary(head, self.location)
        self.encoding = resolve_encoding(options.encoding, head)
        self.delimiter = self._detect_delimiter() if given is None else given
        header, self._header_line = self._read_header()
        names = [name.strip() for name in header]
        if names:
            names[0] = names[0].lstrip("\ufeff").strip()
        return check_column_names(names, f"{self.location}:{self._header_line}")

    # -- reading ---------------------------------------------------------------------------
    def _open(self) -> TextIO:
        return self.path.open(encoding=self.encoding, newline="")

    def _reader(self, lines: Iterator[str]) -> Any:
        return csv.reader(lines, delimiter=self.delimiter, strict=True)

    def _detect_delimiter(self) -> str:
        """Sniff among , ; TAB | on the first 16 KB; the header line has the last word."""
        try:
            with self._open() as fh:
                sample = fh.read(_SAMPLE_CHARS)
        except UnicodeDecodeError:
            raise decode_error(self.path, self.encoding, self.location) from None
        if len(sample) == _SAMPLE_CHARS and "\n" in sample:
            sample = sample[: sample.rindex("\n") + 1]
        first_line = next((ln for ln in sample.splitlines() if ln.strip()), "")
        try:
            sniffed: str | None = (
                csv.Sniffer().sniff(sample, delimiters=CANDIDATE_DELIMITERS).delimiter
            )
        except csv.Error:
            sniffed = None
        if sniffed is not None and sniffed in first_line:
            return sniffed
        counts = {d: first_line.count(d) for d in CANDIDATE_DELIMITERS}
        best = max(counts, key=lambda d: counts[d])
        if counts[best]:
            return best
        return "\t" if self.path.suffix.lower() == ".tsv" else ","

    def _read_header(self) -> tuple[list[str], int]:
        with self._open() as fh:
            reader = self._reader(_LineBlocks(fh).lines())
            try:
                for fields in reader:
                    if fields and any(f.strip() for f in fields):
                        return fields, reader.line_num
            except csv.Error as exc:
                raise self._csv_error(exc, 1, reader.line_num) from None
            except UnicodeDecodeError:
                raise decode_error(self.path, self.encoding, self.location) from None
        raise SourceError("the file is empty; a CSV file needs a header row", self.location)

    def validate(self) -> int:
        """The structure scan of :meth:`Source.validate`, without building the rows."""
        if self.key_column is not None:
            return super().validate()
        try:
            total = sum(1 for _ in self._records(build=False))
        except OSError as exc:
            raise SourceError(
                f"cannot read the data: {exc.strerror or exc}", self.location
            ) from None
        self._count = total
        return total

    def _records(self, *, build: bool = True) -> Iterator[Record]:
        columns = self.columns
        width = len(columns)
        location = self.location
        with self._open() as fh:
            blocks = _LineBlocks(fh)
            flagged = blocks.flagged
            reader = self._reader(blocks.lines())
            last_line = 0
            number = 0
            try:
                for fields in reader:
                    line = last_line + 1
                    last_line = reader.line_num
                    suspect = False
                    if flagged and flagged[0] <= last_line:  # rare: the O(1) test is the cost
                        while flagged and flagged[0] <= last_line:
                            flagged.popleft()
                        suspect = True
                    if last_line <= self._header_line:
                        continue
                    if len(fields) != width:
                        if not fields or (width > 1 and len(fields) == 1 and not fields[0].strip()):
                            continue
                        raise self._width_error(len(fields), line)
                    number += 1
                    if not build:
                        yield number, line, {}, None
                        continue
                    values = dict(zip(columns, fields, strict=False))
                    yield number, line, values, cell_problem(values) if suspect else None
            except csv.Error as exc:
                raise self._csv_error(exc, last_line + 1, reader.line_num) from None
            except UnicodeDecodeError:
                raise decode_error(self.path, self.encoding, location) from None

    def _digest(self, values: dict[str, Any]) -> str:
        return text_digest(list(values.values()))

    # -- errors ------------------------------------------------------------------------------
    def _width_error(self, found: int, line: int) -> SourceError:
        width = len(self.columns)
        if found > width:
            why = (
                f"{found} fields where the header (line {self._header_line}) has {width}; "
                f"a value containing the delimiter {self.delimiter!r} must be in double quotes"
            )
        else:
            why = f"{found} fields where the header (line {self._header_line}) has {width}"
        return SourceError(why, f"{self.location}:{line}")

    def _csv_error(self, exc: csv.Error, start: int, current: int) -> SourceError:
        text = str(exc)  # the csv module has one error type: its own words tell the cases apart
        if "unexpected end of data" in text:
            return SourceError(
                f"a quoted field that starts on line {start} is never closed "
                "(the file ends inside quotes)",
                f"{self.location}:{start}",
            )
        if "field larger than field limit" in text:
            return SourceError(
                f"a field of the row starting on line {start} is longer than "
                f"{csv.field_size_limit()} characters; most likely a quote is never closed",
                f"{self.location}:{start}",
            )
        if "expected after" in text:
            return SourceError(
                "a closing quote is followed by more text; a quote inside a quoted value "
                'must be doubled ("")',
                f"{self.location}:{current}",
            )
        return SourceError(text, f"{self.location}:{current}")

    # -- the rest of the interface -------------------------------------------------------------
    def _describe_kind(self) -> str:
        shown = "TAB" if self.delimiter == "\t" else repr(self.delimiter)
        return f"CSV file {self.location} (encoding {self.encoding}, delimiter {shown})"

    def _read_with(self) -> tuple[str, ...]:
        return self.encoding, self.delimiter


class _LineBlocks:
    """The file's lines, read and checked a block at a time and handed on by C code (no
    Python step per line); ``flagged`` collects, in order, the numbers of the lines that
    hold a character data may not hold, so only their rows are looked at cell by cell."""

    def __init__(self, fh: TextIO) -> None:
        self._fh = fh
        self.flagged: deque[int] = deque()

    def lines(self) -> Iterator[str]:
        return itertools.chain.from_iterable(self._blocks())

    def _blocks(self) -> Iterator[list[str]]:
        before = 0  # lines in the blocks already handed on
        while lines := self._fh.readlines(_BLOCK_CHARS):
            if holds_forbidden("".join(lines)):
                self.flagged.extend(
                    before + n for n, line in enumerate(lines, 1) if holds_forbidden(line)
                )
            before += len(lines)
            yield lines

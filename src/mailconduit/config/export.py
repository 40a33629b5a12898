"""The export: what a user asks to send (:class:`ExportSpec`) and the rules that check it."""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from mailconduit.config.coerce import FieldErrors, as_bool, as_enum, as_float, as_int
from mailconduit.config.limits import EXPORT_ALIASES, text_limit_errors
from mailconduit.config.text import mime_charset, source_codec
from mailconduit.errors import ConfigError


class ExportMode(enum.StrEnum):
    """``row``: one e-mail per row; ``table``: the whole container in one; ``group``: one per value."""

    ROW = "row"
    TABLE = "table"
    GROUP = "group"


class Oversize(enum.StrEnum):
    """What a table or group message over the server's size limit becomes."""

    FAIL = "fail"  # the message fails, nothing is sent
    ATTACH = "attach"  # the table goes as attachments only
    SPLIT = "split"  # the rows are split over several messages


class SourceKind(enum.StrEnum):
    """The kinds of data container mailconduit reads (stored by these values)."""

    CSV = "csv"
    JSON = "json"
    JSONL = "jsonl"
    XLSX = "xlsx"
    PARQUET = "parquet"
    SQL = "sql"
    ITERABLE = "iterable"
    TSV = "tsv"  # CSV with a tab delimiter: a word users give, never an open source's kind


#: Other words for a kind, taken wherever a kind is given.
_SOURCE_KIND_ALIASES: Mapping[str, SourceKind] = {
    "ndjson": SourceKind.JSONL,
    "excel": SourceKind.XLSX,
}


def parse_source_kind(text: str) -> SourceKind:
    """The kind ``text`` names (any case, or an alias); ValueError listing the known words."""
    name = text.strip().lower()
    if name in _SOURCE_KIND_ALIASES:
        return _SOURCE_KIND_ALIASES[name]
    try:
        return SourceKind(name)
    except ValueError:
        kinds = [k.value for k in SourceKind if k is not SourceKind.TSV]
        known = ", ".join(kinds + sorted([*_SOURCE_KIND_ALIASES, SourceKind.TSV.value]))
        raise ValueError(f"unknown kind {text!r}; one of: {known}") from None


class ReportFormat(enum.StrEnum):
    """The format of the run's report file (else chosen by its extension)."""

    CSV = "csv"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Transient failures (4xx, timeouts, drops) are retried with exponential back-off and jitter."""

    max_attempts: int = 5
    max_seconds: float = 3600.0
    initial_delay: float = 1.0
    max_delay: float = 300.0


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Caps on sending: per second / minute / hour (token buckets) and per day (0 = none)."""

    per_second: float = 0.0
    per_minute: float = 0.0
    per_hour: float = 0.0
    per_day: int = 0

    @property
    def unlimited(self) -> bool:
        return not (self.per_second or self.per_minute or self.per_hour or self.per_day)


@dataclass(frozen=True, slots=True)
class ExportSpec:
    """Everything an export needs, as a user writes it on the CLI or in an interface file.

    ``source`` is a path, ``-`` for stdin, a SQL query (with ``database_url``), or for the
    Python API any iterable of mappings. Message fields are Jinja2 templates over the
    row's columns. ``None`` means "the connection's setting, or the built-in default".
    """

    source: Any
    connection: str = "local"
    to: str = ""
    subject: str = ""
    body: str = ""
    body_file: str = ""
    html_body: str = ""
    html_body_file: str = ""
    text_body: str = ""
    text_body_file: str = ""
    cc: str = ""
    bcc: str = ""
    reply_to: str = ""
    from_: str = ""
    attach: tuple[str, ...] = ()
    attach_dir: str = ""
    inline: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    mode: ExportMode = ExportMode.ROW
    by: str = ""
    to_column: str = ""
    table_formats: tuple[str, ...] = ("html",)
    table_row_cap: int = 500
    oversize: Oversize = Oversize.FAIL
    where: str = ""
    order_by: str = ""
    key: str = ""
    kind: SourceKind | None = None
    encoding: str = ""
    delimiter: str = ""
    sheet: str = ""
    database_url: str = ""
    charset: str = "utf-8"
    html: bool | None = None
    dry_run: Path | None = None
    limit: int = 0
    fail_fast: bool = False
    run_id: str = ""
    concurrency: int | None = None
    rate: RateLimit = field(default_factory=RateLimit)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_errors: int = 0
    resend_uncertain: bool = True
    journal: bool = True
    messages_per_connection: int | None = None
    data_timeout_ms: int | None = None
    report: str = ""
    report_format: ReportFormat | None = None


_EXPORT_FIELDS = {f.name for f in fields(ExportSpec)}
_TABLE_FORMATS = ("html", "csv", "xlsx", "json")
_RATE_UNITS = {"s": "per_second", "sec": "per_second", "second": "per_second", "m": "per_minute",
               "min": "per_minute", "minute": "per_minute", "h": "per_hour", "hour": "per_hour",
               "d": "per_day", "day": "per_day"}  # fmt: skip


def parse_rate(text: str) -> dict[str, float]:
    """``"10/s"``, ``"600/min"``, ``"5000/h"``, ``"20000/day"`` (comma-separated) → RateLimit fields."""
    out: dict[str, float] = {}
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        number, _, unit = part.partition("/")
        key = _RATE_UNITS.get(unit.strip().lower())
        if key is None:
            raise ValueError(f"{part!r} is not a rate like 10/s, 600/min, 5000/h or 20000/day")
        value = as_float(number)
        if value <= 0:
            raise ValueError(f"{part!r} must be a positive rate")
        out[key] = value
    return out


#: Settings that spell a rate or a retry policy field by field.
_RATE_KEYS = ("rate_per_second", "rate_per_minute", "rate_per_hour", "daily_cap", "per_day")
_RETRY_KEYS = ("max_attempts", "retry_seconds", "max_seconds", "initial_delay", "max_delay")
#: Whole-number settings, and those whose 0 (or -1) means "use the connection's or the default".
_INT_SETTINGS = ("limit", "max_errors", "table_row_cap", "concurrency", "messages_per_connection",
                 "data_timeout_ms")  # fmt: skip
_DEFAULT_MEANS = {"concurrency": 0, "messages_per_connection": -1, "data_timeout_ms": 0}
_Err = Callable[[str, str], None]


def validate_export_spec(data: Mapping[str, Any]) -> ExportSpec:
    """Build an :class:`ExportSpec` from CLI options, an interface file or a form; every wrong field named."""
    if too_long := text_limit_errors("export", data):
        raise ConfigError.for_fields("export", too_long)
    err = FieldErrors()
    values, rate, retry = _sort_keys(data, err)
    _check_value_types(values, err)
    # ``is``/isinstance, not ``in (...)``: == on a DataFrame source has no truth value.
    if values.get("source") is None or (isinstance(values["source"], str) and not values["source"]):
        err("source", "is required (a file, '-' for stdin, or a SQL query with database_url)")
    _read_lists(values, err)
    _check_shape(values, err)
    _check_message(values, err)
    _read_numbers(values, err)
    _check_bodies(values, err)
    _check_names(values, err)
    if "rate" not in values:
        _build_rate(values, rate, err)
    if "retry" not in values:
        _build_retry(values, retry, err)
    err.raise_for("export")
    return ExportSpec(**values)


def _sort_keys(
    data: Mapping[str, Any], err: _Err
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Settings by their own names (aliases resolved), and the rate and retry parts apart."""
    values: dict[str, Any] = {}
    rate: dict[str, Any] = {}
    retry: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = EXPORT_ALIASES.get(raw_key, raw_key)
        if key not in _EXPORT_FIELDS and key not in _RATE_KEYS and key not in _RETRY_KEYS:
            err(str(raw_key), "is not an export setting")
        elif value is None:
            continue
        elif key in _RATE_KEYS:
            rate[key.replace("rate_", "").replace("daily_cap", "per_day")] = value
        elif key in _RETRY_KEYS:
            retry[key.replace("retry_seconds", "max_seconds")] = value
        elif key == "rate" and not isinstance(value, RateLimit):
            if isinstance(value, Mapping):
                rate.update(value)
            else:
                try:
                    rate.update(parse_rate(value))
                except ValueError as exc:
                    err("rate", str(exc))
        elif key == "retry" and not isinstance(value, RetryPolicy):
            if isinstance(value, Mapping):
                retry.update(value)
            else:
                err(
                    "retry",
                    "must be a mapping of max_attempts, max_seconds, initial_delay, max_delay",
                )
        else:
            values[key] = value
    return values, rate, retry


def _read_lists(values: dict[str, Any], err: _Err) -> None:
    """Lists given as one text (table formats, attachments) and custom headers as pairs."""
    if isinstance(values.get("table_formats"), str):
        values["table_formats"] = tuple(
            p.strip() for p in values["table_formats"].split(",") if p.strip()
        )
    if isinstance(values.get("attach"), str):
        values["attach"] = (values["attach"],)
    if "headers" in values:
        pairs = _header_pairs(values["headers"], err)
        if pairs is None:
            del values["headers"]
        else:
            values["headers"] = pairs


def _check_shape(values: dict[str, Any], err: _Err) -> None:
    """The mode and the settings that belong to it: grouping, table formats, oversize."""
    if "mode" in values:
        try:
            values["mode"] = as_enum(ExportMode, values["mode"])
        except ValueError as exc:
            err("mode", str(exc))
    mode = values.get("mode", ExportMode.ROW)
    if mode is ExportMode.GROUP and not values.get("by"):
        err("by", "group mode needs --by COLUMN")
    if values.get("by") and mode is not ExportMode.GROUP:
        err("by", "is only used in group mode (--mode group)")
    if values.get("to_column") and mode is ExportMode.ROW:
        err(
            "to_column",
            "takes recipients from a column in table or group mode; in row mode use --to '{{column}}'",
        )
    for fmt in values.get("table_formats", ()):
        if fmt not in _TABLE_FORMATS:
            err("table_formats", f"{fmt!r} is not one of: {', '.join(_TABLE_FORMATS)}")
    if "oversize" in values:
        try:
            values["oversize"] = Oversize(values["oversize"])
        except ValueError:
            err("oversize", "must be fail, attach or split")


def _check_message(values: dict[str, Any], err: _Err) -> None:
    """Recipients, subject, and the folder attachments and inline images come from."""
    if not values.get("to") and not values.get("to_column"):
        err("to", "is required (a template such as '{{email}}', or --to-column in table mode)")
    if not values.get("subject"):
        err("subject", "is required")
    if values.get("attach") and not values.get("attach_dir"):
        err("attach_dir", "attachments need --attach-dir: the folder they must come from")
    if "inline" in values:
        values["inline"] = _inline_pairs(values["inline"], err)
        if values["inline"] and not values.get("attach_dir"):
            err("attach_dir", "inline images need --attach-dir: the folder they must come from")


def _read_numbers(values: dict[str, Any], err: _Err) -> None:
    """Whole numbers (their "use the default" value becomes None) and switches."""
    for key in _INT_SETTINGS:
        if key in values:
            try:
                values[key] = as_int(values[key])
            except ValueError as exc:
                err(key, str(exc))
                del values[key]
                continue
            if values[key] < _DEFAULT_MEANS.get(key, 0):
                err(key, "must not be negative")
    if (values.get("concurrency") or 0) > 1000:
        err("concurrency", "at most 1000 sessions")
    for key, default_means in _DEFAULT_MEANS.items():
        if values.get(key) == default_means:
            values[key] = None
    for key in ("fail_fast", "resend_uncertain", "journal"):
        if key in values:
            try:
                values[key] = as_bool(values[key])
            except ValueError as exc:
                err(key, str(exc))
    if "html" in values and values["html"] is not None:
        try:
            values["html"] = as_bool(values["html"])
        except ValueError as exc:
            err("html", str(exc))


def _check_names(values: dict[str, Any], err: _Err) -> None:
    """The run id, the report's format, the source kind, the dry-run folder, encodings and
    charsets."""
    if values.get("run_id") and not re.fullmatch(
        r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,79}", str(values["run_id"])
    ):
        err("run_id", "must hold only letters, digits, '.', '_', ':' or '-' (at most 80)")
    if values.get("report_format"):
        try:
            values["report_format"] = ReportFormat(values["report_format"])
        except ValueError:
            err("report_format", "must be csv or json")
    else:
        values.pop("report_format", None)
    if values.get("kind"):
        try:
            values["kind"] = parse_source_kind(values["kind"])
        except ValueError as exc:
            err("kind", str(exc))
    else:
        values.pop("kind", None)
    if values.get("dry_run"):
        values["dry_run"] = Path(values["dry_run"])
    else:
        values.pop("dry_run", None)
    if values.get("encoding"):
        try:
            source_codec(values["encoding"])
        except ValueError as exc:
            err("encoding", str(exc))
    if values.get("charset"):
        try:
            mime_charset(values["charset"])
        except ValueError as exc:
            err("charset", str(exc))


def _build_rate(values: dict[str, Any], rate: Mapping[str, Any], err: _Err) -> None:
    try:
        values["rate"] = RateLimit(
            per_second=as_float(rate.get("per_second", 0)),
            per_minute=as_float(rate.get("per_minute", 0)),
            per_hour=as_float(rate.get("per_hour", 0)),
            per_day=as_int(rate.get("per_day", 0)),
        )
        r = values["rate"]
        if min(r.per_second, r.per_minute, r.per_hour, r.per_day) < 0:
            err("rate", "must not be negative")
    except ValueError as exc:
        err("rate", str(exc))


def _build_retry(values: dict[str, Any], retry: Mapping[str, Any], err: _Err) -> None:
    try:
        policy = RetryPolicy(
            max_attempts=as_int(retry.get("max_attempts", 5)),
            max_seconds=as_float(retry.get("max_seconds", 3600.0)),
            initial_delay=as_float(retry.get("initial_delay", 1.0)),
            max_delay=as_float(retry.get("max_delay", 300.0)),
        )
        if policy.max_attempts < 1:
            err("max_attempts", "must be at least 1")
        if policy.max_seconds <= 0 or policy.initial_delay < 0 or policy.max_delay < 0:
            err("retry", "times must be positive")
        values["retry"] = policy
    except ValueError as exc:
        err("retry", str(exc))


#: Export settings that are text (templates, column names, SQL, names of things).
#: (The bodies are :func:`_check_bodies`'s.)
_TEXT_SETTINGS = ("connection", "to", "subject", "cc", "bcc", "reply_to", "from_", "by",
                  "to_column", "oversize", "where", "order_by", "key", "kind", "encoding",
                  "delimiter", "database_url", "charset", "run_id", "report_format")  # fmt: skip
#: Export settings naming a file or a folder: text, or a path object from Python.
_PATH_SETTINGS = ("attach_dir", "dry_run", "report")
#: Export settings that are a list of texts (one text stands for a list of one).
_LIST_SETTINGS = ("attach", "table_formats")


def _kind_of(value: Any) -> str:
    """What a wrongly typed value is, in a user's words."""
    if isinstance(value, bool):
        return "true/false"
    if value is None:
        return "empty (null)"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple | set | frozenset):
        return "a list"
    return f"a {type(value).__name__}"


def _check_value_types(values: dict[str, Any], err: Any) -> None:
    """Name every setting of the wrong type (a number for ``where``...) and drop it, so the
    rules after this one see only values of the type they expect."""
    for key in (*_TEXT_SETTINGS, *_PATH_SETTINGS, "sheet", "source"):
        value = values.get(key)
        if value is None or isinstance(value, str):
            continue
        if key in (*_PATH_SETTINGS, "source") and isinstance(value, os.PathLike):
            values[key] = os.fspath(value)
            if isinstance(values[key], str):
                continue
        elif key == "source":
            continue  # Python data (rows, a DataFrame) for the Python API
        elif key == "sheet" and isinstance(value, int) and not isinstance(value, bool):
            values[key] = str(value)
            continue
        err("from" if key == "from_" else key, f"must be text, not {_kind_of(value)}")
        del values[key]
    for key in _LIST_SETTINGS:
        value = values.get(key)
        if value is None or isinstance(value, str):
            continue
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            values[key] = tuple(value)
            continue
        err(key, f"must be a text or a list of texts, not {_kind_of(value)}")
        del values[key]


def _header_pairs(headers: Any, err: Any) -> tuple[tuple[str, str], ...] | None:
    """Custom headers as (name, template) pairs from 'Name: template' texts, pairs or a
    mapping; None (with the error noted) for anything else."""
    shape = "must be 'Name: template' texts, [name, template] pairs or a mapping"
    if isinstance(headers, str):
        headers = [headers]
    if isinstance(headers, Mapping):
        items: list[Any] = list(headers.items())
    elif isinstance(headers, list | tuple):
        items = list(headers)
    else:
        err("headers", f"{shape}, not {_kind_of(headers)}")
        return None
    pairs: list[tuple[str, str]] = []
    for item in items:
        if isinstance(item, str):
            name, sep, tmpl = item.partition(":")
            if not sep or not name.strip():
                err("headers", f"{item[:60]!r} must look like 'Name: template'")
                continue
            pairs.append((name.strip(), tmpl.strip()))
        elif (
            isinstance(item, list | tuple)
            and len(item) == 2
            and all(isinstance(part, str) for part in item)
        ):
            pairs.append((item[0].strip(), item[1]))
        elif isinstance(headers, Mapping):  # the item is a (name, value) pair made above
            name, value = item
            what = (f"a name is {_kind_of(name)}" if not isinstance(name, str)
                    else f"the value of {name[:60]!r} is {_kind_of(value)}")  # fmt: skip
            err("headers", f"{shape}; {what}")
        else:
            err("headers", f"{shape}; one is {_kind_of(item)}")
    return tuple(pairs)


#: An inline image's NAME: a Content-ID local part that is also safe in a ``cid:`` URL.
INLINE_NAME_RE = re.compile(r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*")
INLINE_NAME_MAX = 64


def _inline_pairs(value: Any, err: Callable[[str, str], None]) -> tuple[tuple[str, str], ...]:
    """``inline`` as (NAME, template) pairs, from a mapping, "NAME=TEMPLATE" lines or pairs."""
    if isinstance(value, Mapping):
        items: list[Any] = list(value.items())
    elif isinstance(value, str):
        items = [line for line in value.splitlines() if line.strip()]
    else:
        try:
            items = list(value)
        except TypeError:
            err("inline", "must be a mapping of NAME to file template, or 'NAME=TEMPLATE' items")
            return ()
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for item in items:
        if isinstance(item, str):
            name, sep, template = item.partition("=")
            if not sep:
                err("inline", f"{item!r} must look like 'NAME=TEMPLATE', e.g. logo=logo.png")
                continue
        elif isinstance(item, tuple | list) and len(item) == 2:
            name, template = item
        else:
            err("inline", f"{item!r} must look like 'NAME=TEMPLATE', e.g. logo=logo.png")
            continue
        name, template = str(name).strip(), "" if template is None else str(template).strip()
        if len(name) > INLINE_NAME_MAX or not INLINE_NAME_RE.fullmatch(name):
            err("inline", f"name {name[:80]!r} must be 1-{INLINE_NAME_MAX} letters, digits, "
                "'_', '+', '-' or inner dots (it is the image's cid:NAME in the HTML)")  # fmt: skip
        elif name.lower() in seen:
            err("inline", f"name {name!r} is given twice")
        elif not template:
            err("inline", f"{name!r} needs a file template, e.g. {name}=logo.png")
        else:
            seen.add(name.lower())
            pairs.append((name, template))
    return tuple(pairs)


_BODY_KEYS = ("body", "body_file", "html_body", "html_body_file", "text_body", "text_body_file")


def _check_bodies(values: dict[str, Any], err: Callable[[str, str], None]) -> None:
    """One body: ``body``/``body_file`` (format decided later), or an HTML and/or text body."""
    for key in _BODY_KEYS:
        value = values.get(key)
        if key.endswith("_file") and isinstance(value, os.PathLike):
            values[key] = os.fspath(value)
        elif value is not None and not isinstance(value, str):
            err(key, "must be text")
            del values[key]
    given = {k for k in _BODY_KEYS if values.get(k)}
    for one, other in (("body", "body_file"), ("html_body", "html_body_file"),
                       ("text_body", "text_body_file")):  # fmt: skip
        if {one, other} <= given:
            err(one, f"give either {one} or {other}, not both")
    if not given:
        err("body", "is required (--body, --body-file, --html-body[-file] or --text-body[-file])")
        return
    explicit = given - {"body", "body_file"}
    if explicit and given & {"body", "body_file"}:
        err("body", f"give either body/body_file or {'/'.join(sorted(explicit))}, not both "
            "(a hand-written text next to an HTML body: --html-body[-file] with --text-body[-file])")  # fmt: skip
        return
    has_html = bool(explicit & {"html_body", "html_body_file"})
    text_only = bool(explicit) and not has_html
    if values.get("html") is False and (has_html or values.get("inline")):
        what = "the HTML body" if has_html else "inline images, which need an HTML body"
        err("html", f"--text (html: false) contradicts {what}")
    elif values.get("html") is True and text_only:
        err("html", "--html (html: true) needs an HTML body: give --html-body[-file]; "
            "--text-body[-file] alone is sent as plain text")  # fmt: skip
    elif values.get("inline") and text_only:
        err("inline", "inline images need an HTML body (--html-body[-file]); "
            "--text-body[-file] alone is sent as plain text")  # fmt: skip


def export_spec_to_dict(spec: ExportSpec) -> dict[str, Any]:
    """A JSON-friendly copy (for the journal and interface files); iterable sources become a label."""
    if not isinstance(spec.source, str | bytes) and not hasattr(spec.source, "__fspath__"):
        label = "<python iterable>"
    else:
        label = str(spec.source)
    # The label replaces the source before asdict, which would deep-copy rows (a generator
    # cannot be copied at all).
    out = asdict(replace(spec, source=label))
    out["mode"] = spec.mode.value
    out.update(_stored_defaults(spec))
    out["from"] = out.pop("from_")
    out["headers"] = [list(h) for h in spec.headers]
    out["attach"] = list(spec.attach)
    out["table_formats"] = list(spec.table_formats)
    out["inline"] = [list(pair) for pair in spec.inline]
    return out


def _stored_defaults(spec: ExportSpec) -> dict[str, Any]:
    """The typed settings in the form journals and interface files have always held them."""
    return {
        "oversize": spec.oversize.value,
        "kind": "" if spec.kind is None else spec.kind.value,
        "dry_run": "" if spec.dry_run is None else str(spec.dry_run),
        "report_format": "" if spec.report_format is None else spec.report_format.value,
        **{key: stored if getattr(spec, key) is None else getattr(spec, key)
           for key, stored in _DEFAULT_MEANS.items()},
    }  # fmt: skip

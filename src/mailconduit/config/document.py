"""Settings documents users hand us (interface files, connection exports): read and parsed in
one place, so a file that is not UTF-8, not YAML/JSON, nested too deep or holding a number
too long to read is one error naming the file, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mailconduit.errors import ConfigError, FieldError


def _refuse(what: str, label: str, reason: str) -> ConfigError:
    return ConfigError.for_fields(what, [FieldError("file", f"{label}: {reason}" if label else reason)])


def read_document_text(path: Path, *, what: str) -> str:
    """The text of a settings file (UTF-8, a BOM tolerated); ConfigError naming it otherwise."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _refuse(what, str(path), exc.strerror or type(exc).__name__) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _refuse(
            what, str(path), f"byte {data[exc.start]:#04x} at offset {exc.start} is not UTF-8; "
            "save the file as UTF-8"
        ) from None


def parse_document(text: str, *, what: str, label: str = "", fmt: str = "yaml") -> Any:
    """The value in a YAML (or, with ``fmt="json"``, JSON) text; ConfigError saying why not."""
    import yaml

    try:
        return json.loads(text) if fmt == "json" else yaml.safe_load(text)
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
    except json.JSONDecodeError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    except RecursionError:
        reason = "nested too deeply"
    except ValueError:  # a number with thousands of digits: Python refuses to read it
        reason = "holds a number too long to read"
    raise _refuse(what, label, reason)

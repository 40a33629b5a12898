"""What the interface tests share beside their fixtures (tests/interfaces/conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def interface_document(
    source: Path, *, name: str, subject: str, body: str, **extra: Any
) -> dict[str, Any]:
    """An interface ``name`` sending ``source`` through the built-in ``local`` connection to
    each row's ``email``; ``extra`` sits beside the export (schedule, notify, database...)."""
    export = {
        "source": str(source),
        "connection": "local",
        "to": "{{ email }}",
        "subject": subject,
        "body": body,
    }
    return {"name": name, "export": export, **extra}

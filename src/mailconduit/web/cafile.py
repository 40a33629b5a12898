"""Which CA files the console and the REST API may give a connection.

``ca_file`` is a path on the server machine, read when the connection's TLS starts; if
anyone signed in could set any path, Test Connection would tell them which files exist
(a load error against a TLS failure). So the console may set only the sink's own CA and
files under the folders the operator names in ``MAILCONDUIT_CA_DIRS``; the CLI, run by
the operator, may set any path. The refusal reads the same whether the file exists or not.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mailconduit.errors import ConfigError, FieldError
from mailconduit.home import sink_dir
from mailconduit.sink.certs import ca_file_of

__all__ = ["CA_DIRS_ENV", "ca_folders", "check_ca_file"]

#: Folders (separated by ``os.pathsep``) whose files the console may name as a CA file.
CA_DIRS_ENV = "MAILCONDUIT_CA_DIRS"


def ca_folders() -> list[Path]:
    """The folders of ``MAILCONDUIT_CA_DIRS``, as given (absolute ones only)."""
    parts = (part.strip() for part in os.environ.get(CA_DIRS_ENV, "").split(os.pathsep))
    return [Path(os.path.normpath(part)) for part in parts if part and os.path.isabs(part)]


def _allowed(value: str) -> bool:
    if not os.path.isabs(value):
        return False
    # Judged as written and as resolved: ".." or a link may not lead out of a folder.
    written = Path(os.path.normpath(value))
    resolved = written.resolve()
    sink_ca = ca_file_of(sink_dir())
    if written == sink_ca and resolved == sink_ca.resolve():
        return True
    return any(
        written.is_relative_to(folder) and resolved.is_relative_to(folder.resolve())
        for folder in ca_folders()
    )


def check_ca_file(data: Mapping[str, Any], *, stored: str = "") -> None:
    """ConfigError naming ``ca_file`` when ``data`` sets one the console may not set.

    An empty value (the system's authorities) and the connection's ``stored`` value (set
    by the operator, kept by an edit) are always accepted.
    """
    value = data.get("ca_file")
    if not isinstance(value, str) or not value.strip() or value.strip() == stored:
        return
    if not _allowed(value.strip()):
        raise ConfigError.for_fields(
            "connection",
            [FieldError("ca_file", f"must be the sink's CA or a file under {CA_DIRS_ENV}")],
        )

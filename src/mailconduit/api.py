"""The facade the CLI, the web console and workers use: connections, Test Connection, exports.

The top layer (cli, web) talks to the rest only through this module, ``config`` and
``errors``, so every rule lives in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailconduit.config import Connection, ExportSpec, url_scheme, validate_export_spec
from mailconduit.connections.env import env_lookup
from mailconduit.errors import ConfigError, FieldError, MailconduitError

if TYPE_CHECKING:
    from mailconduit.connections.store import TestStatus
    from mailconduit.delivery.events import ProgressCallback
    from mailconduit.delivery.report import ExportReport
    from mailconduit.journal import RunInfo
    from mailconduit.smtp.probe import ProbeResult

__all__ = [
    "create_connection",
    "delete_connection",
    "export",
    "export_spec",
    "get_connection",
    "get_run",
    "list_connections",
    "list_runs",
    "load_interface",
    "preview",
    "resume",
    "resume_run",
    "run_export",
    "run_report",
    "serving",
    "start_export",
    "test_connection",
    "update_connection",
]

BUILTIN = "local"


def get_connection(name: str) -> Connection:
    """Resolve a connection by name: the built-in ``local``, an environment URL, or the store."""
    if name == BUILTIN:
        from mailconduit.sink import local_connection

        return local_connection()
    from_env = env_lookup(name)
    if from_env is not None:
        return from_env
    from mailconduit.connections import store

    return store.get(name)


def list_connections() -> list[tuple[Connection, TestStatus | None]]:
    """Every usable connection (built-in, environment, stored) with its last test result."""
    from mailconduit.connections import store
    from mailconduit.sink import local_connection

    tests = store.last_tests()
    env = store.env_connections()
    out: list[tuple[Connection, TestStatus | None]] = [(local_connection(), None)]
    out += [(c, None) for c in env.values()]
    out += [(c, tests.get(c.name)) for c in store.list_stored() if c.name not in env]
    return out


def create_connection(data: Mapping[str, Any]) -> Connection:
    from mailconduit.connections import store

    return store.create(data)


def update_connection(name: str, changes: Mapping[str, Any]) -> Connection:
    if name == BUILTIN:
        raise ConfigError.for_fields(
            "connection", [FieldError("name", "the built-in connection 'local' cannot be edited")]
        )
    from mailconduit.connections import store

    return store.update_connection(name, changes)


def delete_connection(name: str) -> None:
    if name == BUILTIN:
        raise ConfigError.for_fields(
            "connection", [FieldError("name", "the built-in connection 'local' cannot be deleted")]
        )
    from mailconduit.connections import store

    store.delete_connection(name)


@contextlib.contextmanager
def serving(conn: Connection) -> Iterator[Connection]:
    """Make sure the server behind ``conn`` is up for the block: starts the embedded sink for ``local``."""
    if conn.origin == "builtin" and conn.name == BUILTIN:
        from mailconduit.sink import ensure_running, local_connection

        with ensure_running():
            yield local_connection()
    else:
        yield conn


def test_connection(
    conn: Connection | str,
    *,
    send_to: str | None = None,
    allow_address: Any = None,
    record: bool = True,
) -> ProbeResult:
    """Run Test Connection stage by stage; the result says success or which stage failed and why."""
    from mailconduit.smtp.probe import probe

    if isinstance(conn, str):
        conn = get_connection(conn)
    with serving(conn) as live:
        result = asyncio.run(probe(live, send_to=send_to, allow_address=allow_address))
    if record and live.origin == "store":
        from mailconduit.connections import store

        store.record_test(live.name, ok=result.ok, message=result.summary())
    return result


# --------------------------------------------------------------------------- exports


def export_spec(data: Mapping[str, Any]) -> ExportSpec:
    """Validate export settings (CLI options, interface file, web form) into an ExportSpec."""
    return validate_export_spec(data)


def load_interface(path: str | Path, *, run_id: str | None = None) -> ExportSpec:
    """Read an interface file (YAML): the same settings as ``mailconduit export``.

    Relative paths in it (source, the body files, attach_dir, dry_run, report) are relative
    to the file's folder, so a scheduler can run it from anywhere.
    """
    import yaml

    file = Path(path)
    try:
        doc = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError.for_fields(
            "interface file", [FieldError("file", f"{file}: {exc.strerror}")]
        ) from None
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())
        raise ConfigError.for_fields(
            "interface file", [FieldError("file", f"{file}: {first}")]
        ) from None
    if not isinstance(doc, dict):
        raise ConfigError.for_fields(
            "interface file", [FieldError("file", f"{file}: expected a mapping of settings")]
        )
    data = dict(doc.get("export", doc))
    base = file.resolve().parent
    for key in ("source", "body_file", "html_body_file", "text_body_file", "attach_dir",
                "dry_run", "report"):  # fmt: skip
        value = data.get(key)
        if (
            isinstance(value, str)
            and value
            and value != "-"
            and not (key == "source" and str(data.get("kind", "")) == "sql")
            and not url_scheme(value)
            and not Path(value).is_absolute()
        ):
            data[key] = str(base / value)
    if run_id:
        data["run_id"] = run_id
    return validate_export_spec(data)


def export(
    source: Any, /, *, progress: ProgressCallback | None = None, **options: Any
) -> ExportReport:
    """Send e-mails from ``source`` (a path, a SQL query with database_url, or rows).

    ``source`` may be any iterable of mappings, a pandas DataFrame too. Options are the
    fields of :class:`~mailconduit.config.ExportSpec` (``connection``, ``to``,
    ``subject``, ``body``...). Returns the report; raises for bad input before sending.
    """
    spec = validate_export_spec({"source": source, **options})
    return run_export(spec, progress=progress)


def run_export(
    spec: ExportSpec, *, progress: ProgressCallback | None = None, handle_signals: bool = True
) -> ExportReport:
    """Run (or, with an existing run id, resume) an export and wait for it."""
    from mailconduit.delivery.export import execute

    conn = get_connection(spec.connection)
    if spec.dry_run:
        return execute(spec, conn, progress=progress, handle_signals=handle_signals)
    with serving(conn) as live:
        return execute(
            spec,
            live,
            progress=progress,
            handle_signals=handle_signals,
            allow_address=_address_policy(),
        )


def _address_policy() -> Any:
    """The SSRF policy checked on every resolved address before connecting."""
    from mailconduit.netpolicy import allow_address

    return allow_address


def resume(
    run_id: str,
    *,
    retry_failed: bool = False,
    resend_uncertain: bool | None = None,
    source: Any = None,
    progress: ProgressCallback | None = None,
    handle_signals: bool = True,
) -> ExportReport:
    """Resume a run: rows not yet confirmed are sent, confirmed rows never again."""
    from mailconduit.delivery.export import resume as _resume
    from mailconduit.delivery.export import spec_of_run

    conn = get_connection(spec_of_run(run_id).connection)
    with serving(conn) as live:
        return _resume(
            run_id,
            live,
            retry_failed=retry_failed,
            resend_uncertain=resend_uncertain,
            source=source,
            progress=progress,
            handle_signals=handle_signals,
            allow_address=_address_policy(),
        )


def preview(spec: ExportSpec, *, limit: int = 3) -> list[Any]:
    """Render the first messages without sending anything (for the web console)."""
    from mailconduit.delivery.export import preview as _preview

    return _preview(spec, get_connection(spec.connection), limit=limit)


def get_run(run_id: str) -> RunInfo:
    from mailconduit.journal import Journal

    return Journal().get_run(run_id)


def list_runs(*, limit: int = 50) -> list[RunInfo]:
    from mailconduit.journal import Journal

    return Journal().list_runs(limit=limit)


def run_report(run_id: str) -> ExportReport:
    from mailconduit.delivery.export import report_from_journal

    return report_from_journal(run_id)


_background: dict[str, threading.Thread] = {}


def start_export(spec: ExportSpec) -> str:
    """Start an export in a background thread of this process; returns its run id at once."""
    from mailconduit.delivery.export import new_run_id

    if not spec.run_id:
        spec = dataclasses.replace(spec, run_id=new_run_id())
    return _start_background(spec.run_id, lambda: run_export(spec, handle_signals=False))


def resume_run(run_id: str, *, retry_failed: bool = False) -> str:
    """Resume a run in a background thread; returns its run id."""
    get_run(run_id)
    return _start_background(
        run_id, lambda: resume(run_id, retry_failed=retry_failed, handle_signals=False)
    )


def _start_background(run_id: str, target: Any) -> str:
    import logging

    existing = _background.get(run_id)
    if existing is not None and existing.is_alive():
        raise ConfigError.for_fields(
            "export", [FieldError("run_id", f"run {run_id!r} is already running")]
        )
    started = threading.Event()
    errors: list[BaseException] = []

    def body() -> None:
        try:
            target()
        except MailconduitError as exc:
            errors.append(exc)
            logging.getLogger("mailconduit").warning("run %s: %s", run_id, exc)
        finally:
            started.set()

    thread = threading.Thread(target=body, name=f"export-{run_id}", daemon=True)
    _background[run_id] = thread
    thread.start()
    # Wait until the run exists in the journal (or failed before), so callers can poll it.
    from mailconduit.journal import Journal

    journal = Journal()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not started.is_set():
        if journal.run_exists(run_id):
            return run_id
        time.sleep(0.02)
    if errors:
        raise errors[0]
    return run_id

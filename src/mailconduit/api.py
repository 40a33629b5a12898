"""The facade the CLI, the web console and workers use: connections, Test Connection, exports.

Every operation with rules goes through here, so the CLI, the console and the Airflow
provider apply the same ones; they take only value types and read-only helpers from the
layers below (ARCHITECTURE.md lists which).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias

from mailconduit.config.connection import Connection, ImplementationType
from mailconduit.config.export import ExportSpec, RateLimit, RetryPolicy, validate_export_spec
from mailconduit.config.text import url_scheme
from mailconduit.connections.env import env_lookup
from mailconduit.delivery import loop as event_loop
from mailconduit.errors import ConfigError, FieldError, MailconduitError
from mailconduit.home import LOCAL_CONNECTION

if TYPE_CHECKING:
    from mailconduit.agents import AgentSummary, ChunkProgress
    from mailconduit.connections.store import TestStatus
    from mailconduit.delivery.events import ProgressCallback
    from mailconduit.delivery.report import ExportReport
    from mailconduit.journal import RowState, RunInfo
    from mailconduit.oauth import DeviceAuthorization
    from mailconduit.smtp.probe import ProbeResult

__all__ = [
    "DataFrameLike",
    "ExportSource",
    "aexport",
    "aresume",
    "authorization_status",
    "authorize_connection",
    "connection_oauth",
    "create_connection",
    "delete_connection",
    "detach_export",
    "export",
    "export_spec",
    "get_connection",
    "get_run",
    "list_agents",
    "list_connections",
    "list_runs",
    "load_interface",
    "outcomes_by_day",
    "presets",
    "preview",
    "recent_tests",
    "resume",
    "resume_run",
    "run_agent",
    "run_chunks",
    "run_export",
    "run_report",
    "run_resume",
    "serving",
    "start_authorization",
    "start_export",
    "stop_run",
    "test_connection",
    "update_connection",
]

def get_connection(name: str) -> Connection:
    """Resolve a connection by name: the built-in ``local``, an environment URL, or the store."""
    if name == LOCAL_CONNECTION:
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


def recent_tests(name: str) -> list[TestStatus]:
    """The latest Test Connection results of a stored connection, newest first."""
    from mailconduit.connections import store

    return store.recent_tests(name)


def create_connection(data: Mapping[str, Any]) -> Connection:
    """Store a connection; ``oauth_*`` fields sign it in with OAuth2, ``preset`` fills it."""
    from mailconduit.connections import signin

    return signin.create(data)


def update_connection(name: str, changes: Mapping[str, Any]) -> Connection:
    if name == LOCAL_CONNECTION:
        raise ConfigError.for_fields(
            "connection",
            [FieldError("name", f"the built-in connection {LOCAL_CONNECTION!r} cannot be edited")],
        )
    from mailconduit.connections import signin

    return signin.update(name, changes)


def delete_connection(name: str) -> None:
    if name == LOCAL_CONNECTION:
        raise ConfigError.for_fields(
            "connection",
            [FieldError("name", f"the built-in connection {LOCAL_CONNECTION!r} cannot be deleted")],
        )
    from mailconduit.connections import store

    store.delete_connection(name)


@contextlib.contextmanager
def serving(conn: Connection) -> Iterator[Connection]:
    """Make sure the server behind ``conn`` is up for the block: starts the embedded sink for
    ``local``; a connection that signs in with OAuth2 gets the token provider of this run."""
    if conn.origin == "builtin" and conn.name == LOCAL_CONNECTION:
        from mailconduit.sink import ensure_running, local_connection

        with ensure_running():
            yield local_connection()
    elif conn.signs_in_with_oauth:
        from mailconduit.connections import signin

        yield signin.with_tokens(conn)
    else:
        # No token to fetch: the store (SQLAlchemy) and httpx are not even imported.
        yield conn


def connection_oauth(name: str) -> dict[str, Any] | None:
    """The OAuth2 settings of a stored connection as anyone may see them (secrets only as
    ``has_client_secret``/``has_refresh_token``); None when it has none."""
    from mailconduit.connections import signin

    return signin.oauth_view(name) if get_connection(name).origin == "store" else None


def authorize_connection(name: str, *, show: Callable[[DeviceAuthorization], None]) -> None:
    """Sign a stored connection in with the device-code flow (``show`` prints the URL and
    code); the refresh token is stored encrypted, and cached tokens are dropped."""
    from mailconduit.connections import signin

    _stored_oauth(name)
    event_loop.run(signin.authorize(name, show=show))


def presets() -> list[dict[str, Any]]:
    """Every provider preset: name, title, the connection fields it fills, its OAuth2
    provider, the limits it knows and where they come from."""
    from mailconduit.presets import connection_fields, list_presets

    return [
        {
            "name": p.name,
            "title": p.title,
            "fields": connection_fields(p),
            "oauth_provider": p.oauth_provider,
            "ports": [port for port, _ in p.ports],
            "username_hint": p.username_hint,
            "credential_hint": p.credential_hint,
            "recipients_per_message": p.recipients_per_message,
            "max_message_bytes": p.max_message_bytes,
            "limits_apply": p.limits_apply,
            "source": p.source,
            "note": p.note,
        }
        for p in list_presets()
    ]


def start_authorization(name: str) -> dict[str, Any]:
    """Start a device sign-in in the background (console, REST): the code and address to
    show, then ``state`` pending, done or failed (see :func:`authorization_status`)."""
    from mailconduit.connections import signin

    _stored_oauth(name)
    return signin.start_sign_in(name).view()


def authorization_status(name: str) -> dict[str, Any] | None:
    """The latest device sign-in of ``name`` started by this process (None: none)."""
    from mailconduit.connections import signin

    current = signin.sign_in_status(name)
    return current.view() if current is not None else None


def _stored_oauth(name: str) -> bool:
    """Refuse connections that cannot be signed in: not stored."""
    if get_connection(name).origin != "store":
        raise ConfigError.for_fields(
            "connection", [FieldError("name", f"{name!r} is not a stored connection")]
        )
    return True


def test_connection(
    conn: Connection | str,
    *,
    send_to: str | None = None,
    allow_address: Any = None,
    record: bool = True,
) -> ProbeResult:
    """Run Test Connection stage by stage; the result says success or which stage failed and why."""
    if not isinstance(conn, Connection | str):
        raise TypeError(f"conn must be a Connection or its name (str), not {type(conn).__name__}")
    if send_to is not None and not isinstance(send_to, str):
        raise TypeError(f"send_to must be an address (str) or None, not {type(send_to).__name__}")
    if isinstance(conn, str):
        conn = get_connection(conn)
    with serving(conn) as live:
        result = event_loop.run(_probe(live, send_to=send_to, allow_address=allow_address))
    if record and live.origin == "store":
        from mailconduit.connections import store

        store.record_test(live.name, ok=result.ok, message=result.summary())
    return result


async def _probe(conn: Connection, *, send_to: str | None, allow_address: Any) -> ProbeResult:
    """Test Connection: an OAuth2 connection's token first (its own stage), then the SMTP
    stages; warnings where a setting goes beyond the provider's published limits."""
    from mailconduit.connections import signin
    from mailconduit.oauth import OAuthError, TokenProvider
    from mailconduit.smtp.probe import probe, token_failure

    if isinstance(conn.token_source, TokenProvider):
        try:
            await conn.token_source.token()
        except OAuthError as exc:
            return token_failure(conn, exc.reason, exc.hint)
    result = await probe(conn, send_to=send_to, allow_address=allow_address)
    warnings = tuple(signin.limit_warnings(conn)) if conn.origin == "store" else ()
    return dataclasses.replace(result, warnings=warnings) if warnings else result


# --------------------------------------------------------------------------- exports


def export_spec(data: Mapping[str, Any]) -> ExportSpec:
    """Validate export settings (CLI options, interface file, web form) into an ExportSpec."""
    return validate_export_spec(data)


def load_interface(path: str | Path, *, run_id: str | None = None) -> ExportSpec:
    """Read an interface file (YAML): the same settings as ``mailconduit export``.

    Relative paths in it (source, the body files, attach_dir, dry_run, report) are relative
    to the file's folder, so a scheduler can run it from anywhere.
    """
    from mailconduit.config.document import parse_document, read_document_text

    file = Path(path)
    text = read_document_text(file, what="interface file")
    doc = parse_document(text, what="interface file", label=str(file))
    if isinstance(doc, dict) and "export" in doc:
        doc = doc["export"]
    if not isinstance(doc, dict):
        raise ConfigError.for_fields(
            "interface file", [FieldError("file", f"{file}: expected a mapping of settings")]
        )
    data = dict(doc)
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


class DataFrameLike(Protocol):
    """What an export reads of a pandas DataFrame (pandas itself is not required)."""

    @property
    def columns(self) -> Any: ...

    @property
    def dtypes(self) -> Any: ...

    def itertuples(self, index: bool = ..., name: str | None = ...) -> Iterable[Any]: ...


#: What an export reads: a file path (``-`` for standard input), a SQL query (with
#: ``database_url``), any iterable of mappings, or a pandas DataFrame.
ExportSource: TypeAlias = "str | PathLike[str] | Iterable[Mapping[str, Any]] | DataFrameLike"
#: Names of table formats, for ``table_formats``.
TableFormat: TypeAlias = Literal["html", "csv", "xlsx", "json"]


async def aexport(
    source: ExportSource,
    /,
    *,
    connection: str,
    to: str = "",
    subject: str = "",
    body: str = "",
    body_file: str | PathLike[str] | None = None,
    html_body: str = "",
    html_body_file: str | PathLike[str] | None = None,
    text_body: str = "",
    text_body_file: str | PathLike[str] | None = None,
    cc: str = "",
    bcc: str = "",
    reply_to: str = "",
    from_: str = "",
    attach: Sequence[str] = (),
    attach_dir: str | PathLike[str] | None = None,
    inline: Mapping[str, str] | Sequence[tuple[str, str]] = (),
    headers: Mapping[str, str] | Sequence[tuple[str, str]] = (),
    mode: Literal["row", "table", "group"] = "row",
    by: str = "",
    to_column: str = "",
    table_formats: Sequence[TableFormat] = ("html",),
    table_row_cap: int = 500,
    oversize: Literal["fail", "attach", "split"] = "fail",
    where: str = "",
    order_by: str = "",
    key: str = "",
    kind: str = "",
    encoding: str = "",
    delimiter: str = "",
    sheet: str | int = "",
    database_url: str = "",
    charset: str = "utf-8",
    html: bool | None = None,
    dry_run: str | PathLike[str] | None = None,
    limit: int = 0,
    fail_fast: bool = False,
    run_id: str = "",
    concurrency: int | None = None,
    rate: str | RateLimit | None = None,
    retry: RetryPolicy | None = None,
    max_errors: int = 0,
    resend_uncertain: bool = True,
    journal: bool = True,
    messages_per_connection: int | None = None,
    data_timeout_ms: int | None = None,
    report: str | PathLike[str] | None = None,
    report_format: Literal["csv", "json"] | None = None,
    progress: ProgressCallback | None = None,
    queue: bool = False,
) -> ExportReport:
    """Send e-mails made from ``source`` through ``connection``; returns the report.

    Runs on the caller's event loop and touches no signal handler. Every option is an
    export setting named as in an interface file (``from_`` for ``from``); ``None`` leaves
    it to the connection or the built-in default, ``limit``/``max_errors`` 0 means none. Bad input raises
    before anything is sent. Cancelling the awaiting task stops the run gracefully: rows
    in flight may finish, the journal records the stop, and :func:`aresume` sends the rest.

    ``queue`` concerns a connection of implementation type ``celery`` only: when its agent
    has no live worker, the run is queued on the agent and this call waits for a worker
    to start and send it (the CLI's ``--queue``); without it such an export is refused
    before any row is read. ``max_errors`` on such a connection counts the failed rows of
    the whole run, across its chunks and workers.
    """
    options = dict(locals())  # exactly the parameters: their names are the spec's fields
    del options["source"], options["progress"], options["queue"]
    # None would mean "the default" below, and the default of a library call is no connection
    # at all: never a silent send to the embedded server.
    if not isinstance(connection, str):
        raise TypeError(
            f"connection must be a connection name (str), not {type(connection).__name__}"
        )
    _check_progress(progress)
    spec = _spec_of(source, options)
    return await _run(spec, progress=progress, handle_signals=False, queue=queue)


def _check_progress(progress: object) -> None:
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be callable, not {type(progress).__name__}")


_DEFAULTS = {name: p.default for name, p in inspect.signature(aexport).parameters.items()}


def _spec_of(source: Any, options: Mapping[str, Any]) -> ExportSpec:
    """The ExportSpec of typed API options. An option left at its default is not passed, so
    the spec's own default applies (``None`` here can mean "the connection's")."""
    data: dict[str, Any] = {"source": os.fspath(source) if isinstance(source, PathLike) else source}
    for name, value in options.items():
        default = _DEFAULTS[name]
        if (
            value is None
            or value is default
            or (isinstance(value, str | int | tuple) and value == default)
        ):
            continue
        if isinstance(value, PathLike):
            value = os.fspath(value)
        data[name] = value
    return validate_export_spec(data)


export = event_loop.blocking(
    aexport,
    name="export",
    doc="""Send e-mails made from ``source`` through ``connection``, and wait; returns the report.

    The parameters are :func:`aexport`'s. Inside a running event loop (a notebook cell,
    an async web handler) the export runs on a loop of its own in a worker thread while
    this call waits. Installs no signal handler of its own: Ctrl-C (interrupting the cell,
    or as under ``asyncio.run`` in a script) stops the export gracefully, then is raised.
    """,
)


async def aresume(
    run_id: str,
    /,
    *,
    retry_failed: bool = False,
    resend_uncertain: bool | None = None,
    source: ExportSource | None = None,
    progress: ProgressCallback | None = None,
) -> ExportReport:
    """Resume a run on the caller's loop: rows not yet confirmed are sent, confirmed rows
    never again. ``source`` is needed when the run read Python data (give the same)."""
    if not isinstance(run_id, str):
        raise TypeError(f"run_id must be a run id (str), not {type(run_id).__name__}")
    _check_progress(progress)
    return await _resume(
        run_id,
        retry_failed=retry_failed,
        resend_uncertain=resend_uncertain,
        source=source,
        progress=progress,
        handle_signals=False,
    )


resume = event_loop.blocking(
    aresume,
    name="resume",
    doc="""Resume a run and wait: rows not yet confirmed are sent, confirmed rows never again.

    The parameters are :func:`aresume`'s; works inside a running loop as :func:`export` does.
    """,
)


async def _run(
    spec: ExportSpec,
    *,
    progress: ProgressCallback | None = None,
    handle_signals: bool = False,
    queue: bool = False,
) -> ExportReport:
    from mailconduit.delivery.export import execute

    conn = get_connection(spec.connection)
    if spec.dry_run:
        return await execute(spec, conn, progress=progress)
    if _on_agents(conn):
        from mailconduit import agents

        return await agents.run(
            spec, conn, progress=progress, handle_signals=handle_signals, queue=queue
        )
    with serving(conn) as live:
        return await execute(
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


async def _resume(
    run_id: str,
    *,
    retry_failed: bool,
    resend_uncertain: bool | None,
    source: Any,
    progress: ProgressCallback | None,
    handle_signals: bool,
) -> ExportReport:
    from mailconduit.delivery.export import resume as resume_run_of
    from mailconduit.delivery.export import spec_of_run

    conn = get_connection(spec_of_run(run_id).connection)
    if _on_agents(conn):
        from mailconduit import agents

        return await agents.resume(
            run_id,
            retry_failed=retry_failed,
            resend_uncertain=resend_uncertain,
            progress=progress,
            handle_signals=handle_signals,
        )
    with serving(conn) as live:
        return await resume_run_of(
            run_id,
            live,
            retry_failed=retry_failed,
            resend_uncertain=resend_uncertain,
            source=source,
            progress=progress,
            handle_signals=handle_signals,
            allow_address=_address_policy(),
        )


run_export = event_loop.blocking(
    _run,
    name="run_export",
    doc="""Run (or, with an existing run id, resume) an export and wait for it.

    ``handle_signals``: SIGINT and SIGTERM stop the run gracefully; for the CLI alone.
    ``queue``: a celery run whose agent has no live worker waits for one (else refused).
    """,
)
run_resume = event_loop.blocking(
    _resume,
    name="run_resume",
    doc=""":func:`resume` as :func:`run_export` runs an export: for the CLI, which asks for
    SIGINT and SIGTERM to stop the run gracefully (``handle_signals``) and says every option.""",
)


def preview(spec: ExportSpec, *, limit: int = 3) -> list[Any]:
    """Render the first messages without sending anything (for the web console)."""
    from mailconduit.delivery.export import preview as _preview

    return _preview(spec, get_connection(spec.connection), limit=limit)


def get_run(run_id: str) -> RunInfo:
    from mailconduit.journal import Journal

    with Journal() as journal:
        return journal.get_run(run_id)


def list_runs(*, limit: int = 50) -> list[RunInfo]:
    from mailconduit.journal import Journal

    with Journal() as journal:
        return journal.list_runs(limit=limit)


def first_unsent_rows(run_id: str, *, limit: int = 1) -> list[RowState]:
    """The first ``limit`` rows of a run that failed or were skipped, in processing order."""
    import itertools

    from mailconduit.journal import Journal, RowStatus

    with Journal() as journal:
        found = journal.rows(run_id, states=(RowStatus.FAILED, RowStatus.SKIPPED))
        return list(itertools.islice(found, limit))


def outcomes_by_day(*, days: int = 30, connection: str | None = None) -> list[tuple[str, int, int]]:
    """Sent and failed rows per UTC day for the last ``days`` days, oldest first, as
    (``YYYY-MM-DD``, sent, failed); with ``connection``, only its runs'."""
    import datetime as dt

    from mailconduit.journal import Journal

    today = int(time.time() // 86400)
    first = today - days + 1
    journal = Journal()
    try:
        found = journal.outcomes_by_day(since=first * 86400.0, connection=connection)
    finally:
        journal.close()
    counts = {(day, state): n for day, state, n in found}
    return [
        (
            (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat(),
            counts.get((day, "sent"), 0),
            counts.get((day, "failed"), 0),
        )
        for day in range(first, today + 1)
    ]


def run_report(run_id: str) -> ExportReport:
    from mailconduit.delivery.export import report_from_journal

    return report_from_journal(run_id)


_background: dict[str, threading.Thread] = {}


def start_export(spec: ExportSpec) -> str:
    """Start an export in a background thread of this process; returns its run id at once."""
    from mailconduit.delivery.export import new_run_id

    if not spec.run_id:
        spec = dataclasses.replace(spec, run_id=new_run_id())
    return _start_background(spec.run_id, lambda: run_export(spec))


def resume_run(run_id: str, *, retry_failed: bool = False) -> str:
    """Resume a run in a background thread; returns its run id."""
    get_run(run_id)
    return _start_background(run_id, lambda: resume(run_id, retry_failed=retry_failed))


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

    with Journal() as journal:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not started.is_set():
            if journal.run_exists(run_id):
                return run_id
            time.sleep(0.02)
    if errors:
        raise errors[0]
    return run_id


# -- agents: exports on Celery workers ------------------------------------------------------


def _on_agents(conn: Connection) -> bool:
    """A connection of implementation type ``celery`` sends through its agent's workers."""
    return conn.implementation_type is ImplementationType.CELERY


def detach_export(spec: ExportSpec, *, queue: bool = False) -> str:
    """Check and start a celery export, and return its run id at once (the workers send it;
    follow it with :func:`get_run`). Only a celery connection can run without this process."""
    conn = get_connection(spec.connection)
    if not _on_agents(conn) or spec.dry_run:
        raise ConfigError.for_fields(
            "export",
            [FieldError("detach", f"connection {conn.name!r} sends from this process, which must "
                        "stay until the run ends; only a connection of implementation type celery "
                        "can run detached")],
        )  # fmt: skip
    from mailconduit import agents

    run_id, _total, _notes = agents.start(spec, conn, queue=queue)
    return run_id


def stop_run(run_id: str) -> None:
    """Ask every worker of a celery run to stop gracefully; resume sends the rest."""
    from mailconduit import agents

    get_run(run_id)  # NotFoundError for an unknown run
    if not agents.stop(run_id):
        raise ConfigError.for_fields(
            "runs stop",
            [FieldError("run_id", f"run {run_id!r} runs in the process that started it, not on "
                        "agents; stop it there (Ctrl-C)")],
        )  # fmt: skip


def list_agents() -> list[AgentSummary]:
    """Every agent: its live workers (host, heartbeat age), queued and running chunks."""
    from mailconduit import agents
    from mailconduit.home import database_url

    if not database_url().startswith("postgresql"):
        return []  # agents need a shared journal: with SQLite there are none
    return agents.list_agents()


def run_agent(name: str, *, concurrency: int = 1) -> int:
    """Start a worker of agent ``name`` in this process (until it is stopped)."""
    from mailconduit.agents import AgentSettings
    from mailconduit.agents.app import run_worker

    if concurrency < 1:
        raise ConfigError.for_fields(
            "agent", [FieldError("concurrency", "must be at least 1")]
        )
    return run_worker(name, concurrency=concurrency, settings=AgentSettings.from_env())


def run_chunks(run_id: str) -> list[ChunkProgress]:
    """Progress per chunk (and so per worker) of a celery run; empty for a local run or when
    the journal is not shared."""
    from mailconduit import agents
    from mailconduit.home import database_url

    get_run(run_id)
    if not database_url().startswith("postgresql"):
        return []
    return agents.chunk_progress(run_id)

"""The operator: a query's result, a file or rows from XCom sent as e-mail by mailconduit.

Two Jinja layers meet here and are kept apart by field. Airflow renders the fields that
say where the data comes from and where files go (``sql``, ``parameters``, ``source``,
``where``, ``order_by``, the body file paths, ``attach_dir``, ``report``, ``run_id``,
``subject_prefix``) before the task runs. The fields that make a message (``to``,
``subject``, the bodies, ``cc``...) are mailconduit's row templates: Airflow leaves them
alone, and mailconduit renders them per row over the row's columns.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import fields
from typing import Any, ClassVar

from airflow.sdk import BaseHook, BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

import mailconduit
from mailconduit.airflow.hooks import MailconduitHook
from mailconduit.airflow.mapping import jinja_literal, run_id_for
from mailconduit.config.export import ExportSpec
from mailconduit.errors import ConfigError, FieldError, MailconduitError, NotFoundError, SourceError

__all__ = ["MailconduitExportOperator"]

#: The export options of the CLI and of ``mailconduit.export``, by their Python names.
EXPORT_OPTIONS = frozenset(f.name for f in fields(ExportSpec)) - {"source", "connection"}
#: Export options Airflow renders: paths and SQL text, never a message template.
TEMPLATED_OPTIONS = (
    "where",
    "order_by",
    "body_file",
    "html_body_file",
    "text_body_file",
    "attach_dir",
    "report",
    "run_id",
)
#: Run states after which a retry has something to do: it resumes the run.
_RESUMABLE = frozenset({"interrupted", "paused"})
_FETCH_ROWS = 1000


class MailconduitExportOperator(BaseOperator):  # type: ignore[misc]  # Airflow has no stubs here
    """Send e-mails made from rows, resuming the same mailconduit run when Airflow retries.

    The data (one of):

    - ``sql`` and ``conn_id``: a query run through the Airflow connection's database hook
      (``parameters`` for its placeholders; a ``.sql`` file name is read as a template);
    - ``source``: a file path, or an XComArg (another task's output) resolving to a list
      of mappings or a pandas DataFrame;
    - ``sql`` with a ``database_url`` option: mailconduit's own SQL source.

    The SMTP server (one of): ``connection``, a mailconduit connection name (stored, from
    ``MAILCONDUIT_CONN_<NAME>``, or ``local``), or ``smtp_conn_id``, an Airflow connection
    of type ``smtp`` or ``mailconduit`` (see :class:`MailconduitHook`).

    Every other keyword is an option of ``mailconduit.export`` (``to``, ``subject``,
    ``body_file``, ``mode``, ``rate``...). ``subject_prefix`` is Airflow-rendered text put
    before the subject as is. The run id is derived from the dag, task, Airflow run and
    map index unless ``run_id`` is given: a retried task resumes the run, so a row the
    server confirmed is never sent again. The return value (XCom) is the report's counts;
    rows that did not go are logged (up to ``log_rows``), every row goes to ``report``.
    """

    template_fields: Sequence[str] = ("source", "sql", "parameters", "subject_prefix",
                                      *TEMPLATED_OPTIONS)  # fmt: skip
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers: ClassVar[dict[str, str]] = {"sql": "sql", "parameters": "json"}
    ui_color = "#d8e8f5"

    def __init__(
        self,
        *,
        source: Any = None,
        sql: str | None = None,
        conn_id: str | None = None,
        parameters: Sequence[Any] | Mapping[str, Any] | None = None,
        connection: str | None = None,
        smtp_conn_id: str | None = None,
        subject_prefix: str = "",
        log_rows: int = 100,
        # mailconduit.export's options; None leaves one to mailconduit's default.
        to: str | None = None,
        subject: str | None = None,
        body: str | None = None,
        body_file: str | None = None,
        html_body: str | None = None,
        html_body_file: str | None = None,
        text_body: str | None = None,
        text_body_file: str | None = None,
        cc: str | None = None,
        bcc: str | None = None,
        reply_to: str | None = None,
        from_: str | None = None,
        attach: Sequence[str] | None = None,
        attach_dir: str | None = None,
        inline: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        mode: str | None = None,
        by: str | None = None,
        to_column: str | None = None,
        table_formats: Sequence[str] | None = None,
        table_row_cap: int | None = None,
        oversize: str | None = None,
        where: str | None = None,
        order_by: str | None = None,
        key: str | None = None,
        kind: str | None = None,
        encoding: str | None = None,
        delimiter: str | None = None,
        sheet: str | int | None = None,
        database_url: str | None = None,
        charset: str | None = None,
        html: bool | None = None,
        dry_run: str | None = None,
        limit: int | None = None,
        fail_fast: bool | None = None,
        run_id: str | None = None,
        concurrency: int | None = None,
        rate: Any = None,
        retry: Any = None,
        max_errors: int | None = None,
        resend_uncertain: bool | None = None,
        journal: bool | None = None,
        messages_per_connection: int | None = None,
        data_timeout_ms: int | None = None,
        report: str | None = None,
        report_format: str | None = None,
        **kwargs: Any,
    ) -> None:
        given = {k: v for k, v in locals().items() if k in EXPORT_OPTIONS and v is not None}
        super().__init__(**kwargs)
        wrong = []
        if (source is None) == (sql is None):
            wrong.append(FieldError("source", "give exactly one of source and sql"))
        elif sql is not None and bool(conn_id) == bool(database_url):
            wrong.append(FieldError("sql", "give exactly one of conn_id and database_url with it"))
        if bool(connection) == bool(smtp_conn_id):
            wrong.append(
                FieldError("connection", "give exactly one of connection and smtp_conn_id")
            )
        if wrong:
            raise ConfigError.for_fields(f"{type(self).__name__} {self.task_id!r}", wrong)
        self.source = source
        self.sql = sql
        self.conn_id = conn_id
        self.parameters = parameters
        self.connection = connection
        self.smtp_conn_id = smtp_conn_id
        self.subject_prefix = subject_prefix
        self.log_rows = log_rows
        for name in TEMPLATED_OPTIONS:
            setattr(self, name, given.pop(name, ""))
        self.export_options = given

    def execute(self, context: Any) -> dict[str, Any]:
        ti = context["ti"]
        run_id = self.run_id or run_id_for(ti.dag_id, ti.task_id, ti.run_id, ti.map_index)
        options = dict(self.export_options)
        options.update(
            {name: getattr(self, name) for name in TEMPLATED_OPTIONS if getattr(self, name)}
        )
        options["run_id"] = run_id
        if self.subject_prefix:
            options["subject"] = jinja_literal(self.subject_prefix) + options.get("subject", "")
        if options.get("journal") is False:
            self.log.warning("journal=False: a retry of this task sends every row again")
        if ti.try_number > 1:
            self.log.info(
                "try %s: mailconduit run %s resumes where it stopped", ti.try_number, run_id
            )
        else:
            self.log.info("mailconduit run %s", run_id)
        data = self._data()
        with self._smtp() as name:
            try:
                report = mailconduit.export(data, connection=name, **options)
            except MailconduitError as exc:
                raise _task_error(exc) from None
        self._log_rows(report)
        summary: dict[str, Any] = report.to_dict(with_rows=False)
        summary["report"] = options.get("report") or None
        if report.ok:
            self.log.info("%s", report.summary())
            return summary
        if report.status in _RESUMABLE:
            raise AirflowException(report.summary())
        raise AirflowFailException(report.summary())

    def _data(self) -> Any:
        if self.sql is None:
            return self.source
        if self.conn_id:
            return self._query_rows()
        return self.sql

    def _query_rows(self) -> list[dict[str, Any]]:
        """The query's rows, read through the Airflow connection's database hook."""
        hook = BaseHook.get_hook(self.conn_id)
        db = hook.get_conn()
        try:
            cursor = db.cursor()
            try:
                if self.parameters:
                    cursor.execute(self.sql, self.parameters)
                else:
                    cursor.execute(self.sql)
                if cursor.description is None:
                    raise AirflowFailException(
                        f"sql: the query on {self.conn_id!r} returns no rows (use SELECT, WITH or VALUES)"
                    )
                names = [str(column[0]) for column in cursor.description]
                twice = sorted({name for name in names if names.count(name) > 1})
                if twice:
                    raise AirflowFailException(
                        f"sql: the query's result has more than one column named {', '.join(twice)}"
                    )
                rows: list[dict[str, Any]] = []
                while batch := cursor.fetchmany(_FETCH_ROWS):
                    rows.extend(dict(zip(names, row, strict=True)) for row in batch)
                return rows
            finally:
                cursor.close()
        finally:
            db.close()  # without a commit: nothing the query did is kept

    @contextlib.contextmanager
    def _smtp(self) -> Iterator[str]:
        """The mailconduit connection name to send through, for the length of the block."""
        if self.smtp_conn_id:
            with MailconduitHook(self.smtp_conn_id).provided() as name:
                yield name
        else:
            yield str(self.connection)

    def _log_rows(self, report: Any) -> None:
        """One line per row that did not go, up to ``log_rows``; the report file has all."""
        shown = left = 0
        for row in report.rows():
            if row.state == "sent":
                continue
            if shown >= self.log_rows:
                left += 1
                continue
            shown += 1
            reply = f" {row.code} {row.reply}" if row.code else ""
            where = f" (column {row.column})" if row.column else ""
            self.log.warning("row %s: %s%s%s", row.row_number, row.state, reply, where)
        if left:
            self.log.warning("... and %s more rows not sent; give report= for every row", left)


def _task_error(exc: MailconduitError) -> AirflowException:
    """How Airflow should take a mailconduit error: bad settings and data fail the task for
    good; a run another process is still sending, or a failure on the way, is retried."""
    if isinstance(exc, NotFoundError) or (
        isinstance(exc, ConfigError) and not any(e.field == "run_id" for e in exc.errors)
    ):
        return AirflowFailException(str(exc))
    if isinstance(exc, SourceError):
        return AirflowFailException(str(exc))
    return AirflowException(str(exc))

"""Export pages: a new export from an uploaded file or a saved interface file, its preview,
live progress, per-row results, report downloads, past runs, resume and retry."""

from __future__ import annotations

import itertools
from typing import Annotated, Any

from fastapi import Path, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData, UploadFile

from mailconduit import api
from mailconduit.errors import ConfigError, FieldError, MailconduitError, NotFoundError
from mailconduit.home import LOCAL_CONNECTION
from mailconduit.interfaces import service
from mailconduit.web.console import Console, StateDep
from mailconduit.web.dashboards import run_charts
from mailconduit.web.exports import (
    EXPORT_FORM_FIELDS,
    FORM_SETTINGS,
    export_settings,
    preview_dicts,
    spec_from_web,
)
from mailconduit.web.uploads import (
    attachment_files,
    list_interfaces,
    list_uploads,
    public_text,
    resolve_upload,
    save_attachment,
    save_upload,
)
from mailconduit.web.views import (
    NOTICES,
    FieldErrors,
    FormDep,
    format_time,
    new_router,
    redirect,
)

__all__ = ["router"]

router = new_router()
RunId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,79}$")]
#: Rows of per-row results shown on the run page; the downloads hold all of them.
ROWS_SHOWN = 500
FINAL_STATUSES = frozenset({"finished", "failed", "aborted", "paused", "interrupted", "dry-run"})

_FIELD_NAMES = set(FORM_SETTINGS) | {"file", "files", "source"}


def _attached(values: dict[str, Any]) -> list[str]:
    """The files in the attachment folder of the form's upload (none without an upload)."""
    try:
        return (
            attachment_files(resolve_upload(str(values["upload"]))) if values.get("upload") else []
        )
    except (ConfigError, NotFoundError):
        return []


def _save_files(state: Console, form: FormData, values: dict[str, Any]) -> None:
    """Store the form's attachment and image files in its upload's attachment folder."""
    files = [f for f in form.getlist("files") if isinstance(f, UploadFile) and f.filename]
    if not files:
        return
    if not values.get("upload"):
        raise ConfigError.for_fields(
            "export", [FieldError("files", "files to attach go with an uploaded data file")]
        )
    upload = resolve_upload(str(values["upload"]))
    for file in files:
        save_attachment(
            upload, file.filename or "", file.file, max_bytes=state.settings.max_upload_bytes
        )


def _form_page(
    request: Request,
    state: Console,
    *,
    values: dict[str, Any],
    errors: FieldErrors | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return state.render(
        request,
        "export_form.html",
        status_code=status_code,
        values=values,
        errors=errors or FieldErrors(),
        fields=EXPORT_FORM_FIELDS,
        connections=[c.name for c, _ in api.list_connections()],
        uploads=list_uploads(),
        attached=_attached(values),
        interfaces=list_interfaces(),
        max_upload_mb=state.settings.max_upload_bytes / (1024 * 1024),
        notice="",
    )


@router.get("/exports", response_class=HTMLResponse)
def exports(request: Request, state: StateDep) -> Response:
    """Past runs, newest first, and the way to a new export."""
    runs = [{"run": r, "created": format_time(r.created_at)} for r in api.list_runs(limit=100)]
    notice = NOTICES.of(request)
    return state.render(request, "exports.html", runs=runs, notice=notice)


@router.get("/exports/new", response_class=HTMLResponse)
def new_export(request: Request, state: StateDep) -> Response:
    """The export form: source, connection and message templates."""
    return _form_page(request, state, values={"connection": LOCAL_CONNECTION, "mode": "row"})


@router.post("/exports/new", response_class=HTMLResponse)
def preview_export(request: Request, state: StateDep, form: FormDep) -> Response:
    """Store the uploaded file, validate the settings and show the first rendered messages."""
    values = export_settings(form)
    file = form.get("file")
    try:
        if isinstance(file, UploadFile) and file.filename:
            saved = save_upload(file.filename, file.file, max_bytes=state.settings.max_upload_bytes)
            values["upload"] = saved.ref
            values.pop("interface", None)
        _save_files(state, form, values)
        spec = spec_from_web(values)
        previews = preview_dicts(api.preview(spec, limit=3))
    except NotFoundError:
        raise  # the 404 page, not the form
    except ConfigError as exc:
        errors = FieldErrors.from_error(exc, _FIELD_NAMES)
        return _form_page(request, state, values=values, errors=errors, status_code=422)
    except MailconduitError as exc:
        errors = FieldErrors(general=[public_text(" ".join(str(exc).split()))])
        return _form_page(request, state, values=values, errors=errors, status_code=422)
    return state.render(
        request,
        "export_preview.html",
        previews=previews,
        values=values,
        spec=spec,
        attached=_attached(values),
        notice="",
    )


@router.post("/exports/start")
def start_export(request: Request, state: StateDep, form: FormDep) -> Response:
    """Start sending in the background and go to the run's progress page."""
    values = export_settings(form)
    try:
        run_id = api.start_export(spec_from_web(values))
    except ConfigError as exc:
        errors = FieldErrors.from_error(exc, _FIELD_NAMES)
        return _form_page(request, state, values=values, errors=errors, status_code=422)
    return redirect(f"/runs/{run_id}", notice="started")


def _run_context(run_id: str) -> dict[str, Any]:
    info = api.get_run(run_id)
    elapsed = ((info.finished_at or info.updated_at) - info.created_at) if info.created_at else 0.0
    sent = info.counts.get("sent", 0)
    total = info.total or 0
    return {
        "run": info,
        "final": info.status in FINAL_STATUSES,
        "sent": sent,
        "failed": info.counts.get("failed", 0),
        "skipped": info.counts.get("skipped", 0),
        "uncertain": info.counts.get("uncertain", 0),
        "pending": max(0, total - info.done) if total else info.counts.get("pending", 0),
        "total": total,
        "done": info.done,
        "rate": (sent / elapsed) if elapsed > 0 else 0.0,
        "created": format_time(info.created_at),
        "finished": format_time(info.finished_at),
        "chunks": api.run_chunks(run_id),
    }


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, state: StateDep, run_id: RunId) -> Response:
    """Live progress while the run goes; per-row results once it ended."""
    context = _run_context(run_id)
    rows: list[Any] = []
    charts: dict[str, Any] = {}
    if context["final"]:
        report = api.run_report(run_id)
        rows = list(itertools.islice(report.rows(), ROWS_SHOWN + 1))
        charts = run_charts(context["run"], report.rows())
    notice = NOTICES.of(request)
    return state.render(
        request,
        "run.html",
        rows=rows[:ROWS_SHOWN],
        more_rows=len(rows) > ROWS_SHOWN,
        charts=charts,
        notice=notice,
        notifications=service.notifications_of(run_id),
        **context,
    )


@router.get("/runs/{run_id}/status", response_class=HTMLResponse)
def run_status(request: Request, state: StateDep, run_id: RunId) -> Response:
    """The progress fragment the run page polls every second."""
    return state.render(request, "run_status.html", notice="", **_run_context(run_id))


@router.get("/runs/{run_id}/report.{fmt}")
def run_report(run_id: RunId, fmt: str) -> Response:
    """Download every row's result as CSV or JSON."""
    if fmt not in ("csv", "json"):
        raise NotFoundError("report format", fmt)
    report = api.run_report(run_id)
    body, media = (
        (report.to_csv(), "text/csv") if fmt == "csv" else (report.to_json(), "application/json")
    )
    return Response(
        body,
        media_type=f"{media}; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="report-{run_id}.{fmt}"'},
    )


@router.post("/runs/{run_id}/resume")
def resume(run_id: RunId, form: FormDep) -> Response:
    """Resume a run; with ``retry_failed`` the failed rows are sent again too."""
    new_id = api.resume_run(run_id, retry_failed=form.get("retry_failed") == "1")
    return redirect(f"/runs/{new_id}", notice="resumed")


@router.post("/runs/{run_id}/stop")
def stop(run_id: RunId, form: FormDep) -> Response:
    """Ask every worker of a celery run to stop after the messages in flight."""
    del form  # read for its CSRF token
    api.stop_run(run_id)
    return redirect(f"/runs/{run_id}", notice="stopping")


@router.get("/agents", response_class=HTMLResponse)
def agents_page(request: Request, state: StateDep) -> Response:
    """The agents: live workers (host, heartbeat age), queued and running chunks."""
    return state.render(request, "agents.html", agents=api.list_agents(), notice="")

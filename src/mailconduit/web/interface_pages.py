"""Interface pages: the list (with database connections and YAML import), the form (create,
edit, "Save as interface" from an export's preview), an interface's page with its problems,
run history and buttons (run now, duplicate, export, delete)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData, UploadFile

from mailconduit import api
from mailconduit.errors import ConfigError, FieldError, MailconduitError, NotFoundError
from mailconduit.interfaces import files, runner, schedule, service, store
from mailconduit.interfaces.model import DATA_DIRS_ENV, Interface
from mailconduit.web.console import Console, StateDep
from mailconduit.web.exports import EXPORT_FORM_FIELDS, export_settings, preview_dicts
from mailconduit.web.interface_docs import (
    UPLOAD_FILES,
    stored_document,
    web_document,
    yaml_download,
)
from mailconduit.web.uploads import public_text, save_upload
from mailconduit.web.views import (
    DeleteQuestion,
    FieldErrors,
    FormDep,
    Notices,
    StoredName,
    format_time,
    new_router,
    redirect,
)

__all__ = ["router"]

router = new_router()
_DELETE = DeleteQuestion(
    "interface",
    "Interfaces",
    "/interfaces",
    "Its settings and schedule are removed; the runs it made stay under Exports.",
)

NOTICES = Notices({
    "created": "Interface saved. Run it now, or wait for its schedule.",
    "saved": "Changes saved.",
    "deleted": "Interface deleted; its runs stay under Exports.",
    "imported": "Interface imported.",
    "duplicated": "Copy saved (without a schedule).",
    "database": "Database connection saved.",
    "database_deleted": "Database connection deleted.",
})
#: Text settings of the export shown on the interface form (a run id is chosen per run).
FORM_FIELDS = tuple(f for f in EXPORT_FORM_FIELDS if f[0] != "run_id")
#: Form fields of the interface's own settings, beside the export's.
_OWN = ("name", "description", "source_type", "data_path", "database", "query", "files_dir",
        "schedule_type", "every_minutes", "cron", "timezone", "catch_up", "notify_emails",
        "notify_connection", "notify_webhook", "notify_when", "upload", "files")  # fmt: skip
#: Where an error of a document field is shown on the form.
_FORM_FIELD_OF = {
    "export.source": "source", "export.upload": "source", "export.attach_dir": "files_dir",
    "export.files": "files_dir", "schedule": "schedule", "schedule.cron": "cron",
    "schedule.timezone": "timezone", "schedule.every_minutes": "every_minutes",
    "notify.emails": "notify_emails", "notify.webhook": "notify_webhook",
    "notify.when": "notify_when", "notify.connection": "notify_connection", "upload": "source",
    "file": "source", "source": "source", "attach_dir": "files_dir", "database_url": "database",
}  # fmt: skip


def _errors(exc: ConfigError) -> FieldErrors:
    """A ConfigError as messages per form field (document fields mapped to the form's)."""
    by_field: dict[str, list[str]] = {}
    general: list[str] = []
    known = {name for name, _, _ in FORM_FIELDS} | set(_OWN) | {
        "connection", "mode", "body", "html", "html_body", "text_body", "attach", "inline",
        "source", "files_zip",
    }  # fmt: skip
    for e in exc.errors:
        name = _FORM_FIELD_OF.get(e.field, e.field.removeprefix("export."))
        if name in known:
            by_field.setdefault(name, []).append(public_text(e.message))
        else:
            general.append(public_text(str(e)))
    if not exc.errors:
        general.append(public_text(exc.message))
    return FieldErrors(by_field, general)


def _values_of(interface: Interface) -> dict[str, Any]:
    """The form's values for an existing interface."""
    doc = web_document(interface)
    export = dict(doc["export"])
    values: dict[str, Any] = {
        k: v for k, v in export.items() if isinstance(v, str | int | float) and k != "source"
    }
    values.update(name=interface.name, description=interface.description)
    if isinstance(export.get("html"), bool):
        values["html"] = "true" if export["html"] else "false"
    values["fail_fast"] = bool(export.get("fail_fast"))
    values["attach"] = "\n".join(map(str, export.get("attach") or []))
    inline = export.get("inline") or []
    pairs = inline.items() if isinstance(inline, dict) else inline
    values["inline"] = "\n".join(f"{a}={b}" for a, b in pairs)
    if interface.is_query:
        values.update(source_type="query", query=export.get("source", ""), database=interface.database)
    elif "upload" in export:
        values.update(source_type="upload")
    else:
        values.update(source_type="path", data_path=export.get("source", ""))
    values["files_dir"] = export.get("attach_dir", "")
    sched = interface.schedule
    values.update(
        schedule_type="cron" if sched.cron else "every" if sched.every_minutes else "none",
        cron=sched.cron,
        timezone=sched.timezone,
        every_minutes=sched.every_minutes or "",
        catch_up=sched.catch_up,
    )
    note = interface.notify
    values.update(
        notify_emails=", ".join(note.emails),
        notify_connection=note.connection,
        notify_webhook=note.webhook,
        notify_when=note.when,
    )
    return values


def _form_values(form: FormData) -> dict[str, Any]:
    """What the form carried, to show it again after an error."""
    values = export_settings(form)
    for name in _OWN:
        value = form.get(name)
        if isinstance(value, str):
            values[name] = value
    values["catch_up"] = form.get("catch_up") not in (None, "", "off")
    return values


def _document(state: Console, form: FormData, current: Interface | None) -> dict[str, Any]:
    """The stored document the form describes; uploaded files are stored on the way."""
    values = _form_values(form)
    export = {k: v for k, v in export_settings(form).items() if k not in ("upload", "interface", "run_id")}
    if isinstance(export.get("attach"), str):
        export["attach"] = [line.strip() for line in export["attach"].splitlines() if line.strip()]
    if isinstance(export.get("inline"), str):
        export["inline"] = [line.strip() for line in export["inline"].splitlines() if line.strip()]
    if "html" in export:
        export["html"] = export["html"] == "true"
    kept = web_document(current)["export"] if current is not None else {}
    source_type = values.get("source_type", "upload")
    database = ""
    if source_type == "query":
        export.update(kind="sql", source=values.get("query", ""))
        database = values.get("database", "")
    elif source_type == "path":
        export["source"] = values.get("data_path", "").strip()
    else:
        file = form.get("file")
        if isinstance(file, UploadFile) and file.filename:
            saved = save_upload(file.filename, file.file, max_bytes=state.settings.max_upload_bytes)
            export["upload"] = saved.ref
        elif values.get("upload"):
            export["upload"] = values["upload"]
        elif "upload" in kept:
            export["upload"] = kept["upload"]
    archive = form.get("files_zip")
    if isinstance(archive, UploadFile) and archive.filename:
        export["files"] = files.unpack_archive(archive.file, max_bytes=state.settings.max_upload_bytes)
    elif values.get("files_dir", "").strip():
        export["attach_dir"] = values["files_dir"].strip()
    elif values.get("files"):
        export["files"] = values["files"]
    elif "upload" in export and (export.get("attach") or export.get("inline")) and not current:
        export["files"] = UPLOAD_FILES  # saved from an export: the files uploaded with its data
    elif "files" in kept:
        export["files"] = kept["files"]
    doc: dict[str, Any] = {
        "name": values.get("name", "").strip(),
        "description": values.get("description", "").strip(),
        "export": export,
    }
    if database:
        doc["database"] = database
    kind = values.get("schedule_type", "none")
    if kind == "every":
        doc["schedule"] = {"every_minutes": values.get("every_minutes", "").strip() or 0, "catch_up": values["catch_up"]}
    elif kind == "cron":
        doc["schedule"] = {
            "cron": values.get("cron", "").strip(),
            "timezone": values.get("timezone", "").strip() or "UTC",
            "catch_up": values["catch_up"],
        }
    emails = [e.strip() for e in values.get("notify_emails", "").replace(";", ",").split(",") if e.strip()]
    webhook = values.get("notify_webhook", "").strip()
    if emails or webhook:
        doc["notify"] = {"emails": emails, "connection": values.get("notify_connection") or "local",
                         "webhook": webhook, "when": values.get("notify_when") or "failure"}  # fmt: skip
    return stored_document(doc)


def _form_page(
    request: Request,
    state: Console,
    *,
    values: dict[str, Any],
    current: Interface | None = None,
    errors: FieldErrors | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    kept = web_document(current)["export"] if current is not None else {}
    return state.render(
        request,
        "interface_form.html",
        status_code=status_code,
        values=values,
        current=current,
        kept_upload=public_text(str(kept.get("upload", values.get("upload", "")))),
        kept_files=bool(kept.get("files") or values.get("files")),
        errors=errors or FieldErrors(),
        fields=FORM_FIELDS,
        connections=[c.name for c, _ in api.list_connections()],
        databases=store.list_databases(),
        data_dirs_env=DATA_DIRS_ENV,
        max_upload_mb=state.settings.max_upload_bytes / (1024 * 1024),
        notice="",
    )


def _save(
    request: Request, state: Console, form: FormData, current: Interface | None
) -> Response:
    try:
        doc = _document(state, form, current)
        saved = service.save_interface(doc, existing=current.name if current else None)
    except NotFoundError as exc:
        if exc.kind == "interface":
            raise
        errors = FieldErrors(general=[public_text(exc.message)])
        return _form_page(
            request, state, values=_form_values(form), current=current, errors=errors, status_code=422
        )
    except ConfigError as exc:
        values = _form_values(form)
        return _form_page(
            request, state, values=values, current=current, errors=_errors(exc), status_code=422
        )
    except MailconduitError as exc:
        errors = FieldErrors(general=[public_text(" ".join(str(exc).split()))])
        return _form_page(
            request, state, values=_form_values(form), current=current, errors=errors, status_code=422
        )
    return redirect(f"/interfaces/{saved.name}", notice="saved" if current else "created")


@router.get("/interfaces", response_class=HTMLResponse)
def interfaces(request: Request, state: StateDep) -> Response:
    """Every interface with its schedule, next and last run; database connections; import."""
    nexts = {n.interface: n.at for n in schedule.next_runs(limit=10_000)}
    items = [
        {
            "interface": i,
            "next": format_time(nexts.get(i.name)),
            "last": next(iter(service.history(i.name, limit=1)), None),
            "source": "SQL query" if i.is_query else "file",
        }
        for i in store.list_interfaces()
    ]
    return state.render(
        request,
        "interfaces.html",
        items=items,
        databases=store.list_databases(),
        scheduler=schedule.scheduler_status().describe(),
        notice=NOTICES.of(request),
    )


@router.get("/interfaces/new", response_class=HTMLResponse)
def new_interface(request: Request, state: StateDep) -> Response:
    """An empty interface form."""
    values = {"connection": "local", "mode": "row", "source_type": "upload", "catch_up": True,
              "timezone": "UTC", "notify_when": "failure", "schedule_type": "none"}  # fmt: skip
    return _form_page(request, state, values=values)


@router.post("/interfaces/new", response_class=HTMLResponse)
def create_interface(request: Request, state: StateDep, form: FormDep) -> Response:
    """Save a new interface (or, from an export's preview, show the form filled in)."""
    if form.get("from_export"):
        values = _form_values(form)
        values.update(source_type="upload", schedule_type="none", catch_up=True,
                      timezone="UTC", notify_when="failure")  # fmt: skip
        return _form_page(request, state, values=values)
    return _save(request, state, form, None)


@router.post("/interfaces/import")
def import_interface(request: Request, state: StateDep, form: FormDep) -> Response:
    """Save an interface from an uploaded YAML document."""
    file = form.get("yaml_file")
    if not isinstance(file, UploadFile) or not file.filename:
        raise ConfigError.for_fields(
            "interface", [FieldError("yaml_file", "choose a YAML file to import")]
        )
    text = file.file.read(state.settings.max_upload_bytes).decode("utf-8", "replace")
    saved = service.save_interface(stored_document(service.interface_from_yaml(text)))
    return redirect(f"/interfaces/{saved.name}", notice="imported")


@router.get("/interfaces/{name}", response_class=HTMLResponse)
def interface_page(request: Request, state: StateDep, name: StoredName) -> Response:
    """An interface: what it does, whether it would run now, its runs."""
    interface = store.get_interface(name)
    nexts = {n.interface: n.at for n in schedule.next_runs(limit=10_000)}
    return state.render(
        request,
        "interface_detail.html",
        interface=interface,
        document=service.interface_to_yaml(web_document(interface)),
        problem=public_text(runner.problem(interface)),
        next_run=format_time(nexts.get(name)),
        history=[
            (h, format_time(h.started_at), public_text(h.error or (h.run.message if h.run else "")))
            for h in service.history(name, limit=100)
        ],
        notice=NOTICES.of(request),
    )


@router.get("/interfaces/{name}/edit", response_class=HTMLResponse)
def edit_interface(request: Request, state: StateDep, name: StoredName) -> Response:
    interface = store.get_interface(name)
    return _form_page(request, state, values=_values_of(interface), current=interface)


@router.post("/interfaces/{name}/edit", response_class=HTMLResponse)
def save_interface(request: Request, state: StateDep, form: FormDep, name: StoredName) -> Response:
    return _save(request, state, form, store.get_interface(name))


@router.post("/interfaces/{name}/preview", response_class=HTMLResponse)
def preview_interface(request: Request, state: StateDep, name: StoredName) -> Response:
    """The first messages the interface would send now."""
    interface = store.get_interface(name)
    previews = preview_dicts(runner.preview(interface))
    return state.render(
        request, "interface_preview.html", interface=interface, previews=previews, notice=""
    )


@router.post("/interfaces/{name}/run")
def run_now(name: StoredName) -> Response:
    """Start a run in the background and go to its page."""
    run_id = runner.start_interface(name)
    return redirect(f"/runs/{run_id}", notice="started")


@router.post("/interfaces/{name}/duplicate")
def duplicate(name: StoredName, form: FormDep) -> Response:
    copy = service.duplicate_interface(name, str(form.get("new_name") or "").strip())
    return redirect(f"/interfaces/{copy.name}", notice="duplicated")


@router.get("/interfaces/{name}/export.yaml")
def export_yaml(name: StoredName) -> Response:
    """The interface as a YAML file (uploaded files named by reference)."""
    return yaml_download(name)


@router.get("/interfaces/{name}/delete", response_class=HTMLResponse)
def confirm_delete(request: Request, state: StateDep, name: StoredName) -> Response:
    interface = store.get_interface(name)
    return state.render(request, "confirm_delete.html", ask=_DELETE, name=interface.name, notice="")


@router.post("/interfaces/{name}/delete")
def delete(name: StoredName) -> Response:
    service.delete_interface(name)
    return redirect("/interfaces", notice="deleted")


@router.post("/databases")
def save_database(form: FormDep) -> Response:
    """Store a database connection (its URL encrypted) for interfaces' queries."""
    store.save_database(str(form.get("db_name") or "").strip(), str(form.get("db_url") or "").strip())
    return redirect("/interfaces", notice="database")


@router.post("/databases/{name}/delete")
def delete_database(name: StoredName) -> Response:
    store.delete_database(name)
    return redirect("/interfaces", notice="database_deleted")

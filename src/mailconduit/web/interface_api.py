"""The REST API of interfaces and database connections, under /api.

An interface travels as its document (the YAML schema of ``mailconduit interfaces export``),
with an uploaded data file as ``export.upload`` and an attachment archive as ``export.files``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, File, Path, Query, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from mailconduit import api
from mailconduit.config import NAME_RE
from mailconduit.interfaces import files, runner, schedule, service, store
from mailconduit.interfaces.model import Interface
from mailconduit.interfaces.service import history
from mailconduit.web.console import StateDep
from mailconduit.web.exports import preview_dicts
from mailconduit.web.interface_docs import stored_document, web_document, yaml_download
from mailconduit.web.responses import CONFLICT, ERRORS, NOT_FOUND, RunOut, run_out
from mailconduit.web.security import CsrfRoute
from mailconduit.web.uploads import public_text

__all__ = ["router"]

router = APIRouter(prefix="/api", route_class=CsrfRoute, responses=ERRORS, tags=["interfaces"])
InterfaceName = Annotated[
    str, Path(pattern=NAME_RE.pattern, max_length=64, description="The interface's name.")
]
DatabaseName = Annotated[
    str, Path(pattern=NAME_RE.pattern, max_length=64, description="The database connection's name.")
]


def _document_schema(schema: dict[str, Any]) -> None:
    schema["properties"] = {
        "name": {"type": "string", "pattern": NAME_RE.pattern, "maxLength": 64},
        "description": {"type": "string", "maxLength": 2000},
        "export": {
            "type": "object",
            "description": "The export's settings as in an interface file; the data is "
            "'upload' (from POST /api/uploads), 'source' (a file under MAILCONDUIT_DATA_DIRS, "
            "or a SQL query with kind: sql), and 'files' (from POST /api/interface-files) or "
            "'attach_dir' holds attachments.",
        },
        "database": {"type": "string", "description": "Stored database connection of a query."},
        "schedule": {
            "type": "object",
            "description": "{cron, timezone} or {every_minutes}; catch_up: run a missed "
            "run once when the scheduler is back.",
        },
        "notify": {
            "type": "object",
            "description": "{emails, connection, webhook, when: failure|always}.",
        },
    }
    schema["required"] = ["name", "export"]


class InterfaceIn(BaseModel):
    """An interface document."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_document_schema)


class InterfaceOut(BaseModel):
    name: str
    description: str
    document: dict[str, Any]
    schedule: str = Field(description="The schedule in words.")
    next_run: str | None = Field(description="When it runs next by itself (UTC, ISO 8601).")
    problem: str | None = Field(
        default=None, description="Why it would not run now (only when one interface is asked)."
    )
    created_at: float
    updated_at: float


class InterfaceRunOut(RunOut):
    trigger: str = Field(description="manual or schedule.")


class DuplicateIn(BaseModel):
    name: str = Field(pattern=NAME_RE.pattern, max_length=64, description="The copy's name.")


class YamlIn(BaseModel):
    yaml: str = Field(max_length=1_000_000, description="An interface document as YAML.")


class FilesOut(BaseModel):
    files: str = Field(description="Give it as export.files of an interface.")
    names: list[str]


class DatabaseIn(BaseModel):
    name: str = Field(pattern=NAME_RE.pattern, max_length=64)
    url: str = Field(
        max_length=4096,
        json_schema_extra={"writeOnly": True},
        description="SQLAlchemy URL, e.g. postgresql://user:password@host/db (kept encrypted).",
    )


class DatabaseOut(BaseModel):
    name: str
    url: str = Field(description="The URL without its password.")


def _next_runs() -> dict[str, datetime]:
    return {n.interface: n.at for n in schedule.next_runs(limit=10_000)}


def _out(
    interface: Interface, *, with_problem: bool = False, nexts: dict[str, datetime] | None = None
) -> InterfaceOut:
    at = (_next_runs() if nexts is None else nexts).get(interface.name)
    return InterfaceOut(
        name=interface.name,
        description=interface.description,
        document=web_document(interface),
        schedule=interface.schedule.describe(),
        next_run=at.isoformat() if at else None,
        problem=public_text(runner.problem(interface)) if with_problem else None,
        created_at=interface.created_at,
        updated_at=interface.updated_at,
    )


@router.get("/interfaces", summary="List interfaces")
def list_interfaces() -> list[InterfaceOut]:
    nexts = _next_runs()
    return [_out(i, nexts=nexts) for i in store.list_interfaces()]


@router.post("/interfaces", status_code=201, summary="Create an interface", responses=CONFLICT)
def create_interface(body: InterfaceIn) -> InterfaceOut:
    """Checked as a one-off export is (connection, templates, source) before it is kept."""
    return _out(service.save_interface(stored_document(body.model_dump())))


@router.get("/interfaces/{name}", summary="Show an interface", responses=NOT_FOUND)
def get_interface(name: InterfaceName) -> InterfaceOut:
    """With ``problem`` set when it would not run now (a file or column gone...)."""
    return _out(store.get_interface(name), with_problem=True)


@router.put("/interfaces/{name}", summary="Replace an interface", responses=NOT_FOUND)
def update_interface(name: InterfaceName, body: InterfaceIn) -> InterfaceOut:
    return _out(service.save_interface(stored_document(body.model_dump()), existing=name))


@router.delete(
    "/interfaces/{name}", status_code=204, summary="Delete an interface", responses=NOT_FOUND
)
def delete_interface(name: InterfaceName) -> Response:
    service.delete_interface(name)
    return Response(status_code=204)


@router.post(
    "/interfaces/{name}/duplicate",
    status_code=201,
    summary="Duplicate an interface",
    responses=NOT_FOUND,
)
def duplicate_interface(name: InterfaceName, body: DuplicateIn) -> InterfaceOut:
    """The copy has no schedule until one is given."""
    return _out(service.duplicate_interface(name, body.name))


@router.post(
    "/interfaces/{name}/run",
    status_code=202,
    summary="Run an interface now",
    responses={**NOT_FOUND, **CONFLICT},
)
def run_interface(name: InterfaceName) -> RunOut:
    """Start a run in the background (409 while the interface is running already)."""
    return run_out(api.get_run(runner.start_interface(name)))


@router.post(
    "/interfaces/{name}/preview", summary="Preview an interface (nothing is sent)", responses=NOT_FOUND
)
def preview_interface(name: InterfaceName) -> list[dict[str, Any]]:
    return preview_dicts(runner.preview(store.get_interface(name)))


@router.get("/interfaces/{name}/runs", summary="An interface's runs", responses=NOT_FOUND)
def interface_runs(
    name: InterfaceName, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[InterfaceRunOut]:
    store.get_interface(name)
    return [
        InterfaceRunOut(**run_out(h.run).model_dump(), trigger=h.trigger)
        for h in history(name, limit=limit)
        if h.run is not None
    ]


@router.get(
    "/interfaces/{name}/yaml",
    summary="Export an interface as YAML",
    responses={**NOT_FOUND, 200: {"content": {"application/yaml": {}}, "description": "YAML."}},
)
def export_interface(name: InterfaceName) -> Response:
    return yaml_download(name)


@router.post(
    "/interfaces/import", status_code=201, summary="Import an interface from YAML", responses=CONFLICT
)
def import_interface(body: YamlIn) -> InterfaceOut:
    doc = service.interface_from_yaml(body.yaml)
    return _out(service.save_interface(stored_document(doc)))


@router.post("/interface-files", status_code=201, summary="Upload an interface's attachments (zip)")
def upload_files(
    state: StateDep, file: Annotated[UploadFile, File(description="A zip of files to attach.")]
) -> FilesOut:
    """Unpack a zip of attachments and inline images; name it as export.files."""
    folder_id = files.unpack_archive(file.file, max_bytes=state.settings.max_upload_bytes)
    names = sorted(p.name for p in files.files_folder(folder_id).iterdir())
    return FilesOut(files=folder_id, names=names)


@router.get("/databases", summary="List database connections")
def list_databases() -> list[DatabaseOut]:
    return [DatabaseOut(name=d.name, url=d.url) for d in store.list_databases()]


@router.put("/databases", summary="Store a database connection")
def save_database(body: DatabaseIn) -> DatabaseOut:
    """Create or replace; the URL (with its password) is kept encrypted and never returned."""
    saved = store.save_database(body.name, body.url)
    return DatabaseOut(name=saved.name, url=saved.url)


@router.delete(
    "/databases/{name}",
    status_code=204,
    summary="Delete a database connection",
    responses={**NOT_FOUND, **CONFLICT},
)
def delete_database(name: DatabaseName) -> Response:
    store.delete_database(name)
    return Response(status_code=204)

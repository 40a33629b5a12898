"""The REST API under /api: connections (CRUD, test), uploads, exports, runs, the local inbox.

Input goes to the same validators as the CLI, so a wrong field gets the same sentence, as
422 ``{"detail": [{"loc": ["body", field], "msg": ...}]}``. Passwords are write-only.
"""

from __future__ import annotations

import enum
import typing
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Body, File, Path, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from mailconduit import api, sink
from mailconduit.config import NAME_RE, Connection, text_limit
from mailconduit.errors import NotFoundError
from mailconduit.web.cafile import check_ca_file
from mailconduit.web.console import StateDep
from mailconduit.web.exports import (
    SERVER_ONLY_FIELDS,
    WEB_EXPORT_FIELDS,
    preview_dicts,
    spec_from_web,
)
from mailconduit.web.forms import FIELDS
from mailconduit.web.oauth_form import OAUTH_FIELDS
from mailconduit.web.oauth_form import SECRET_FIELDS as OAUTH_SECRETS
from mailconduit.web.responses import (
    CONFLICT,
    ERRORS,
    NOT_FOUND,
    RunOut,
    attachment_response,
    html_part_response,
    run_out,
)
from mailconduit.web.security import CsrfRoute
from mailconduit.web.uploads import (
    attachment_files,
    resolve_upload_id,
    save_attachment,
    save_upload,
)
from mailconduit.web.views import SEND_TO_LIMIT

if TYPE_CHECKING:
    from mailconduit.connections.store import TestStatus

__all__ = ["ConnectionOut", "MessageOut", "RunOut", "router"]

router = APIRouter(prefix="/api", route_class=CsrfRoute, responses=ERRORS)
ConnectionName = Annotated[
    str, Path(pattern=NAME_RE.pattern, max_length=64, description="The connection's name.")
]
RunId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,79}$", description="A run id.")]
MessageId = Annotated[int, Path(ge=1, le=2**62, description="Id of a captured message.")]


# --------------------------------------------------------------------------- schemas


def _field_schemas() -> dict[str, Any]:
    """JSON schema of each form field; the choices of an enum field come from its dataclass type."""
    hints = typing.get_type_hints(Connection)
    enums = {
        name: [m.value for m in kind]
        for name, kind in hints.items()
        if isinstance(kind, type) and issubclass(kind, enum.Enum)
    }
    props: dict[str, Any] = {}
    for f in FIELDS:
        schema: dict[str, Any] = {"type": f.json_type, "title": f.label, "description": f.help}
        if f.name in enums:
            schema["enum"] = enums[f.name]
        if f.name == "port":
            schema.update(minimum=1, maximum=65535)
        if f.name == "name":
            schema.update(pattern=NAME_RE.pattern, maxLength=64)
        if f.name == "password":
            schema["writeOnly"] = True
        if f.json_type == "string":
            schema["maxLength"] = text_limit("connection", f.name)
        props[f.name] = schema
    props.update(_oauth_schemas())
    return props


def _oauth_schemas() -> dict[str, Any]:
    """The preset and OAuth2 input fields; secrets are write-only."""
    props: dict[str, Any] = {}
    for f in OAUTH_FIELDS:
        schema: dict[str, Any] = {"type": "string", "title": f.label, "description": f.help}
        choices = [value for value, _ in f.choices if value]
        if choices:
            schema["enum"] = choices if f.name != "oauth_provider" else ["", *choices]
        if f.name in OAUTH_SECRETS:
            schema["writeOnly"] = True
        schema["maxLength"] = 8192
        props[f.name] = schema
    return props


def _connection_schema(schema: dict[str, Any], *, required: bool) -> None:
    schema["properties"] = _field_schemas()
    if required:
        schema["required"] = ["name", "server_url", "port"]


class ConnectionIn(BaseModel):
    """A new connection: the fields of the SMTP Data Provider form (validated like the CLI)."""

    model_config = ConfigDict(
        extra="allow", json_schema_extra=lambda s: _connection_schema(s, required=True)
    )


class ConnectionPatch(BaseModel):
    """Fields to change. A new server or port without a new password drops the stored one."""

    model_config = ConfigDict(
        extra="allow", json_schema_extra=lambda s: _connection_schema(s, required=False)
    )


class LastTest(BaseModel):
    ok: bool
    at: str
    message: str


class ConnectionOut(BaseModel):
    """A connection as anyone may see it: every field but the password."""

    name: str
    server_url: str
    port: int
    username: str
    is_active: bool
    agent: str
    implementation_type: str
    is_source: bool
    is_target: bool
    timeout_ms: int
    query: str
    datetime_format: str
    use_ssl: bool
    use_html_body: bool
    security: str
    from_address: str
    from_name: str
    reply_to: str
    verify_tls: bool
    ca_file: str
    ehlo_hostname: str
    auth_mechanism: str
    allow_insecure_auth: bool
    concurrency: int
    rate_per_second: float
    rate_per_minute: float
    rate_per_hour: float
    daily_cap: int
    messages_per_connection: int
    origin: str = Field(description="store, env (MAILCONDUIT_CONN_*) or builtin.")
    has_password: bool
    last_test: LastTest | None = None
    oauth: OAuthOut | None = Field(
        default=None, description="The OAuth2 sign-in (XOAUTH2), secrets only as has_*."
    )


class OAuthOut(BaseModel):
    """A connection's OAuth2 settings as anyone may see them: no secret, only whether set."""

    provider: str
    tenant: str
    client_id: str
    scope: str
    token_endpoint: str
    device_endpoint: str
    flow: str
    client_auth: str
    has_client_secret: bool
    has_refresh_token: bool


class SignInOut(BaseModel):
    """A device sign-in: open ``verification_uri``, type ``user_code``; ``state`` is
    pending, done or failed (``message`` says why)."""

    state: str
    user_code: str
    verification_uri: str
    instructions: str
    expires_at: float
    message: str


class PresetOut(BaseModel):
    """A provider preset: the connection fields it fills and the limits it knows."""

    model_config = ConfigDict(extra="allow")
    name: str
    title: str


def connection_out(conn: Connection, test: TestStatus | None = None) -> ConnectionOut:
    data = conn.public_dict()
    data["last_test"] = test.to_dict() if test is not None else None
    data["oauth"] = api.connection_oauth(conn.name) if conn.origin == "store" else None
    return ConnectionOut.model_validate(data)


class TestIn(BaseModel):
    send_to: str | None = Field(
        default=None, max_length=SEND_TO_LIMIT, description="Also send a real test message here."
    )


class ProbeOut(BaseModel):
    """Test Connection's result: ok, or the failed stage with its hint; the CLI's lines too."""

    model_config = ConfigDict(extra="allow")
    ok: bool
    lines: list[str]


class UploadOut(BaseModel):
    upload: str = Field(description="Reference to give as 'upload' when starting an export.")
    id: str = Field(description="The upload's id: POST /api/uploads/{id}/files adds files to it.")
    name: str
    size: int


class FilesOut(BaseModel):
    upload: str = Field(description="The upload the files belong to.")
    files: list[str] = Field(
        description="Every file of its attachment folder: the names 'attach' and 'inline' "
        "templates may give."
    )


class ExportIn(BaseModel):
    """An export: 'upload' (a reference from POST /api/uploads) with message settings,
    or 'interface' (a saved interface file's name)."""

    model_config = ConfigDict(extra="allow", json_schema_extra=lambda s: _export_schema(s))


def _export_schema(schema: dict[str, Any]) -> None:
    props: dict[str, Any] = {
        "upload": {
            "type": "string",
            "maxLength": 200,
            "description": "Reference returned by POST /api/uploads.",
        },
        "interface": {
            "type": "string",
            "maxLength": 255,
            "description": "Name of a saved interface file.",
        },
    }
    props["attach"] = {
        "type": "array",
        "items": {"type": "string", "maxLength": text_limit("export", "attach")},
        "description": "Attachment file name templates, from the upload's files; one that "
        "renders empty adds nothing to that row.",
    }
    props["inline"] = {
        "type": "object",
        "additionalProperties": {"type": "string", "maxLength": text_limit("export", "inline")},
        "description": "Inline images: NAME → file name template; the HTML shows one as "
        "<img src=\"cid:NAME\">. A list of 'NAME=TEMPLATE' strings is accepted too.",
    }
    for name, kind in WEB_EXPORT_FIELDS.items():
        if name in props:
            continue
        text: dict[str, Any] = {"type": "string", "maxLength": text_limit("export", name)}
        typed: dict[str, dict[str, Any]] = {
            "text": text,
            "integer": {"type": ["integer", "string"]},
            "boolean": {"type": ["boolean", "string"]},
            "formats": {"anyOf": [text, {"type": "array", "items": text}]},
            "sheet": {**text, "type": ["string", "integer"]},
        }
        props[name] = {
            **typed[kind],
            "description": f"The export setting '{name}' (see mailconduit export --help).",
        }
    schema["properties"] = props
    schema["description"] = "Settings naming server files or databases are refused: " + ", ".join(
        sorted(SERVER_ONLY_FIELDS)
    )


class WorkerOut(BaseModel):
    worker: str
    host: str
    pid: int
    concurrency: int
    heartbeat_age: float


class AgentOut(BaseModel):
    name: str
    workers: list[WorkerOut]
    queued_chunks: int
    running_chunks: int
    last_seen: float | None


class ChunkOut(BaseModel):
    chunk: int
    first_row: int
    last_row: int
    state: str
    worker: str
    attempts: int
    counts: dict[str, int]
    reason: str


class ResumeIn(BaseModel):
    retry_failed: bool = Field(default=False, description="Send the failed rows again too.")


class MessageSummaryOut(BaseModel):
    id: int
    received: str
    envelope_from: str
    envelope_recipients: list[str]
    smtputf8: bool
    from_: str = Field(alias="from")
    to: str
    subject: str
    message_id: str
    size: int

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class AttachmentOut(BaseModel):
    index: int
    filename: str
    content_type: str
    disposition: str
    content_id: str
    size: int


class MessageOut(MessageSummaryOut):
    headers: list[list[str]]
    text: str | None
    html: str | None
    attachments: list[AttachmentOut]


class InboxOut(BaseModel):
    total: int
    messages: list[MessageSummaryOut]


class Me(BaseModel):
    user: str
    auth: Literal["session", "token"]


# --------------------------------------------------------------------------- routes


@router.get("/me", summary="Who is calling")
def me(request: Request) -> Me:
    return Me(user=request.state.user, auth=request.state.auth)


@router.get("/connections", summary="List connections")
def list_connections() -> list[ConnectionOut]:
    """Built-in, environment and stored connections, each with its last test result."""
    return [connection_out(c, t) for c, t in api.list_connections()]


@router.post("/connections", status_code=201, summary="Create a connection", responses={**CONFLICT})
def create_connection(body: ConnectionIn) -> ConnectionOut:
    data = body.model_dump()
    check_ca_file(data)
    return connection_out(api.create_connection(data))


@router.get("/connections/{name}", summary="Show a connection", responses=NOT_FOUND)
def get_connection(name: ConnectionName) -> ConnectionOut:
    conn = api.get_connection(name)
    test = next((t for c, t in api.list_connections() if c.name == conn.name), None)
    return connection_out(conn, test)


@router.patch("/connections/{name}", summary="Change a connection", responses=NOT_FOUND)
def update_connection(name: ConnectionName, body: ConnectionPatch) -> ConnectionOut:
    """Only the given fields change; an empty or missing password keeps the stored one,
    unless the server or port changes (then the password must be given again)."""
    changes = body.model_dump()
    if changes.get("password") in ("", None):
        changes.pop("password", None)
    check_ca_file(changes, stored=api.get_connection(name).ca_file)
    return connection_out(api.update_connection(name, changes))


@router.delete(
    "/connections/{name}", status_code=204, summary="Delete a connection", responses=NOT_FOUND
)
def delete_connection(name: ConnectionName) -> Response:
    api.delete_connection(name)
    return Response(status_code=204)


@router.post("/connections/{name}/test", summary="Test Connection", responses=NOT_FOUND)
def test_connection(
    state: StateDep, name: ConnectionName, body: Annotated[TestIn | None, Body()] = None
) -> ProbeOut:
    """Connect, TLS, EHLO, AUTH, QUIT (and send a message with send_to). 200 either way:
    ``ok`` says whether it worked; a failure names its stage and a hint."""
    send_to = body.send_to if body is not None else None
    result = api.test_connection(
        name, send_to=send_to or None, allow_address=state.policy.allow_address
    )
    data = result.to_dict()
    data["ok"] = bool(result.ok)
    data["lines"] = list(result.report_lines(verbose=False))
    return ProbeOut.model_validate(data)


@router.post(
    "/connections/{name}/authorize",
    summary="Start an OAuth2 device sign-in",
    responses={**NOT_FOUND, **CONFLICT},
)
def authorize_connection(name: ConnectionName) -> SignInOut:
    """Starts the device-code sign-in of a stored OAuth2 connection and returns the address
    and code to show the user; it finishes in the background (GET the same path)."""
    return SignInOut.model_validate(api.start_authorization(name))


@router.get(
    "/connections/{name}/authorize", summary="State of the device sign-in", responses=NOT_FOUND
)
def authorization_status(name: ConnectionName) -> SignInOut:
    api.get_connection(name)
    status = api.authorization_status(name)
    if status is None:
        raise NotFoundError("sign-in of connection", name)
    return SignInOut.model_validate(status)


@router.get("/presets", summary="Provider presets")
def list_presets() -> list[PresetOut]:
    """The providers a connection can be filled from (``preset`` on create), their ports,
    published limits and the pages those figures come from."""
    return [PresetOut.model_validate(p) for p in api.presets()]


@router.post("/uploads", status_code=201, summary="Upload a data file")
def upload(
    state: StateDep, file: Annotated[UploadFile, File(description="CSV, JSON, XLSX, Parquet...")]
) -> UploadOut:
    """Store a data file (CSV, TSV, JSON, JSON Lines, XLSX, Parquet) for an export; size-limited."""
    saved = save_upload(file.filename or "", file.file, max_bytes=state.settings.max_upload_bytes)
    return UploadOut(upload=saved.ref, id=saved.ref.split("/")[0], name=saved.name, size=saved.size)


@router.post(
    "/uploads/{upload_id}/files",
    status_code=201,
    summary="Add files to attach or show inline",
    responses=NOT_FOUND,
)
def upload_files(
    state: StateDep,
    upload_id: Annotated[str, Path(pattern=r"^[0-9a-f]{16}$", description="An upload's id.")],
    files: Annotated[list[UploadFile], File(description="Files (PDF, images...), size-limited.")],
) -> FilesOut:
    """Store files in the upload's attachment folder, where exports of it find what their
    'attach' and 'inline' templates name (a file of the same name is replaced)."""
    owner = resolve_upload_id(upload_id)
    for file in files:
        save_attachment(
            owner, file.filename or "", file.file, max_bytes=state.settings.max_upload_bytes
        )
    return FilesOut(upload=owner.ref, files=attachment_files(owner))


@router.post("/exports/preview", summary="Preview an export (nothing is sent)")
def preview_export(body: ExportIn) -> list[dict[str, Any]]:
    """The first three messages as they would be sent: headers, text and HTML."""
    return preview_dicts(api.preview(spec_from_web(body.model_dump()), limit=3))


@router.post("/exports", status_code=202, summary="Start an export", responses={**CONFLICT})
def start_export(body: ExportIn) -> RunOut:
    """Start sending in the background; poll GET /api/exports/{run_id} for progress."""
    run_id = api.start_export(spec_from_web(body.model_dump()))
    return run_out(api.get_run(run_id))


@router.get("/exports/{run_id}", summary="Export status", responses=NOT_FOUND)
def export_status(run_id: RunId) -> RunOut:
    return run_out(api.get_run(run_id))


@router.get(
    "/exports/{run_id}/report",
    summary="Export report (per row)",
    responses={
        **NOT_FOUND,
        200: {"content": {"application/json": {}, "text/csv": {}}, "description": "The report."},
    },
)
def export_report(
    run_id: RunId, format: Annotated[Literal["json", "csv"], Query()] = "json"
) -> Response:
    report = api.run_report(run_id)
    if format == "csv":
        return Response(
            report.to_csv(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="report-{run_id}.csv"'},
        )
    return Response(report.to_json(), media_type="application/json")


@router.get("/runs", summary="List runs")
def list_runs(limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[RunOut]:
    return [run_out(r) for r in api.list_runs(limit=limit)]


@router.post(
    "/runs/{run_id}/resume",
    status_code=202,
    summary="Resume a run",
    responses={**NOT_FOUND, **CONFLICT},
)
def resume_run(run_id: RunId, body: Annotated[ResumeIn | None, Body()] = None) -> RunOut:
    """Send the rows not yet confirmed (and, with retry_failed, the failed ones) again."""
    new_id = api.resume_run(run_id, retry_failed=body.retry_failed if body is not None else False)
    return run_out(api.get_run(new_id))


@router.post(
    "/runs/{run_id}/stop", status_code=202, summary="Stop a run on agents", responses=NOT_FOUND
)
def stop_run(run_id: RunId) -> RunOut:
    """Ask every worker of a celery run to stop after the messages in flight."""
    api.stop_run(run_id)
    return run_out(api.get_run(run_id))


@router.get("/runs/{run_id}/chunks", summary="Progress per chunk and worker", responses=NOT_FOUND)
def run_chunks(run_id: RunId) -> list[ChunkOut]:
    """A celery run's chunks: rows, state, the worker holding it, its rows' outcomes."""
    return [ChunkOut.model_validate(c.to_dict()) for c in api.run_chunks(run_id)]


@router.get("/agents", summary="List agents")
def list_agents() -> list[AgentOut]:
    """Each agent: live workers with host and heartbeat age, queued and running chunks."""
    return [AgentOut.model_validate(a.to_dict()) for a in api.list_agents()]


@router.get("/inbox", summary="List captured messages")
def inbox(
    q: Annotated[
        str, Query(max_length=500, description="Words the subject/addresses contain.")
    ] = "",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> InboxOut:
    messages = sink.list_messages(search=q or None, limit=limit, offset=offset)
    return InboxOut(
        total=sink.count_messages(search=q or None),
        messages=[MessageSummaryOut.model_validate(m.to_dict()) for m in messages],
    )


@router.get("/inbox/{message_id}", summary="Read a captured message", responses=NOT_FOUND)
def inbox_message(message_id: MessageId) -> MessageOut:
    return MessageOut.model_validate(sink.get_message(message_id).to_dict())


@router.get(
    "/inbox/{message_id}/html",
    summary="A message's HTML part (sandboxed)",
    responses={**NOT_FOUND, 200: {"content": {"text/html": {}}, "description": "The HTML part."}},
)
def inbox_html(message_id: MessageId) -> Response:
    return html_part_response(sink.get_message(message_id).html or "")


@router.get(
    "/inbox/{message_id}/attachments/{index}",
    summary="Download an attachment",
    responses={
        **NOT_FOUND,
        200: {"content": {"application/octet-stream": {}}, "description": "The attachment."},
    },
)
def inbox_attachment(
    message_id: MessageId, index: Annotated[int, Path(ge=0, le=10_000)]
) -> Response:
    part = sink.get_message(message_id).attachment(index)
    return attachment_response(part.content, part.filename, fallback=f"attachment-{index + 1}")

"""Connection pages: the list, Connector Selection, the "SMTP Data Provider" form, the detail
page with Test Connection, edit, activate/deactivate and delete with confirmation."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, Response

from mailconduit import api
from mailconduit.config import (
    Connection,
    derive_security,
    parse_server_url,
    validate_connection,
)
from mailconduit.errors import ConfigError
from mailconduit.web.cafile import check_ca_file
from mailconduit.web.console import Console, StateDep
from mailconduit.web.dashboards import connection_usage
from mailconduit.web.forms import (
    FIELDS,
    FIELDS_BY_NAME,
    PORT_SUGGESTIONS,
    connection_form_values,
    form_to_connection_data,
)
from mailconduit.web.oauth_form import (
    OAUTH_FIELDS,
    OAUTH_FIELDS_BY_NAME,
    SECRET_FIELDS,
    form_to_oauth_data,
    oauth_form_values,
    preset_data,
)
from mailconduit.web.views import (
    NOTICES,
    DeleteQuestion,
    FieldErrors,
    FormDep,
    ProbeView,
    StoredName,
    format_time,
    new_router,
    probe_view,
    redirect,
    send_to_of,
)

__all__ = ["router"]

router = new_router()
_DELETE = DeleteQuestion(
    "connection",
    "Connections",
    "/connections",
    "Its settings and stored password are removed. Exports that name it will fail until a "
    "connection with that name exists again.",
)


def _editable(conn: Connection) -> bool:
    return conn.origin == "store"


@router.get("/connections", response_class=HTMLResponse)
def connection_list(request: Request, state: StateDep) -> Response:
    """Connections: name, server, port, security, active, agent, last test; actions per row."""
    rows = [
        {
            "conn": conn,
            "editable": _editable(conn),
            "test": status,
            "tested_at": format_time(status.at) if status else "",
        }
        for conn, status in api.list_connections()
    ]
    return state.render(request, "connections.html", rows=rows, notice=NOTICES.of(request))


@router.get("/connections/new", response_class=HTMLResponse)
def connector_selection(request: Request, state: StateDep) -> Response:
    """Connector Selection: SMTP sits in the EMails section."""
    return state.render(request, "connector_selection.html", notice="")


#: Every form field by name, the OAuth2 part included (errors are shown beside them).
_ALL_FIELDS = {**FIELDS_BY_NAME, **OAUTH_FIELDS_BY_NAME}


def _connection_part(data: dict[str, Any]) -> dict[str, Any]:
    """The connection fields of form data, without preset and OAuth2 input."""
    return {k: v for k, v in data.items() if k not in OAUTH_FIELDS_BY_NAME}


def _form_page(
    request: Request,
    state: Console,
    *,
    values: dict[str, Any],
    invalid: ConfigError | None = None,
    editing: str = "",
    has_password: bool = False,
    probe: ProbeView | None = None,
    has_oauth_secret: bool = False,
) -> HTMLResponse:
    """The form; with ``invalid``, a 422 with each of its errors beside the field."""
    errors = FieldErrors() if invalid is None else FieldErrors.from_error(invalid, _ALL_FIELDS)
    retype_password = bool(values.get("password")) or any(values.get(k) for k in SECRET_FIELDS)
    # never echo a password or an OAuth2 secret
    values = {k: v for k, v in values.items() if k != "password" and k not in SECRET_FIELDS}
    return state.render(
        request,
        "connection_form.html",
        status_code=200 if invalid is None else 422,
        fields=FIELDS,
        values=values,
        errors=errors,
        editing=editing,
        has_password=has_password,
        port_suggestions=PORT_SUGGESTIONS,
        probe=probe,
        retype_password=retype_password,
        oauth_fields=OAUTH_FIELDS,
        oauth_open=bool(values.get("oauth_provider"))
        or any(f.name in errors.by_field for f in OAUTH_FIELDS),
        has_oauth_secret=has_oauth_secret,
        preset_json=preset_data(),
        notice="",
    )


@router.get("/connections/new/smtp", response_class=HTMLResponse)
def new_smtp_form(request: Request, state: StateDep) -> Response:
    """The empty "SMTP Data Provider" form."""
    values = connection_form_values() | oauth_form_values(None)
    return _form_page(request, state, values=values)


@router.post("/connections/new/smtp", response_class=HTMLResponse)
def create_smtp(request: Request, state: StateDep, form: FormDep) -> Response:
    """Create the connection, or (button "Test Connection") test the typed values without saving."""
    data = form_to_connection_data(form, editing=False) | form_to_oauth_data(form, editing=False)
    if form.get("action") == "test":
        try:
            check_ca_file(data)
            # not "store": a stored connection's OAuth2 tokens must not serve a draft
            draft = validate_connection(_connection_part(data), origin="draft")
        except ConfigError as exc:
            return _form_page(request, state, values=data, invalid=exc)
        result = api.test_connection(draft, allow_address=state.policy.allow_address, record=False)
        return _form_page(request, state, values=data, probe=probe_view(result))
    try:
        check_ca_file(data)
        conn = api.create_connection(data)
    except ConfigError as exc:
        return _form_page(request, state, values=data, invalid=exc)
    return redirect(f"/connections/{conn.name}", notice="created")


def _detail(
    request: Request, state: Console, name: str, *, probe: ProbeView | None = None, notice: str = ""
) -> HTMLResponse:
    conn = api.get_connection(name)
    status = next((s for c, s in api.list_connections() if c.name == conn.name), None)
    public = conn.public_dict()
    shown = [(f, public.get(f.name)) for f in FIELDS if f.name != "password" and not f.unused]
    oauth = api.connection_oauth(conn.name) if _editable(conn) else None
    return state.render(
        request,
        "connection_detail.html",
        conn=conn,
        shown=shown,
        oauth=oauth,
        sign_in=api.authorization_status(conn.name) if oauth is not None else None,
        editable=_editable(conn),
        test=status,
        tested_at=format_time(status.at) if status else "",
        probe=probe,
        usage=connection_usage(conn.name, conn.daily_cap),
        tests=[(t, format_time(t.at)) for t in api.recent_tests(conn.name)],
        notice=notice or NOTICES.of(request),
    )


@router.get("/connections/{name}", response_class=HTMLResponse)
def connection_detail(request: Request, state: StateDep, name: StoredName) -> Response:
    """One connection's settings (never its password) and the Test Connection button."""
    return _detail(request, state, name)


@router.post("/connections/{name}/test", response_class=HTMLResponse)
def test_saved(request: Request, state: StateDep, form: FormDep, name: StoredName) -> Response:
    """Test Connection on a saved connection; optionally send a real test message."""
    result = api.test_connection(
        name, send_to=send_to_of(form.get("send_to")), allow_address=state.policy.allow_address
    )
    return _detail(request, state, name, probe=probe_view(result))


def _edit_values(conn: Connection) -> dict[str, Any]:
    public = conn.public_dict()
    values = connection_form_values(public)
    try:
        scheme = parse_server_url(conn.server_url)[0]
    except ValueError:
        scheme = ""
    if conn.security is derive_security(conn.use_ssl, conn.port, scheme):
        values["security"] = ""  # shown as "derive", so a port change re-derives it
    return values


def _stored(name: str) -> Connection:
    conn = api.get_connection(name)
    if not _editable(conn):
        where = "built in" if conn.origin == "builtin" else "defined by the environment"
        raise ConfigError(f"connection {name!r} is {where} and cannot be changed here")
    return conn


@router.get("/connections/{name}/edit", response_class=HTMLResponse)
def edit_form(request: Request, state: StateDep, name: StoredName) -> Response:
    """The form filled with the stored values; the password box stays empty."""
    conn = _stored(name)
    oauth = api.connection_oauth(name)
    return _form_page(
        request,
        state,
        values=_edit_values(conn) | oauth_form_values(oauth),
        editing=name,
        has_password=bool(conn.password),
        has_oauth_secret=bool(oauth and oauth.get("has_client_secret")),
    )


@router.post("/connections/{name}/edit", response_class=HTMLResponse)
def save_edit(request: Request, state: StateDep, form: FormDep, name: StoredName) -> Response:
    """Save; with "Save and test" also run Test Connection on the saved result."""
    conn = _stored(name)
    data = form_to_connection_data(form, editing=True) | form_to_oauth_data(form, editing=True)
    try:
        check_ca_file(data, stored=conn.ca_file)
        saved = api.update_connection(name, data)
    except ConfigError as exc:
        return _form_page(
            request,
            state,
            values=data,
            invalid=exc,
            editing=name,
            has_password=bool(conn.password),
        )
    if form.get("action") == "save_test":
        result = api.test_connection(saved.name, allow_address=state.policy.allow_address)
        return _detail(
            request, state, saved.name, probe=probe_view(result), notice=NOTICES["saved"]
        )
    return redirect(f"/connections/{saved.name}", notice="saved")


@router.post("/connections/{name}/authorize", response_class=HTMLResponse)
def authorize(request: Request, state: StateDep, name: StoredName) -> Response:
    """Start the device sign-in: the page shows where to go and the code to type; the
    sign-in finishes in the background and the page says so when reloaded."""
    _stored(name)
    api.start_authorization(name)
    return _detail(request, state, name)


@router.post("/connections/{name}/active")
def set_active(request: Request, form: FormDep, name: StoredName) -> Response:
    """Activate or deactivate (form field ``active`` = 1 or 0)."""
    _stored(name)
    active = form.get("active") == "1"
    api.update_connection(name, {"is_active": active})
    back = "/connections" if form.get("back") == "list" else f"/connections/{name}"
    return redirect(back, notice="activated" if active else "deactivated")


@router.get("/connections/{name}/delete", response_class=HTMLResponse)
def confirm_delete(request: Request, state: StateDep, name: StoredName) -> Response:
    """Ask before deleting."""
    conn = _stored(name)
    return state.render(request, "confirm_delete.html", ask=_DELETE, name=conn.name, notice="")


@router.post("/connections/{name}/delete")
def delete(request: Request, name: StoredName) -> Response:
    """Delete after confirmation."""
    _stored(name)
    api.delete_connection(name)
    return redirect("/connections", notice="deleted")

"""Responses more than one router sends: a captured HTML part fenced off, a download that is
never rendered, a ConfigError as 422 JSON, a run as the REST API shows it and the error
answers every API route documents.

A captured HTML part is hostile content as far as the console is concerned: it is served on
its own URL with a CSP ``sandbox`` (an opaque origin where no script runs) and shown only in
an ``<iframe sandbox="">``. Attachments are always downloads, never rendered.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi.responses import Response
from pydantic import BaseModel

from mailconduit.errors import ConfigError
from mailconduit.web.uploads import public_text, safe_filename

__all__ = [
    "CONFLICT",
    "ERRORS",
    "HTML_PART_CSP",
    "NOT_FOUND",
    "RunOut",
    "attachment_response",
    "field_errors_json",
    "html_part_response",
    "run_out",
]

#: For a captured HTML part: no script, no plugin, no network; inline styles and data: images only.
HTML_PART_CSP = (
    "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    "font-src data:; frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
)


def html_part_response(html: str) -> Response:
    """A captured HTML body, fenced off: CSP sandbox, framable only by the console itself."""
    return Response(
        html.encode("utf-8"),
        media_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": HTML_PART_CSP,
            "X-Frame-Options": "SAMEORIGIN",
            "Referrer-Policy": "no-referrer",
        },
    )


def attachment_response(content: bytes, filename: str, *, fallback: str) -> Response:
    """A download whatever the declared type: octet-stream, attachment, a cleaned file name."""
    name = safe_filename(filename, fallback=fallback)
    ascii_name = name.encode("ascii", "replace").decode("ascii").replace("?", "_")
    disposition = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"
    return Response(
        content,
        media_type="application/octet-stream",
        headers={"Content-Disposition": disposition, "Content-Security-Policy": "sandbox"},
    )


def field_errors_json(exc: ConfigError) -> dict[str, Any]:
    """A ConfigError as FastAPI-style 422 JSON: one entry per wrong field."""
    detail = [
        {"loc": ["body", e.field], "msg": public_text(e.message), "type": "value_error"}
        for e in exc.errors
    ]
    message = public_text(exc.message)
    if not detail:
        detail = [{"loc": ["body"], "msg": message, "type": "value_error"}]
    return {"detail": detail, "message": message}


#: Error answers every REST route may give (documented in the OpenAPI schema).
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "The body could not be read (not JSON, or broken form data)."},
    401: {"description": "Not signed in (send 'Authorization: Bearer TOKEN')."},
    403: {"description": "Refused (CSRF token or Origin check for cookie sessions)."},
    413: {"description": "The request is larger than the console accepts."},
    422: {"description": "Invalid input: one entry per wrong field, with the CLI's wording."},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such item."}}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "The operation was refused or failed."}
}


class RunOut(BaseModel):
    """A run: its status and row counts by state."""

    run_id: str
    status: str
    connection: str
    mode: str
    created_at: float
    updated_at: float
    finished_at: float | None
    total: int | None
    message: str
    counts: dict[str, int]
    done: int


def run_out(info: Any) -> RunOut:
    data = info.to_dict()
    data["done"] = info.done
    return RunOut.model_validate(data)

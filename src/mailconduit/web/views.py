"""Helpers the page routes share: form parsing, per-field errors, and view models of results."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import RedirectResponse
from starlette.datastructures import FormData

from mailconduit.config import NAME_RE, text_limit
from mailconduit.errors import ConfigError, FieldError
from mailconduit.web.security import MAX_FORM_BYTES, CsrfRoute
from mailconduit.web.uploads import public_text

__all__ = [
    "NOTICES",
    "SEND_TO_LIMIT",
    "DeleteQuestion",
    "FieldErrors",
    "FormDep",
    "Notices",
    "ProbeView",
    "StoredName",
    "form_data",
    "format_time",
    "new_router",
    "probe_view",
    "redirect",
    "send_to_of",
]

#: Longest recipient Test Connection takes for its test message: an address's limit.
SEND_TO_LIMIT = text_limit("connection", "from_address")


class Notices(dict[str, str]):
    """Fixed confirmations a redirect may ask a page to show (``?notice=key``), by key."""

    def of(self, request: Request) -> str:
        """The confirmation ``request`` asks this page to show, or none."""
        return self.get(request.query_params.get("notice", ""), "")


#: The connection pages' notices, and those of runs, exports and signing out.
NOTICES = Notices({
    "created": "Connection created. Press Test Connection to check that it works.",
    "saved": "Changes saved.",
    "deleted": "Connection deleted.",
    "activated": "Connection activated: exports may use it.",
    "deactivated": "Connection deactivated: exports through it are refused until it is activated.",
    "logged_out": "You are signed out.",
    "started": "Export started.",
    "resumed": "Run resumed.",
    "stopping": "Stop requested: the workers end the messages in flight, then stop.",
})


def new_router() -> APIRouter:
    """A router whose every route checks the CSRF token (see :class:`CsrfRoute`)."""
    return APIRouter(route_class=CsrfRoute, include_in_schema=False)


async def form_data(request: Request) -> FormData:
    """The submitted form (a FastAPI dependency, so sync handlers can read it)."""
    return await request.form(max_part_size=MAX_FORM_BYTES)


#: A route's parameter that receives the submitted form.
FormDep = Annotated[FormData, Depends(form_data)]
#: A path segment naming a stored connection, interface or database connection.
StoredName = Annotated[str, Path(pattern=NAME_RE.pattern, max_length=64)]


def send_to_of(value: object) -> str | None:
    """The recipient asked of Test Connection (None for none); an overlong one is refused."""
    text = value.strip() if isinstance(value, str) else ""
    if len(text) > SEND_TO_LIMIT:
        raise ConfigError.for_fields(
            "test", [FieldError("send_to", f"is too long: at most {SEND_TO_LIMIT} characters")]
        )
    return text or None


def redirect(path: str, *, notice: str = "") -> RedirectResponse:
    """303 to ``path`` (a local path), with a notice key the next page shows."""
    if notice:
        path += ("&" if "?" in path else "?") + "notice=" + quote(notice)
    return RedirectResponse(path, status_code=303)


@dataclass(frozen=True, slots=True)
class FieldErrors:
    """A ConfigError split into messages per form field and messages for the whole form."""

    by_field: dict[str, list[str]] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)

    @classmethod
    def from_error(cls, exc: ConfigError, fields: Mapping[str, Any] | set[str]) -> FieldErrors:
        by_field: dict[str, list[str]] = {}
        general: list[str] = []
        for e in exc.errors:
            if e.field in fields:
                by_field.setdefault(e.field, []).append(public_text(e.message))
            else:
                general.append(public_text(str(e)))
        if not exc.errors:
            general.append(public_text(exc.message))
        return cls(by_field, general)

    def __bool__(self) -> bool:
        return bool(self.by_field or self.general)


@dataclass(frozen=True, slots=True)
class DeleteQuestion:
    """What confirm_delete.html asks before deleting a ``what`` (connection, interface) listed
    on the page ``list_title`` at ``list_href``: ``consequence`` says what deleting does."""

    what: str
    list_title: str
    list_href: str
    consequence: str


def format_time(value: float | datetime | None) -> str:
    """A moment as ``2025-01-31 14:05:09 UTC`` (empty for None)."""
    if value is None:
        return ""
    moment = value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True, slots=True)
class ProbeView:
    """A Test Connection result as the page shows it: the CLI's lines and the structured fields."""

    ok: bool
    lines: list[str]
    stage: str
    hint: str
    capabilities: list[str]
    transcript: list[str]


def probe_view(result: Any) -> ProbeView:
    """View of a ProbeResult: the same lines ``mailconduit connections test`` prints."""
    lines = [str(line) for line in result.report_lines(verbose=False)]
    capabilities: list[str] = []
    for line in lines:
        label, _, listed = line.strip().partition(": ")
        if label == "capabilities" and listed != "none advertised":
            capabilities = listed.split(", ")
    return ProbeView(
        ok=bool(result.ok),
        lines=lines,
        stage=str(result.stage),
        hint=str(result.hint),
        capabilities=capabilities,
        transcript=[str(t) for t in result.transcript],
    )

"""The local inbox: messages the embedded SMTP server captured, listed, searched and read.

A captured HTML part is hostile content as far as the console is concerned: it is served on
its own URL with a CSP ``sandbox`` (an opaque origin where no script runs) and shown only in
an ``<iframe sandbox="">``. Attachments are always downloads, never rendered.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from mailconduit import sink
from mailconduit.web.app import Console, console
from mailconduit.web.uploads import safe_filename
from mailconduit.web.views import format_time, new_router

__all__ = ["HTML_PART_CSP", "attachment_response", "html_part_response", "router"]

router = new_router()
StateDep = Annotated[Console, Depends(console)]
MessageId = Annotated[int, Path(ge=1, le=2**62, description="Id of a captured message.")]
AttachmentIndex = Annotated[
    int, Path(ge=0, le=10_000, description="Position among its attachments.")
]
PAGE_SIZE = 50

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


@router.get("/inbox", response_class=HTMLResponse)
def inbox(
    request: Request,
    state: StateDep,
    q: Annotated[str, Query(max_length=500)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    """Captured messages, newest first, searchable by subject, sender and recipients."""
    total = sink.count_messages(search=q or None)
    messages = sink.list_messages(search=q or None, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    rows = [{"m": m, "received": format_time(m.received)} for m in messages]
    return state.render(
        request,
        "inbox.html",
        rows=rows,
        q=q,
        page=page,
        total=total,
        pages=max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE),
        running=sink.is_running(),
        notice="",
    )


@router.get("/inbox/{message_id}", response_class=HTMLResponse)
def message(request: Request, state: StateDep, message_id: MessageId) -> Response:
    """One message: headers, text part, HTML part in a sandboxed frame, attachments."""
    stored = sink.get_message(message_id)
    return state.render(
        request,
        "message.html",
        m=stored,
        received=format_time(stored.summary.received),
        notice="",
    )


@router.get("/inbox/{message_id}/html")
def message_html(message_id: MessageId) -> Response:
    """The HTML part alone, for the sandboxed frame."""
    stored = sink.get_message(message_id)
    return html_part_response(stored.html or "")


@router.get("/inbox/{message_id}/attachments/{index}")
def message_attachment(message_id: MessageId, index: AttachmentIndex) -> Response:
    """Download one attachment."""
    part = sink.get_message(message_id).attachment(index)
    return attachment_response(part.content, part.filename, fallback=f"attachment-{index + 1}")


@router.get("/inbox/{message_id}/raw")
def message_raw(message_id: MessageId) -> Response:
    """Download the message exactly as received (.eml)."""
    return attachment_response(
        sink.raw_message(message_id), f"message-{message_id}.eml", fallback="message.eml"
    )

"""The local inbox: messages the embedded SMTP server captured, listed, searched and read.

A captured HTML part is served fenced off and attachments only as downloads (see
:mod:`.responses`, shared with the REST API).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from mailconduit import sink
from mailconduit.web.console import StateDep
from mailconduit.web.responses import attachment_response, html_part_response
from mailconduit.web.views import format_time, new_router

__all__ = ["router"]

router = new_router()
MessageId = Annotated[int, Path(ge=1, le=2**62, description="Id of a captured message.")]
AttachmentIndex = Annotated[
    int, Path(ge=0, le=10_000, description="Position among its attachments.")
]
PAGE_SIZE = 50

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

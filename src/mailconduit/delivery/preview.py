"""Preview: the first messages rendered and built as a person reads them, nothing sent."""

from __future__ import annotations

import dataclasses

from mailconduit.config import Connection, ExportSpec
from mailconduit.delivery.jobs import build_jobs
from mailconduit.delivery.prepare import prepare
from mailconduit.journal import RowState

__all__ = ["PreviewMessage", "preview", "preview_text"]


def preview_text(data: bytes, *, max_lines: int = 30) -> str:
    """Headers and the beginning of the text of a message, as a person reads them."""
    from email import policy
    from email.parser import BytesParser

    msg = BytesParser(policy=policy.default).parsebytes(data)
    lines = [
        f"{name}: {value}" for name, value in msg.items() if name.lower() not in ("mime-version",)
    ]
    body = msg.get_body(preferencelist=("plain", "html"))
    text = body.get_content() if body is not None else ""
    lines.append("")
    lines.extend(str(text).splitlines()[:max_lines])
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class PreviewMessage:
    """A rendered message shown before sending (nothing is sent)."""

    row_key: str
    row_number: int
    recipients: tuple[str, ...]
    headers: tuple[tuple[str, str], ...]
    text: str
    html: str
    attachments: tuple[str, ...]
    size: int
    error: str = ""
    #: Inline images of the HTML: (Content-ID, file name).
    inline: tuple[tuple[str, str], ...] = ()
    #: What the export decided on its own and says (the body sent as HTML, and why).
    notes: tuple[str, ...] = ()


def preview(spec: ExportSpec, conn: Connection, *, limit: int = 3) -> list[PreviewMessage]:
    """The first ``limit`` messages, rendered and built but not sent."""
    from email import policy
    from email.parser import BytesParser

    prepared = prepare(dataclasses.replace(spec, limit=limit), conn, sending=False)
    out: list[PreviewMessage] = []
    try:
        for item in build_jobs(
            prepared, "preview", states={}, retry_failed=False, resend_uncertain=True, size_limit=0
        ):
            if isinstance(item, RowState):
                out.append(
                    PreviewMessage(item.row_key, item.row_number, (), (), "", "", (), 0,
                                   item.reply, notes=prepared.notes)
                )  # fmt: skip
                continue
            msg = BytesParser(policy=policy.default).parsebytes(item.data)
            plain = msg.get_body(preferencelist=("plain",))
            html = msg.get_body(preferencelist=("html",))
            names = tuple(part.get_filename() or "" for part in msg.iter_attachments())
            inline = tuple(
                (str(part["Content-ID"]).strip("<>"), part.get_filename() or "")
                for part in msg.walk()
                if part.get_content_disposition() == "inline" and part["Content-ID"]
            )
            out.append(
                PreviewMessage(
                    row_key=item.row_key,
                    row_number=item.row_number,
                    recipients=tuple(item.recipients),
                    headers=tuple((k, str(v)) for k, v in msg.items()),
                    text=str(plain.get_content()) if plain is not None else "",
                    html=str(html.get_content()) if html is not None else "",
                    attachments=names,
                    size=len(item.data),
                    inline=inline,
                    notes=prepared.notes,
                )
            )
    finally:
        prepared.close()
    return out

"""Files the console works with: uploaded data files and the operator's saved interface files.

Uploads land in ``MAILCONDUIT_HOME/uploads/<random id>/<cleaned name>`` and are named by the
reference ``<id>/<name>``; a reference from a browser is resolved only inside that folder, so
no request can point an export at another file of the server. Files to attach or show inline
go beside it, in ``<id>/files/``: the attachment folder of every export of that upload.
Interface files are the YAML files an operator saved in ``MAILCONDUIT_HOME/interfaces``.
"""

from __future__ import annotations

import os
import re
import secrets
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mailconduit.errors import ConfigError, FieldError, NotFoundError
from mailconduit.home import home, uploads_dir

__all__ = [
    "DATA_SUFFIXES",
    "MAX_ATTACHMENT_FILES",
    "Upload",
    "attachment_files",
    "attachments_dir",
    "interfaces_dir",
    "list_interfaces",
    "list_uploads",
    "public_text",
    "resolve_interface",
    "resolve_upload",
    "resolve_upload_id",
    "safe_filename",
    "save_attachment",
    "save_upload",
]

#: Data containers an upload may hold (what the sources read).
DATA_SUFFIXES = (".csv", ".tsv", ".txt", ".json", ".jsonl", ".ndjson", ".xlsx", ".parquet")
_REF_RE = re.compile(r"^([0-9a-f]{16})/([^/\\]{1,120})$")
_ID_RE = re.compile(r"[0-9a-f]{16}")
_CHUNK = 1024 * 1024
#: The folder, beside an upload, of the files its exports attach or show inline.
_FILES = "files"
#: Most files an upload's attachment folder holds.
MAX_ATTACHMENT_FILES = 200


@dataclass(frozen=True, slots=True)
class Upload:
    """One stored upload: its reference (``id/name``), file name, path and size in bytes."""

    ref: str
    name: str
    path: Path
    size: int


def safe_filename(name: str, *, fallback: str = "file") -> str:
    """A file name without folders, control characters, quotes or leading dot (<= 120 chars)."""
    base = re.split(r"[/\\]", name or "")[-1]
    base = unicodedata.normalize("NFC", base)
    base = "".join(c for c in base if unicodedata.category(c)[0] != "C" and c not in '"<>|:*?')
    base = base.strip().lstrip(".").strip()
    if len(base) > 120:
        stem, dot, suffix = base.rpartition(".")
        base = (
            (stem[: 119 - len(suffix)] + dot + suffix) if dot and len(suffix) < 16 else base[:120]
        )
    return base or fallback


def save_upload(name: str, stream: BinaryIO, *, max_bytes: int) -> Upload:
    """Copy an uploaded data file under the uploads folder; refuses unknown kinds and big files."""
    clean = safe_filename(name, fallback="data.csv")
    suffix = Path(clean).suffix.lower()
    if suffix not in DATA_SUFFIXES:
        raise ConfigError.for_fields(
            "upload",
            [FieldError("file", f"{clean!r}: expected one of {', '.join(DATA_SUFFIXES)}")],
        )
    upload_id = secrets.token_hex(8)
    folder = uploads_dir() / upload_id
    folder.mkdir(mode=0o700)
    path = folder / clean
    try:
        size = _copy(stream, path, max_bytes=max_bytes, field="file")
    except BaseException:
        path.unlink(missing_ok=True)
        folder.rmdir()
        raise
    if size == 0:
        path.unlink()
        folder.rmdir()
        raise ConfigError.for_fields("upload", [FieldError("file", f"{clean!r} is empty")])
    return Upload(ref=f"{upload_id}/{clean}", name=clean, path=path, size=size)


def _copy(stream: BinaryIO, path: Path, *, max_bytes: int, field: str, name: str = "") -> int:
    """Copy ``stream`` into the new file ``path`` (mode 0600) and return its size; more than
    ``max_bytes`` is an error of ``field`` (naming the file ``name`` when given)."""
    size = 0
    with open(path, "xb") as out:
        os.chmod(path, 0o600)
        while chunk := stream.read(_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                what = f"{name!r} is" if name else "is"
                raise ConfigError.for_fields(
                    "upload", [FieldError(field, f"{what} larger than {max_bytes // 1024} KiB")]
                )
            out.write(chunk)
    return size


def resolve_upload(ref: str) -> Upload:
    """The upload a reference names; a malformed or unknown reference is a field error."""
    match = _REF_RE.match(ref or "")
    base = uploads_dir().resolve()
    if match is not None:
        path = (base / match.group(1) / match.group(2)).resolve()
        if path.parent.parent == base and path.is_file():
            return Upload(ref=ref, name=path.name, path=path, size=path.stat().st_size)
    raise ConfigError.for_fields("export", [FieldError("upload", f"no uploaded file {ref!r}")])


def resolve_upload_id(upload_id: str) -> Upload:
    """The upload of the folder ``upload_id`` (the part of a reference before the slash)."""
    if _ID_RE.fullmatch(upload_id or ""):
        folder = uploads_dir().resolve() / upload_id
        if folder.is_dir():
            for path in folder.iterdir():
                if path.is_file():
                    return resolve_upload(f"{upload_id}/{path.name}")
    raise NotFoundError("upload", upload_id)


def attachments_dir(upload: Upload) -> Path:
    """The attachment folder of exports of ``upload`` (made empty on first use)."""
    path = upload.path.parent / _FILES
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def attachment_files(upload: Upload) -> list[str]:
    """The names of the files in ``upload``'s attachment folder, sorted."""
    path = upload.path.parent / _FILES
    if not path.is_dir():
        return []
    return sorted(p.name for p in path.iterdir() if p.is_file() and not p.name.startswith("."))


def save_attachment(upload: Upload, name: str, stream: BinaryIO, *, max_bytes: int) -> str:
    """Store a file in ``upload``'s attachment folder (replacing one of the same name); its
    cleaned name, which templates give to --attach and --inline, is returned."""
    clean = safe_filename(name)
    folder = attachments_dir(upload)
    target = folder / clean
    if not target.exists() and len(attachment_files(upload)) >= MAX_ATTACHMENT_FILES:
        raise ConfigError.for_fields(
            "upload", [FieldError("files", f"at most {MAX_ATTACHMENT_FILES} files per upload")]
        )
    part = folder / f".{secrets.token_hex(8)}.part"
    try:
        _copy(stream, part, max_bytes=max_bytes, field="files", name=clean)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    return clean


def list_uploads(*, limit: int = 50) -> list[Upload]:
    """Earlier uploads, newest first."""
    base = uploads_dir()
    found: list[tuple[float, Upload]] = []
    for folder in base.iterdir():
        if not folder.is_dir() or not re.fullmatch(r"[0-9a-f]{16}", folder.name):
            continue
        for path in folder.iterdir():
            if path.is_file():
                stat = path.stat()
                upload = Upload(
                    ref=f"{folder.name}/{path.name}", name=path.name, path=path, size=stat.st_size
                )
                found.append((stat.st_mtime, upload))
    found.sort(key=lambda item: item[0], reverse=True)
    return [u for _, u in found[:limit]]


def public_text(text: str) -> str:
    """``text`` as a browser may see it: an upload's or interface file's path becomes its file
    name, and anything else under MAILCONDUIT_HOME is shown relative to it."""
    if "/" not in text and "\\" not in text:
        return text
    folders: list[tuple[Path, str, str]] = [
        (uploads_dir(), r"[0-9a-f]{16}[/\\]", ""),
        (interfaces_dir(), "", ""),
        (home(), "", "MAILCONDUIT_HOME/"),
    ]
    for folder, inside, shown in folders:
        for form in dict.fromkeys((str(folder.resolve()), str(folder))):
            text = re.sub(re.escape(form) + r"[/\\]" + inside, shown, text)
    return text


def interfaces_dir() -> Path:
    """Where an operator saves interface files (YAML) the console may run."""
    path = home() / "interfaces"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def list_interfaces() -> list[str]:
    """File names of the saved interface files, sorted."""
    return sorted(
        p.name
        for p in interfaces_dir().iterdir()
        if p.is_file() and p.suffix.lower() in (".yaml", ".yml")
    )


def resolve_interface(name: str) -> Path:
    """The saved interface file called ``name`` (a bare file name), else a field error."""
    if name in list_interfaces():
        return interfaces_dir() / name
    raise ConfigError.for_fields(
        "export", [FieldError("interface", f"no saved interface file {name!r}")]
    )

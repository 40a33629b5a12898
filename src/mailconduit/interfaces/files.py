"""An interface's attachment archive: a zip unpacked into a folder of its own.

Only plain files are kept, by their base names; folders inside the archive, hidden names,
links and entries that would unpack bigger than allowed are refused before anything is written.
"""

from __future__ import annotations

import re
import secrets
import shutil
import zipfile
from pathlib import Path
from typing import BinaryIO

from mailconduit.errors import ConfigError, FieldError, NotFoundError
from mailconduit.interfaces.model import interface_files_dir

__all__ = ["MAX_ARCHIVE_FILES", "files_folder", "unpack_archive"]

MAX_ARCHIVE_FILES = 200
_ID_RE = re.compile(r"[0-9a-f]{16}")
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f\"<>|:*?\\]")


def _refuse(message: str) -> ConfigError:
    return ConfigError.for_fields("interface", [FieldError("files", message)])


def unpack_archive(stream: BinaryIO, *, max_bytes: int) -> str:
    """Unpack a zip of attachments and inline images; returns the folder's id."""
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError):
        raise _refuse("is not a zip archive") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) > MAX_ARCHIVE_FILES:
            raise _refuse(f"holds more than {MAX_ARCHIVE_FILES} files")
        if sum(m.file_size for m in members) > max_bytes:
            raise _refuse(f"unpacks to more than {max_bytes // 1024} KiB")
        names: dict[str, zipfile.ZipInfo] = {}
        for member in members:
            name = member.filename.rsplit("/", 1)[-1]
            if not name or name.startswith(".") or _BAD_NAME.search(name) or len(name) > 120:
                raise _refuse(f"{member.filename!r}: not a plain file name")
            if name in names:
                raise _refuse(f"{name!r} appears twice (folders are not kept)")
            names[name] = member
        folder_id = secrets.token_hex(8)
        folder = interface_files_dir() / folder_id
        folder.mkdir(mode=0o700)
        try:
            for name, member in names.items():
                with archive.open(member) as src, open(folder / name, "xb") as out:
                    shutil.copyfileobj(src, out)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
    return folder_id


def files_folder(folder_id: str) -> Path:
    """The folder of an unpacked archive, by its id."""
    if _ID_RE.fullmatch(folder_id or ""):
        path = interface_files_dir() / folder_id
        if path.is_dir():
            return path
    raise NotFoundError("attachment archive", folder_id)

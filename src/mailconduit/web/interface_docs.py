"""Interface documents as the console shows and takes them: files it keeps are named by
reference (``upload``: an upload's ``id/name``; ``files``: an archive's id), never by their
path on the server; files under the operator's data folders keep their paths."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastapi.responses import Response

from mailconduit.errors import ConfigError, FieldError, NotFoundError
from mailconduit.home import uploads_dir
from mailconduit.interfaces import service, store
from mailconduit.interfaces.files import files_folder
from mailconduit.interfaces.model import Interface, interface_files_dir
from mailconduit.web.uploads import resolve_upload

__all__ = ["UPLOAD_FILES", "stored_document", "web_document", "yaml_download"]

#: ``export.files`` naming the files uploaded beside the data file (as the export form keeps them).
UPLOAD_FILES = "upload"


def _inside(path: str, folder: Path) -> Path | None:
    """``path`` relative to ``folder`` when it lies inside it."""
    try:
        return Path(path).resolve().relative_to(folder.resolve())
    except (ValueError, OSError):
        return None


def web_document(interface: Interface) -> dict[str, Any]:
    """The interface's document with its kept files named by reference."""
    doc = interface.to_document()
    export = dict(doc["export"])
    source = export.get("source")
    if not interface.is_query and isinstance(source, str):
        rel = _inside(source, uploads_dir())
        if rel is not None:
            del export["source"]
            export["upload"] = rel.as_posix()
    folder = export.get("attach_dir")
    if isinstance(folder, str):
        rel = _inside(folder, interface_files_dir())
        if rel is not None:
            del export["attach_dir"]
            export["files"] = rel.as_posix()
        elif _inside(folder, uploads_dir()) is not None:
            del export["attach_dir"]
            export["files"] = UPLOAD_FILES
    doc["export"] = export
    return doc


def _upload_path(upload: str, export: Mapping[str, Any]) -> str | None:
    """The data file an upload reference names (None: no such upload)."""
    try:
        return str(resolve_upload(upload).path)
    except ConfigError:
        return None


def _files_path(files: str, export: Mapping[str, Any]) -> str | None:
    """The folder an archive reference names: ``upload`` for the files uploaded beside the
    data file (None: no such archive)."""
    if files == UPLOAD_FILES and isinstance(export.get("source"), str):
        return str(Path(export["source"]).parent / "files")
    try:
        return str(files_folder(files))
    except NotFoundError:
        return None


#: The references a console document may hold, in the order they are turned into paths (the
#: files of an upload lie beside its data file): the reference, the setting it stands for, the
#: lookup of its path, what the two are called, what an unknown reference is.
_REFERENCES = (
    ("upload", "source", _upload_path, "an upload or a source", "no uploaded file"),
    ("files", "attach_dir", _files_path, "an archive or attach_dir", "no attachment archive"),
)


def stored_document(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A document from the console with its references turned back into the files' paths."""
    out = dict(doc)
    export = out.get("export")
    if not isinstance(export, Mapping):
        return out
    export = dict(export)
    errors: list[FieldError] = []
    for key, setting, path_of, both, unknown in _REFERENCES:
        ref = export.pop(key, None)
        if ref is None:
            continue
        if export.get(setting):
            errors.append(FieldError(f"export.{key}", f"give {both}, not both"))
            continue
        path = path_of(str(ref), export)
        if path is None:
            errors.append(FieldError(f"export.{key}", f"{unknown} {ref!r}"))
        else:
            export[setting] = path
    if errors:
        raise ConfigError.for_fields("interface", errors)
    out["export"] = export
    return out


def yaml_download(name: str) -> Response:
    """The saved interface ``name`` as a YAML file to download (uploads named by reference)."""
    text = service.interface_to_yaml(web_document(store.get_interface(name)))
    return Response(
        text,
        media_type="application/yaml; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.yaml"'},
    )

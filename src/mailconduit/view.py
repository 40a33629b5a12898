"""What a value object shows a person, a page or the REST API: the fields it names, as JSON.

The fields are always named one by one (never "every attribute"), so a field added to a
record reaches a browser only when someone adds it to the list it is shown by. Imports
nothing of ours.
"""

from __future__ import annotations

import datetime as dt
from pathlib import PurePath
from typing import Any, ClassVar

__all__ = ["Record", "Shown", "plain", "view"]

#: The fields a view shows, in order: an attribute shown under its own name, or a pair
#: (key, attribute) for one shown under another name.
Shown = tuple[str | tuple[str, str], ...]


def view(value: object, shown: Shown) -> dict[str, Any]:
    """The fields ``shown`` of ``value``, each made :func:`plain`."""
    out: dict[str, Any] = {}
    for entry in shown:
        key, attribute = (entry, entry) if isinstance(entry, str) else entry
        out[key] = plain(getattr(value, attribute))
    return out


class Record:
    """A value object whose ``to_dict`` shows the fields it names in ``_SHOWN``."""

    __slots__ = ()
    _SHOWN: ClassVar[Shown] = ()

    def to_dict(self) -> dict[str, Any]:
        return view(self, self._SHOWN)


def plain(value: Any) -> Any:
    """``value`` as JSON writes it: tuples as lists, times in ISO 8601, paths as strings,
    mappings copied, a :class:`Record` as its dict."""
    if isinstance(value, tuple):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Record):
        return value.to_dict()
    return value

"""The store's foundation: its tables, its engine and the SQLite settings every opener shares.

Importing the package stays cheap: :mod:`mailconduit.db.sqlite` (used by the journal on the
send path) needs no SQLAlchemy, so the names below load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailconduit.db.engines import dispose_all, engine
    from mailconduit.db.tables import metadata

__all__ = ["dispose_all", "engine", "metadata"]

_HOMES = {"dispose_all": "engines", "engine": "engines", "metadata": "tables"}


def __getattr__(name: str) -> Any:
    module = _HOMES.get(name)
    if module is None:
        raise AttributeError(name)
    return getattr(importlib.import_module(f"mailconduit.db.{module}"), name)

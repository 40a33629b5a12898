"""mailconduit: deliver rows of data as e-mail through an SMTP server.

``mailconduit.export(source, connection=..., to=..., subject=..., body=...)`` and
``mailconduit.resume(run_id)`` are the Python API (:mod:`mailconduit.api`). They are
imported on first use, so ``import mailconduit.errors`` does not load the whole stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "export", "resume"]

if TYPE_CHECKING:
    from mailconduit.api import export, resume

_LAZY = frozenset({"export", "resume"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from mailconduit import api

        return getattr(api, name)
    raise AttributeError(f"module 'mailconduit' has no attribute {name!r}")

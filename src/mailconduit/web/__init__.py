"""The web console and REST API (``mailconduit serve``): FastAPI, Jinja2 pages, no JS build step.

Importing this package stays cheap (nothing is imported until ``create_app`` is asked for);
the FastAPI application lives in :mod:`mailconduit.web.app`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from mailconduit.web.app import create_app

        return create_app
    raise AttributeError(name)

"""What every route of the console depends on: the :class:`Console` (settings, templates,
network policy, clock) and the FastAPI dependency that hands it to a route.

Below the routers and :mod:`.app`: the routers import this, the app builds a Console and
includes the routers, so nothing in web/ imports back up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import jinja2
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from starlette.templating import Jinja2Templates

from mailconduit import __version__
from mailconduit.config import text_limit
from mailconduit.netpolicy import NetworkPolicy
from mailconduit.web.security import WebSettings

__all__ = ["Console", "StateDep", "console", "templates"]

TEMPLATES_DIR = Path(__file__).parent / "templates"


@dataclass(slots=True, kw_only=True, eq=False)
class Console:
    """What the routes share: settings, templates, the network policy and the wall clock
    (sign-in limits read it; tests hold it still)."""

    settings: WebSettings
    policy: NetworkPolicy
    templates: Jinja2Templates
    run_sink: bool
    clock: Callable[[], float] = time.time

    def render(
        self, request: Request, template: str, *, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        """A page with the signed-in user and the CSRF token its forms need."""
        session = getattr(request.state, "session", None)
        context.setdefault("user", getattr(request.state, "user", None))
        context.setdefault("csrf_token", session.csrf_token if session is not None else "")
        context.setdefault("version", __version__)
        context.setdefault("notice", "")
        return self.templates.TemplateResponse(request, template, context, status_code=status_code)


def console(request: Request) -> Console:
    """The :class:`Console` of the app serving ``request`` (a FastAPI dependency)."""
    instance: Console = request.app.state.console
    return instance


#: A route's parameter that receives the :class:`Console`.
StateDep = Annotated[Console, Depends(console)]


def templates() -> Jinja2Templates:
    """The console's Jinja2 templates: autoescaped, strict about undefined names."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["text_limit"] = text_limit  # maxlength of inputs, from the one table of caps
    return Jinja2Templates(env=env)

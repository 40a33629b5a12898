"""The FastAPI application of the console: pages, REST API, static files, error pages.

:func:`create_app` builds one; ``mailconduit serve`` runs it with uvicorn. Connections,
tests, exports and runs go through :mod:`mailconduit.api`, so the console and the CLI share
every rule; accounts, uploads and the inbox are read from their own layers.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from mailconduit import __version__
from mailconduit.errors import ConfigError, MailconduitError, NotFoundError, SourceError
from mailconduit.netpolicy import NetworkPolicy, current_policy
from mailconduit.web import interface_api, pages, rest
from mailconduit.web.console import Console, templates
from mailconduit.web.responses import field_errors_json
from mailconduit.web.security import (
    DEFAULT_MAX_UPLOAD_BYTES,
    LOCAL_HOSTS,
    AccessMiddleware,
    WebSettings,
    is_api_path,
    load_secret_key,
)
from mailconduit.web.uploads import public_text

__all__ = ["create_app"]

log = logging.getLogger("mailconduit.web")
HERE = Path(__file__).parent


def create_app(
    *,
    secret_key: bytes | None = None,
    allowed_hosts: tuple[str, ...] | list[str] = LOCAL_HOSTS,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    secure_cookies: bool = False,
    network_policy: NetworkPolicy | None = None,
    run_sink: bool = False,
    forwarded_allow_ips: tuple[str, ...] = (),
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """Build the console application.

    ``secret_key`` signs cookies (default: the 0600 key file under MAILCONDUIT_HOME);
    ``allowed_hosts`` are the host names the Host header may carry ("*" for any);
    ``network_policy`` guards Test Connection and exports (default: from the environment);
    ``run_sink`` keeps the embedded SMTP server running while the app runs;
    ``forwarded_allow_ips`` are the proxies (addresses or networks) whose X-Forwarded-For and
    X-Forwarded-Proto are believed; from anyone else those headers are ignored;
    ``clock`` is the wall clock the sign-in limits read.
    """
    settings = WebSettings(
        secret_key=secret_key if secret_key is not None else load_secret_key(),
        allowed_hosts=tuple(h.lower().strip("[]") for h in allowed_hosts),
        max_upload_bytes=max_upload_bytes,
        secure_cookies=secure_cookies,
    )
    state = Console(
        settings=settings,
        policy=network_policy if network_policy is not None else current_policy(),
        templates=templates(),
        run_sink=run_sink,
        clock=clock,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with _sink_for(state):
            yield

    app = FastAPI(
        title="mailconduit console API",
        version=__version__,
        description=(
            "Connections (the SMTP Data Provider), Test Connection, exports, runs and the "
            "local inbox. Authenticate with 'Authorization: Bearer TOKEN' (mailconduit users "
            "token NAME). Passwords are write-only: no response contains one."
        ),
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.state.console = state

    app.include_router(rest.router)
    app.include_router(interface_api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    _install_error_handlers(app, state)
    app.add_middleware(AccessMiddleware, settings=settings)
    if forwarded_allow_ips:  # outermost: the rest sees the client the proxy names
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(forwarded_allow_ips))
    return app


@contextlib.contextmanager
def _sink_for(state: Console) -> Iterator[None]:
    """Keep the embedded SMTP server up while the console runs, when asked to."""
    if not state.run_sink:
        yield
        return
    from mailconduit.sink import ensure_running

    with contextlib.ExitStack() as stack:
        try:
            info = stack.enter_context(ensure_running())
        except (MailconduitError, OSError, TimeoutError) as exc:
            log.warning(
                "the local SMTP server could not start (%s); the inbox shows what it has", exc
            )
        else:
            log.info("local SMTP server on %s:%s", info.host, info.port)
        yield


def _install_error_handlers(app: FastAPI, state: Console) -> None:
    def page_error(request: Request, status: int, title: str, message: str) -> Response:
        return state.render(request, "error.html", status_code=status, title=title, message=message)

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, exc: NotFoundError) -> Response:
        if is_api_path(request.url.path):
            return JSONResponse({"detail": exc.message}, status_code=404)
        return page_error(request, 404, "Not found", exc.message)

    @app.exception_handler(ConfigError)
    async def config_error(request: Request, exc: ConfigError) -> Response:
        if is_api_path(request.url.path):
            return JSONResponse(field_errors_json(exc), status_code=422)
        return page_error(request, 422, "Invalid settings", public_text(str(exc)))

    @app.exception_handler(SourceError)
    async def source_error(request: Request, exc: SourceError) -> Response:
        text = public_text(" ".join(str(exc).split()))
        if is_api_path(request.url.path):
            detail = [{"loc": ["body"], "msg": text, "type": "value_error"}]
            return JSONResponse({"detail": detail, "message": text}, status_code=422)
        return page_error(request, 422, "The data cannot be used", text)

    @app.exception_handler(MailconduitError)
    async def operation_error(request: Request, exc: MailconduitError) -> Response:
        text = public_text(" ".join(str(exc).split()))
        if is_api_path(request.url.path):
            return JSONResponse({"detail": text}, status_code=409)
        return page_error(request, 409, "The operation failed", text)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if is_api_path(request.url.path):
            return JSONResponse(
                {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
            )
        titles = {403: "Refused", 404: "Not found", 405: "Not allowed", 413: "Too large"}
        return page_error(
            request, exc.status_code, titles.get(exc.status_code, "Error"), str(exc.detail)
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        detail = [
            {
                "loc": list(e.get("loc", ())),
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in exc.errors()
        ]
        if is_api_path(request.url.path):
            return JSONResponse({"detail": detail}, status_code=422)
        text = "; ".join(f"{'.'.join(map(str, d['loc'][1:]))}: {d['msg']}" for d in detail)
        return page_error(request, 422, "Invalid request", text)

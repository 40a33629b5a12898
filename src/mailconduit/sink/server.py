"""The sink's SMTP service: aiosmtpd on loopback with STARTTLS, AUTH and durable storage.

One sink runs per home. :func:`serve_forever` runs it in the foreground (the
``mailconduit sink`` command); :func:`ensure_running` runs it in a background
thread for the duration of a command that uses the ``local`` connection, unless
one is already running.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import logging
import os
import signal
import ssl
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, TLSSetupException

from mailconduit.errors import ConfigError, FieldError
from mailconduit.home import sink_dir
from mailconduit.sink.certs import ensure_certificates, server_tls_context
from mailconduit.sink.credentials import SinkCredentials, ensure_credentials
from mailconduit.sink.files import directory_lock
from mailconduit.sink.serving import PipeliningHandler, ServerThread, close_listeners
from mailconduit.sink.state import (
    HOST,
    PORT_VARIABLE,
    SinkInfo,
    configured_port,
    remove_state,
    running_sink,
    write_state,
)
from mailconduit.sink.store import MailboxWriter

__all__ = ["MAX_MESSAGE_SIZE", "SinkServer", "ensure_running", "serve_forever"]

log = logging.getLogger("mailconduit.sink")

#: Largest message accepted (advertised as SIZE).
MAX_MESSAGE_SIZE = 25 * 1024 * 1024
#: How long starting or stopping a background sink may take before we give up.
START_STOP_TIMEOUT = 30.0
SERVER_NAME = "localhost"


class _SinkSession(Session):
    """aiosmtpd's session without the deprecation warning it logs on every AUTH."""

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class _SinkSMTP(SMTP):
    def _create_session(self) -> Session:
        return _SinkSession(self.loop)


class _SinkHandler(PipeliningHandler):
    """aiosmtpd hooks: advertise PIPELINING, store each message before answering 250."""

    def __init__(self, writer: MailboxWriter) -> None:
        self._writer = writer

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        try:
            message_id = await self._writer.store(
                content,
                envelope_from=envelope.mail_from or "",
                envelope_recipients=envelope.rcpt_tos,
                smtputf8=envelope.smtp_utf8,
            )
        except Exception as exc:  # the store logged the cause; the client may retry
            log.warning("a message from <%s> was not stored: %s", envelope.mail_from or "", exc)
            return "451 4.3.0 the sink could not store the message; try again later"
        log.info(
            "stored message %d from <%s> to %s (%d bytes)",
            message_id,
            envelope.mail_from or "",
            ", ".join(f"<{r}>" for r in envelope.rcpt_tos),
            len(content),
        )
        return f"250 2.0.0 OK stored as message {message_id}"

    async def handle_exception(self, error: Exception) -> str:
        """A session failed (often a client giving up on TLS): one log line, no traceback."""
        if isinstance(error, TLSSetupException):
            log.info("a client's TLS handshake failed: %s", error.__cause__ or error)
        else:
            log.warning("sink session error: %s: %s", type(error).__name__, error)
        return "451 4.3.0 the sink hit an internal error; try again later"


def _authenticator(
    credentials: SinkCredentials,
) -> Callable[[SMTP, Session, Envelope, str, Any], AuthResult]:
    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        accepted = isinstance(auth_data, LoginPassword) and credentials.accepts(
            auth_data.login, auth_data.password
        )
        return AuthResult(success=accepted, handled=False)

    return authenticate


def _port_error(port: int, exc: OSError) -> ConfigError:
    if exc.errno == errno.EADDRINUSE:
        reason = (
            f"port {port} on {HOST} is already in use by another program; stop it or "
            f"choose another port with --port or {PORT_VARIABLE}"
        )
    else:
        reason = f"cannot listen on {HOST} port {port}: {exc.strerror or exc}"
    return ConfigError(reason, (FieldError("port", reason),))


class SinkServer:
    """The SMTP service of one sink directory, on 127.0.0.1 (and ::1 when available).

    STARTTLS with the sink's own certificate is required before anything else, AUTH
    (PLAIN, LOGIN) is accepted only after it and required before MAIL. Every message
    is stored before the 250 reply to its DATA; with ``fsync`` it is also flushed to
    the device (see :class:`~mailconduit.sink.store.MailboxWriter`).
    """

    def __init__(self, *, port: int, directory: Path | None = None, fsync: bool = False) -> None:
        self.port = port
        self.directory = directory if directory is not None else sink_dir()
        self.fsync = fsync
        self.info: SinkInfo | None = None
        self._servers: list[asyncio.Server] = []
        self._sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()
        self._writer: MailboxWriter | None = None

    async def start(self) -> SinkInfo:
        """Listen and write sink.json; ConfigError if a sink already runs or the port is taken."""
        with directory_lock(self.directory):
            existing = running_sink(self.directory)
            if existing is not None:
                reason = (
                    f"a sink is already running for this home (pid {existing.pid}, "
                    f"{existing.host}:{existing.port}); use it, or stop it first"
                )
                raise ConfigError(reason, (FieldError("sink", reason),))
            credentials = ensure_credentials(self.directory)
            tls_context = server_tls_context(ensure_certificates(self.directory))
            self._writer = MailboxWriter(self.directory, fsync=self.fsync)
            try:
                port = await self._listen(credentials, tls_context)
            except BaseException:
                await self._writer.close()
                self._writer = None
                raise
            self.info = SinkInfo(
                pid=os.getpid(), host=HOST, port=port, started=dt.datetime.now(dt.UTC)
            )
            write_state(self.directory, self.info)
        return self.info

    async def _listen(self, credentials: SinkCredentials, tls_context: ssl.SSLContext) -> int:
        loop = asyncio.get_running_loop()
        assert self._writer is not None
        handler = _SinkHandler(self._writer)
        authenticator = _authenticator(credentials)

        def session() -> SMTP:
            smtp = _SinkSMTP(
                handler,
                data_size_limit=MAX_MESSAGE_SIZE,
                enable_SMTPUTF8=True,
                hostname=SERVER_NAME,
                ident="mailconduit sink",
                tls_context=tls_context,
                require_starttls=True,
                auth_required=True,
                auth_require_tls=True,
                authenticator=authenticator,
                loop=loop,
            )
            self._sessions.add(smtp)
            return smtp

        try:
            ipv4 = await loop.create_server(session, HOST, self.port)
        except OSError as exc:
            raise _port_error(self.port, exc) from None
        self._servers.append(ipv4)
        port = int(ipv4.sockets[0].getsockname()[1])
        try:  # best effort: a machine without IPv6 loopback still gets a working sink
            self._servers.append(await loop.create_server(session, "::1", port))
        except OSError:
            log.info("sink: ::1 port %d not available; listening on %s only", port, HOST)
        return port

    async def stop(self) -> None:
        """Stop listening, end open sessions, finish pending writes, remove sink.json."""
        if self.info is not None:
            remove_state(self.directory, self.info)
        await close_listeners(self._servers, self._sessions, timeout=START_STOP_TIMEOUT)
        self._servers.clear()
        if self._writer is not None:
            await self._writer.close()
            self._writer = None


async def _run(
    *,
    port: int,
    directory: Path,
    fsync: bool,
    stop: asyncio.Event,
    ready: Callable[[SinkInfo], None],
) -> None:
    server = SinkServer(port=port, directory=directory, fsync=fsync)
    info = await server.start()
    try:
        ready(info)
        await stop.wait()
    finally:
        await server.stop()


def serve_forever(
    *,
    port: int | None = None,
    fsync: bool = False,
    ready: Callable[[SinkInfo], None] | None = None,
) -> None:
    """Run the sink in this thread until SIGINT or SIGTERM, then stop it cleanly.

    ``ready`` is called once the sink listens (the CLI prints where it is).
    """

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, stop.set)
        await _run(
            port=configured_port() if port is None else port,
            directory=sink_dir(),
            fsync=fsync,
            stop=stop,
            ready=ready or (lambda info: None),
        )

    asyncio.run(main())


def _background_sink(*, port: int, directory: Path) -> ServerThread[SinkInfo]:
    """A sink on its own event loop in a daemon thread, for the life of one command."""
    server = SinkServer(port=port, directory=directory, fsync=False)

    def failed(exc: BaseException) -> None:
        log.error("the local sink stopped with an error", exc_info=exc)

    return ServerThread(
        server.start,
        server.stop,
        what="the local sink",
        name="mailconduit-sink",
        timeout=START_STOP_TIMEOUT,
        on_error=failed,
    )


@contextlib.contextmanager
def ensure_running(*, port: int | None = None) -> Iterator[SinkInfo]:
    """Make sure this home's sink runs for the duration of the ``with`` block.

    If one is running (another process, or an outer ``ensure_running``), use it and
    do nothing else; otherwise start one in a background thread on ``port`` (default:
    MAILCONDUIT_SINK_PORT or 1025) and stop it cleanly when the block ends.
    """
    directory = sink_dir()
    existing = running_sink(directory)
    if existing is not None:
        yield existing
        return
    background = _background_sink(
        port=configured_port() if port is None else port, directory=directory
    )
    try:
        info = background.begin()
    except ConfigError:
        # Another process may have started this home's sink since we looked.
        existing = running_sink(directory)
        if existing is None:
            raise
    else:
        try:
            yield info
        finally:
            if not background.end():
                log.warning("the local sink did not stop within %.0f s", START_STOP_TIMEOUT)
        return
    yield existing

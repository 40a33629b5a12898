"""A fault-injecting SMTP server for tests, built on aiosmtpd (shipped for users too).

Start it on 127.0.0.1 port 0 in your own event loop (``async with FaultServer() as
server``) or in a background thread (``with FaultServer() as server``), point a
client at ``server.port``, then read ``server.messages`` and ``server.sessions``.

Options choose what the server offers: implicit TLS (``tls_context``), STARTTLS
(``starttls_context``), AUTH with given credentials and mechanisms (PLAIN, LOGIN,
CRAM-MD5, XOAUTH2), PIPELINING, SMTPUTF8, 8BITMIME, SIZE.

Faults are scripted per command and occurrence::

    FaultServer(faults={
        ("RCPT", 3): "452 4.5.3 too many recipients",   # the 3rd RCPT of the server's life
        ("DATA", 1): "421 4.7.0 slow down",             # 421 also closes the connection
        ("MAIL", 2): "drop",                            # close without answering
        ("DOT", 5): "drop",                             # 5th message read, never answered
        ("EHLO", 1): "delay:2.0",                       # answer normally, 2 s late
        ("BANNER", "*"): "hang",                        # accept TCP, never greet
    })

Commands are ``BANNER`` (the greeting, once per connection), ``EHLO``, ``HELO``,
``STARTTLS``, ``AUTH``, ``MAIL``, ``RCPT``, ``DATA`` (the 354), ``DOT`` (the reply to
the final "." after the message was read), ``RSET``, ``NOOP``, ``QUIT``.
Occurrences count from 1 across all sessions of the server; ``"*"`` means every one.

A fault is a string of steps separated by ";", run in order:

``NNN text``
    answer with this reply instead of running the command (a reply starting with 421
    also closes the connection afterwards, as real servers do, unless a step follows);
``delay:S``
    wait S seconds (then the next step, or the normal answer if it is the last one);
``drop``
    close the connection without answering;
``hang``
    never answer (the connection stays open until the client gives up);
``garbage``
    send bytes that are not an SMTP reply.

E.g. ``"delay:1.5; 451 4.3.0 try later"`` or ``"220 2.0.0 go ahead; drop"`` (STARTTLS
agreed, then the connection closes).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import hashlib
import hmac
import json
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from mailconduit.sink.serving import ContextServer

__all__ = [
    "GARBAGE",
    "Fault",
    "FaultServer",
    "ReceivedMessage",
    "ServerSession",
]

#: What ``garbage`` sends: a TLS alert record followed by binary junk.
GARBAGE: Final = b"\x15\x03\x03\x00\x02\x02\x28\xff\xfe\x00 not smtp \x80\x81\r\n"
COMMANDS: Final = frozenset(
    {
        "BANNER",
        "EHLO",
        "HELO",
        "STARTTLS",
        "AUTH",
        "MAIL",
        "RCPT",
        "DATA",
        "DOT",
        "RSET",
        "NOOP",
        "QUIT",
    }
)
ALL_MECHANISMS: Final = ("PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2")


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a fault: ``delay``, ``reply``, ``drop``, ``hang`` or ``garbage``."""

    kind: str
    value: str = ""
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Fault:
    """A scripted misbehaviour for one command occurrence (see the module docstring)."""

    steps: tuple[Step, ...]

    @classmethod
    def parse(cls, spec: str | Fault) -> Fault:
        if isinstance(spec, Fault):
            return spec
        steps: list[Step] = []
        for raw in spec.split(";"):
            text = raw.strip()
            if not text:
                continue
            lowered = text.lower()
            if steps and steps[-1].kind in ("drop", "hang"):
                raise ValueError(f"nothing can follow {steps[-1].kind!r} in fault {spec!r}")
            if lowered.startswith("delay:"):
                seconds = float(lowered[6:])
                if seconds < 0:
                    raise ValueError(f"negative delay in fault {spec!r}")
                steps.append(Step("delay", seconds=seconds))
            elif lowered in ("drop", "hang", "garbage"):
                steps.append(Step(lowered))
            elif len(text) >= 3 and text[:3].isdigit() and (len(text) == 3 or text[3] in " -"):
                steps.append(Step("reply", value=text))
            else:
                raise ValueError(
                    f"cannot understand fault step {text!r}: use 'NNN text', 'delay:S', 'drop', "
                    "'hang' or 'garbage'"
                )
        if not steps:
            raise ValueError("an empty fault does nothing")
        return cls(tuple(steps))


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A message the server accepted: its envelope and the exact bytes (dot-unstuffed)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    mail_options: tuple[str, ...]
    session: int
    smtputf8: bool = False


@dataclass(slots=True)
class ServerSession:
    """One client connection as the server saw it."""

    number: int
    peer: Any
    commands: list[str] = field(default_factory=list)
    reads: list[bytes] = field(default_factory=list)
    tls: bool = False
    authenticated_as: str = ""
    closed: bool = False

    def commands_per_read(self) -> list[int]:
        """How many command lines each read carried (pipelining shows as > 1).

        A line counts when it starts with an SMTP verb, so message content that
        happens to hold such lines counts too: send plain content when you test this.
        """
        counts = []
        for chunk in self.reads:
            lines = chunk.split(b"\n")
            counts.append(sum(1 for line in lines if line[:4].upper() in _VERBS))
        return counts


_VERBS: Final = frozenset(
    {b"EHLO", b"HELO", b"STAR", b"AUTH", b"MAIL", b"RCPT", b"DATA", b"RSET", b"NOOP", b"QUIT"}
)
_PASS: Final = object()
_HANDLED: Final = object()


class _Handler:
    """aiosmtpd hooks: EHLO capabilities, message recording, CRAM-MD5 and XOAUTH2."""

    def __init__(self, owner: FaultServer) -> None:
        self.owner = owner

    async def handle_EHLO(
        self,
        server: _FaultySMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        owner = self.owner
        keep = []
        for line in responses[1:]:
            cap = line[4:]
            if cap.startswith("AUTH") or cap == "HELP":
                continue
            if cap == "8BITMIME" and not owner.eightbitmime:
                continue
            keep.append(cap)
        if owner.pipelining:
            keep.append("PIPELINING")
        if owner.enhanced_status_codes:
            keep.append("ENHANCEDSTATUSCODES")
        if owner.advertises_auth(server.secure):
            keep.append("AUTH " + " ".join(owner.auth_mechanisms))
        keep.extend(owner.extra_capabilities)
        if not keep:
            return [f"250 {server.hostname}"]
        lines = [f"250-{server.hostname}"] + [f"250-{cap}" for cap in keep]
        lines[-1] = "250 " + lines[-1][4:]
        return lines

    async def handle_DATA(self, server: _FaultySMTP, session: Session, envelope: Envelope) -> str:
        owner = self.owner
        fault = owner.next_fault("DOT")
        reply = "250 2.0.0 OK: queued"
        if fault is not None:
            outcome = await server.run_fault(fault, return_last_reply=True)
            if isinstance(outcome, str):
                reply = outcome
            elif outcome is _HANDLED:
                return reply  # unreachable in practice: drop/hang never return
        if reply.startswith("2"):
            owner.record(server, envelope)
        return reply

    async def auth_CRAM__MD5(self, server: _FaultySMTP, args: list[str]) -> AuthResult:
        nonce = f"<{secrets.token_hex(8)}.{int(time.time())}@{server.hostname}>"
        response = await server.challenge_auth(nonce)
        if not isinstance(response, bytes):
            return AuthResult(success=False, handled=True)
        user, _, digest = response.decode("utf-8", "replace").rpartition(" ")
        password = self.owner.credentials.get(user)
        if password is not None:
            expected = hmac.new(password.encode(), nonce.encode(), hashlib.md5).hexdigest()
            if hmac.compare_digest(expected, digest):
                return self.owner.login_ok(server, user)
        return AuthResult(success=False, handled=False)

    async def auth_XOAUTH2(self, server: _FaultySMTP, args: list[str]) -> AuthResult:
        login = await read_xoauth2(server, args)
        if login is None:
            return AuthResult(success=False, handled=True)
        user, token = login
        expected = self.owner.credentials.get(user)
        if expected is not None and hmac.compare_digest(expected, token):
            return self.owner.login_ok(server, user)
        error = json.dumps({"status": "401", "schemes": "bearer", "scope": "https://mail.example/"})
        await server.challenge_auth(error)  # the client answers with an empty line
        return AuthResult(success=False, handled=False)


async def read_xoauth2(server: SMTP, args: list[str]) -> tuple[str, str] | None:
    """(user, bearer token) of an ``AUTH XOAUTH2``, from its initial response or from the
    answer to an empty challenge; None when there is none or it is not base64 (then the 501
    has been sent). ``user=U^Aauth=Bearer T^A^A``: a part that is absent reads as ''."""
    if len(args) > 1:
        try:
            blob = base64.b64decode(args[1], validate=True)
        except (binascii.Error, ValueError):
            await server.push("501 5.5.2 Cannot decode base64")
            return None
    else:
        answer = await server.challenge_auth("")
        if not isinstance(answer, bytes):  # MISSING: the client cancelled
            return None
        blob = answer
    fields = dict(
        part.split("=", 1) for part in blob.decode("utf-8", "replace").split("\x01") if "=" in part
    )
    auth = fields.get("auth", "")
    token = auth[7:] if auth[:7].lower() == "bearer " else ""
    return fields.get("user", ""), token


class _FaultySMTP(SMTP):
    """aiosmtpd's SMTP with per-command faults, session records and our AUTH rules."""

    def __init__(self, owner: FaultServer, **kwargs: Any) -> None:
        self.owner = owner
        self.session_record: ServerSession | None = None
        super().__init__(_Handler(owner), **kwargs)
        self._smtp_methods = {
            name: self._wrap(name, method) for name, method in self._smtp_methods.items()
        }

    @property
    def secure(self) -> bool:
        transport = self.transport
        return self._tls_protocol is not None or (
            transport is not None and transport.get_extra_info("ssl_object") is not None
        )

    def _wrap(
        self, name: str, method: Callable[[str | None], Awaitable[None]]
    ) -> Callable[[str | None], Awaitable[None]]:
        owner = self.owner

        async def run(arg: str | None) -> None:
            if self.session_record is not None:
                # AUTH without its payload (only ``reads`` keep the raw bytes)
                if name == "AUTH":
                    shown = f"AUTH {arg.split()[0]}" if arg else "AUTH"
                else:
                    shown = f"{name} {arg or ''}".rstrip()
                self.session_record.commands.append(shown)
            fault = owner.next_fault(name) if name in COMMANDS else None
            if fault is not None and await self.run_fault(fault, command=name) is not _PASS:
                return
            if name == "AUTH" and not await self._auth_allowed():
                return
            if name == "MAIL" and owner.requires_auth and not self.session.authenticated:  # type: ignore[union-attr]
                await self.push("530 5.7.0 Authentication required")
                return
            await method(arg)

        return run

    async def _auth_allowed(self) -> bool:
        owner = self.owner
        if not owner.credentials:
            await self.push("502 5.5.1 AUTH not available")
            return False
        if owner.auth_require_tls and not self.secure:
            await self.push("538 5.7.11 Encryption required for requested authentication mechanism")
            return False
        return True

    async def run_fault(
        self, fault: Fault, *, command: str = "", return_last_reply: bool = False
    ) -> object:
        """Play a fault; returns _PASS (go on normally), _HANDLED, or the last reply's text."""
        handled: object = _PASS
        last = len(fault.steps) - 1
        for index, step in enumerate(fault.steps):
            if step.kind == "delay":
                await asyncio.sleep(step.seconds)
            elif step.kind == "reply":
                closing = step.value.startswith("421") and index == last
                if return_last_reply and index == last and not closing:
                    return step.value
                await self.push(step.value)
                handled = _HANDLED
                if command == "DATA" and step.value.startswith("354"):
                    await self._scripted_data()
                if closing:
                    await self._drop()
            elif step.kind == "garbage":
                self._writer.write(GARBAGE)
                handled = _HANDLED
            elif step.kind == "drop":
                await self._drop()
            elif step.kind == "hang":
                await asyncio.Event().wait()
        return handled

    async def _scripted_data(self) -> None:
        """After a scripted 354: read the message like a server in DATA state, then answer
        as Postfix does for a transaction without valid recipients (or accept it)."""
        lines = []
        while True:
            line = await self._reader.readuntil(b"\r\n")
            if line == b".\r\n":
                break
            lines.append(line[1:] if line.startswith(b".") else line)
        envelope = self.envelope
        if envelope is None or not envelope.rcpt_tos:
            await self.push("554 5.5.1 Error: no valid recipients")
        else:
            envelope.original_content = b"".join(lines)
            envelope.content = envelope.original_content
            await self.push(await self.event_handler.handle_DATA(self, self.session, envelope))
        self._set_post_data_state()  # type: ignore[no-untyped-call]

    async def _drop(self) -> None:
        if self.transport is not None:
            self.transport.close()
        await asyncio.Event().wait()  # cancelled when the connection is torn down

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        starttls = self._original_transport is not None
        super().connection_made(transport)
        if starttls:
            if self.session_record is not None:
                self.session_record.tls = True
            return
        self.session_record = self.owner.new_session(self, transport.get_extra_info("peername"))
        self.session_record.tls = transport.get_extra_info("ssl_object") is not None

    def connection_lost(self, error: Exception | None) -> None:
        if self.session_record is not None:
            self.session_record.closed = True
        self.owner.forget(self)
        super().connection_lost(error)

    def data_received(self, data: bytes) -> None:
        if self.session_record is not None:
            self.session_record.reads.append(bytes(data))
        super().data_received(data)

    async def _handle_client(self) -> None:
        fault = self.owner.next_fault("BANNER")
        if fault is not None:
            outcome = await self.run_fault(fault)
            if outcome is not _PASS:
                if self.transport is not None:
                    self.transport.close()
                return
        await super()._handle_client()


class FaultServer(ContextServer):
    """An aiosmtpd server on 127.0.0.1 with scripted faults and a record of what it received."""

    what = "the fault server"
    thread_name = "mailconduit-fault-server"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        hostname: str = "mx.mailconduit.test",
        tls_context: ssl.SSLContext | None = None,
        starttls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        credentials: Mapping[str, str] | None = None,
        auth_mechanisms: Sequence[str] = ALL_MECHANISMS,
        auth_require_tls: bool = False,
        auth_required: bool | None = None,
        pipelining: bool = True,
        smtputf8: bool = True,
        eightbitmime: bool = True,
        size_limit: int | None = None,
        enhanced_status_codes: bool = False,
        extra_capabilities: Sequence[str] = (),
        # (command, occurrence) keys: a number from 1 or "*", checked by set_fault; Any, since
        # a Mapping is invariant in its keys and a dict of only numbers is as good.
        faults: Mapping[tuple[str, Any], str | Fault] | None = None,
        idle_timeout: float = 60.0,
    ) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("the test server listens on loopback only")
        unknown = [m for m in auth_mechanisms if m.upper() not in ALL_MECHANISMS]
        if unknown:
            raise ValueError(f"unsupported AUTH mechanisms: {unknown}")
        self.host = host
        self.port = port
        self.hostname = hostname
        self.tls_context = tls_context
        self.starttls_context = starttls_context
        self.require_starttls = require_starttls
        self.credentials = dict(credentials or {})
        self.auth_mechanisms = tuple(m.upper() for m in auth_mechanisms)
        self.auth_require_tls = auth_require_tls
        self.requires_auth = bool(self.credentials) if auth_required is None else auth_required
        self.pipelining = pipelining
        self.smtputf8 = smtputf8
        self.eightbitmime = eightbitmime
        self.size_limit = size_limit
        self.enhanced_status_codes = enhanced_status_codes
        self.extra_capabilities = tuple(extra_capabilities)
        self.idle_timeout = idle_timeout
        self.messages: list[ReceivedMessage] = []
        self.sessions: list[ServerSession] = []
        self.occurrences: collections.Counter[str] = collections.Counter()
        self._faults: dict[tuple[str, int | str], Fault] = {}
        for (command, occurrence), spec in (faults or {}).items():
            self.set_fault(command, occurrence, spec)
        self._server: asyncio.base_events.Server | None = None
        self._live: set[_FaultySMTP] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None

    # -- configuration ----------------------------------------------------------
    def set_fault(self, command: str, occurrence: int | str, spec: str | Fault) -> None:
        """Script a fault (see the module docstring); replaces one set before."""
        name = command.upper()
        if name not in COMMANDS:
            raise ValueError(f"unknown command {command!r}; use one of {sorted(COMMANDS)}")
        if occurrence != "*" and not (isinstance(occurrence, int) and occurrence >= 1):
            raise ValueError("occurrence is a number from 1, or '*' for every time")
        self._faults[(name, occurrence)] = Fault.parse(spec)

    def clear_faults(self) -> None:
        self._faults.clear()

    def next_fault(self, command: str) -> Fault | None:
        """Count one more ``command`` and return the fault scripted for this occurrence."""
        self.occurrences[command] += 1
        count = self.occurrences[command]
        return self._faults.get((command, count)) or self._faults.get((command, "*"))

    def advertises_auth(self, secure: bool) -> bool:
        return (
            bool(self.credentials)
            and bool(self.auth_mechanisms)
            and (secure or not self.auth_require_tls)
        )

    # -- records ----------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def session_count(self) -> int:
        return len(self.sessions)

    def new_session(self, protocol: _FaultySMTP, peer: Any) -> ServerSession:
        self._live.add(protocol)
        record = ServerSession(number=len(self.sessions) + 1, peer=peer)
        self.sessions.append(record)
        self._notify()
        return record

    def forget(self, protocol: _FaultySMTP) -> None:
        self._live.discard(protocol)
        self._notify()

    def login_ok(self, server: _FaultySMTP, user: str) -> AuthResult:
        if server.session_record is not None:
            server.session_record.authenticated_as = user
        return AuthResult(success=True, auth_data=LoginPassword(user.encode(), b""))

    def record(self, server: _FaultySMTP, envelope: Envelope) -> None:
        content = envelope.original_content or b""
        self.messages.append(
            ReceivedMessage(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                data=bytes(content),
                mail_options=tuple(envelope.mail_options),
                session=server.session_record.number if server.session_record else 0,
                smtputf8=bool(envelope.smtp_utf8),
            )
        )
        self._notify()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def wait_for(self, predicate: Callable[[], bool], *, timeout: float = 5.0) -> None:
        """Wait in the server's loop until ``predicate()`` holds; TimeoutError after ``timeout``."""
        async with asyncio.timeout(timeout):
            while not predicate():
                if self._changed is None:
                    await asyncio.sleep(0.01)
                    continue
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await self._changed.wait()

    def wait_for_sync(self, predicate: Callable[[], bool], *, timeout: float = 5.0) -> None:
        """The same from another thread (a server started with ``with``)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            time.sleep(0.01)

    # -- running ----------------------------------------------------------------
    def _authenticator(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            user = data.login.decode("utf-8", "replace")
            expected = self.credentials.get(user)
            if expected is not None and hmac.compare_digest(expected.encode(), data.password):
                assert isinstance(server, _FaultySMTP)
                return self.login_ok(server, user)
        return AuthResult(success=False, handled=False)

    def _protocol(self) -> _FaultySMTP:
        loop = asyncio.get_running_loop()
        return _FaultySMTP(
            self,
            hostname=self.hostname,
            ident="mailconduit fault server",
            tls_context=self.starttls_context,
            require_starttls=self.require_starttls,
            data_size_limit=self.size_limit,
            enable_SMTPUTF8=self.smtputf8,
            decode_data=False,
            timeout=self.idle_timeout,
            auth_require_tls=False,
            auth_exclude_mechanism=[m for m in ALL_MECHANISMS if m not in self.auth_mechanisms],
            authenticator=self._authenticator,
            loop=loop,
        )

    async def start(self) -> None:
        """Listen (in the running loop); ``port`` is then the real port."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._changed = asyncio.Event()
        self._server = await loop.create_server(
            self._protocol, host=self.host, port=self.port, ssl=self.tls_context
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and close every open connection."""
        if self._server is not None:
            self._server.close()
            for protocol in list(self._live):
                if protocol.transport is not None:
                    protocol.transport.close()
                task = protocol._handler_coroutine
                if task is not None:
                    task.cancel()
            await self._server.wait_closed()
            await asyncio.sleep(0)
            self._server = None

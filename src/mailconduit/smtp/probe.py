"""Test Connection: connect stage by stage and say exactly what failed, why, and what to change.

Stages: ``token`` (an OAuth2 connection's access token, checked by the API first), ``dns`` (name resolution and the address policy), ``tcp``, ``tls`` (implicit TLS)
or ``starttls``, ``banner``, ``ehlo``, ``auth``, ``send`` (optional test message),
``quit``. A failed probe is data, a :class:`ProbeResult`, never an exception: the CLI,
the REST API and the web console all show the same words.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.policy
import ssl
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import ClassVar

from mailconduit.address import parse_mailbox
from mailconduit.config import AuthMechanism, Connection, Security
from mailconduit.errors import (
    AddressError,
    ConfigError,
    MailconduitError,
    NetworkPolicyError,
    SMTPError,
)
from mailconduit.smtp.auth import UnusableAuthError
from mailconduit.smtp.client import SMTPSession, Stage
from mailconduit.smtp.connect import AddressPolicy
from mailconduit.smtp.esmtp import Capabilities
from mailconduit.smtp.oauth_replies import xoauth2_hint
from mailconduit.smtp.replies import MalformedReplyError, ReplyParser
from mailconduit.smtp.tls import (
    CertificateInfo,
    TLSInfo,
    VerifyFailure,
    client_context,
    explain_verify_failure,
    verify_failure,
)
from mailconduit.smtp.transcript import Transcript
from mailconduit.view import Record, Shown

__all__ = ["ProbeResult", "probe", "token_failure"]

STAGES = ("token", "dns", "tcp", "tls", "banner", "ehlo", "starttls", "auth", "send", "quit")
#: When the greeting has not come after this share of timeout_ms, we start checking
#: (on a second connection) whether the port speaks implicit TLS instead.
_SNIFF_AFTER = 0.5
#: Longest extra wait for that check once the greeting has timed out (started early /
#: started only then).
_SNIFF_GRACE = 0.02
_SNIFF_SHARE = 0.1
_SNIFF_MAX = 2.0
#: Longest wait for a plaintext greeting on a second connection, after a failed TLS handshake.
_GREETING_SHARE = 0.5
_GREETING_MAX = 5.0
#: Most bytes read from that second connection while waiting for the greeting line.
_GREETING_BYTES = 8192
#: OpenSSL reasons that mean "the other side does not speak TLS".
_PLAINTEXT_REASONS = (
    "WRONG_VERSION_NUMBER",
    "UNKNOWN_PROTOCOL",
    "HTTP_REQUEST",
    "PACKET_LENGTH_TOO_LONG",
    "RECORD_LAYER_FAILURE",
)


@dataclass(frozen=True, slots=True)
class ProbeResult(Record):
    """What Test Connection found: success, or the failed stage with a message and a hint."""

    ok: bool
    stage: str  # the failed stage, or the last one done when ok
    message: str
    hint: str = ""
    host: str = ""
    port: int = 0
    security: str = ""
    passed: tuple[str, ...] = ()  # stages that succeeded, in order
    banner: str = ""
    capabilities: Capabilities | None = None
    tls: TLSInfo | None = None
    certificate: CertificateInfo | None = None  # the peer's, also when it was not trusted
    authenticated_as: str = ""
    elapsed_ms: int = 0
    transcript: tuple[str, ...] = field(default=(), repr=False)
    #: Settings beyond the provider's published limits (shown whatever the verdict).
    warnings: tuple[str, ...] = ()

    def summary(self) -> str:
        """One line: the verdict and its reason."""
        if self.ok:
            return f"ok: {self.message}"
        return f"failed at {self.stage}: {self.message}"

    _SHOWN: ClassVar[Shown] = (
        "ok",
        "stage",
        "message",
        "hint",
        "host",
        "port",
        "security",
        "passed",
        "banner",
        "capabilities",
        "tls",
        "certificate",
        "authenticated_as",
        "elapsed_ms",
        "transcript",
        "warnings",
    )

    def report_lines(self, *, verbose: bool = False) -> list[str]:
        """What ``mailconduit connections test`` prints (and the web console shows)."""
        where = f"{self.host}:{self.port} (security {self.security})"
        lines = []
        if self.ok:
            lines.append(f"success: {where}: {self.message} ({self.elapsed_ms} ms)")
        else:
            lines.append(f"FAILED at stage {self.stage}  {where}: {self.message}")
            if self.hint:
                lines.append(f"  hint: {self.hint}")
        if self.passed:
            lines.append("  stages passed: " + ", ".join(self.passed))
        if self.banner:
            lines.append(f"  banner: {self.banner.splitlines()[0]}")
        if self.tls is not None:
            lines.append(f"  TLS: {self.tls.version} {self.tls.cipher}")
        cert = self.certificate
        if cert is not None:
            lines.append(f"  certificate subject: {cert.subject}")
            lines.append(f"  certificate issuer:  {cert.issuer}")
            lines.append(f"  certificate valid:   {cert.not_before} to {cert.not_after}")
            names = cert.dns_names + cert.ip_addresses
            if names:
                lines.append(f"  certificate names:   {', '.join(names)}")
        if self.capabilities is not None and self.capabilities.esmtp:
            lines.append("  capabilities: " + describe_capabilities(self.capabilities))
        if self.authenticated_as:
            lines.append(f"  authenticated as: {self.authenticated_as}")
        if self.ok and self.hint:
            lines.append(f"  note: {self.hint}")
        lines.extend(f"  warning: {warning}" for warning in self.warnings)
        if verbose and self.transcript:
            lines.append("  transcript:")
            lines.extend(f"    {line}" for line in self.transcript)
        return lines


def token_failure(conn: Connection, message: str, hint: str) -> ProbeResult:
    """The result of a Test Connection that stopped before connecting: no access token."""
    return ProbeResult(
        ok=False,
        stage="token",
        message=message,
        hint=hint,
        host=conn.host,
        port=conn.port,
        security=conn.security.value,
    )


def describe_capabilities(caps: Capabilities) -> str:
    """``SIZE 10485760, STARTTLS, AUTH PLAIN LOGIN, PIPELINING, ...`` (what the issue lists)."""
    parts = []
    if caps.size is not None:
        parts.append(f"SIZE {caps.size}" if caps.size else "SIZE (no limit)")
    flags = (
        (caps.starttls, "STARTTLS"),
        (bool(caps.auth_mechanisms), "AUTH " + " ".join(caps.auth_mechanisms)),
        (caps.smtputf8, "SMTPUTF8"),
        (caps.pipelining, "PIPELINING"),
        (caps.eightbitmime, "8BITMIME"),
        (caps.enhanced_status_codes, "ENHANCEDSTATUSCODES"),
        (caps.chunking, "CHUNKING"),
        (caps.dsn, "DSN"),
    )
    parts.extend(text for present, text in flags if present)
    return ", ".join(parts) if parts else "none advertised"


class _Probe:
    """One Test Connection run: the session, the clock, and the diagnosis of a failure."""

    def __init__(self, conn: Connection, allow_address: AddressPolicy | None) -> None:
        self.conn = conn
        self.allow_address = allow_address
        self.transcript = Transcript()
        self.started = time.monotonic()
        self.passed: list[str] = []
        self.certificate: CertificateInfo | None = None
        self.sniff: asyncio.Future[bool] | None = None
        self.session = SMTPSession(
            conn,
            transcript=self.transcript,
            allow_address=allow_address,
            data_timeout=conn.timeout,
        )

    def result(self, ok: bool, stage: str, message: str, hint: str = "") -> ProbeResult:
        session = self.session
        tls = session.tls
        certificate = self.certificate or (tls.certificate if tls is not None else None)
        caps = session.capabilities if session.stage not in (Stage.NEW, Stage.DNS) else None
        if caps is not None and session.tls is not None and self.conn.security is Security.STARTTLS:
            caps = dataclasses.replace(caps, starttls=True)  # offered before TLS, used
        return ProbeResult(
            ok=ok,
            stage=stage,
            message=message,
            hint=hint,
            host=self.conn.host,
            port=self.conn.port,
            security=self.conn.security.value,
            passed=tuple(self.passed),
            banner=session.banner,
            capabilities=caps if caps is not None and caps.esmtp else None,
            tls=tls,
            certificate=certificate,
            authenticated_as=session.authenticated_as,
            elapsed_ms=round((time.monotonic() - self.started) * 1000),
            transcript=tuple(self.transcript.lines),
        )

    def passed_until(self, failed: Stage | None) -> None:
        """Record the stages done before ``failed`` (all setup stages when None)."""
        order = [Stage.DNS, Stage.TCP]
        if self.conn.security is Security.TLS:
            order.append(Stage.TLS)
        order += [Stage.BANNER, Stage.EHLO]
        if self.conn.security is Security.STARTTLS:
            order.append(Stage.STARTTLS)
        if self.session.authenticated_as:
            order.append(Stage.AUTH)
        for stage in order:
            if stage is failed:
                break
            self.passed.append(stage.value)

    async def fetch_certificate(self) -> None:
        """Second handshake without verification, only to show the untrusted certificate."""
        probe_conn = self.conn.with_changes(
            verify_tls=False, ca_file="", auth_mechanism=AuthMechanism.NONE
        )
        session = SMTPSession(probe_conn, allow_address=self.allow_address)
        try:
            await session.connect()
        except (MailconduitError, OSError):
            pass
        finally:
            if session.tls is not None:
                self.certificate = session.tls.certificate
            session.close()

    async def speaks_tls(self, budget: float) -> bool:
        """Evidence that the port expects implicit TLS: a handshake on a second connection
        completes, or the peer answers our ClientHello with a TLS alert."""
        peer = self.session.peer
        if peer is None:
            return False
        context = client_context(verify=False)
        writer = None
        try:
            async with asyncio.timeout(budget):
                _, writer = await asyncio.open_connection(
                    peer[0], peer[1], ssl=context, server_hostname=self.conn.host
                )
            return True
        except ssl.SSLError as exc:
            return _is_tls_alert(exc)
        except (OSError, TimeoutError, EOFError):
            return False
        finally:
            if writer is not None:
                writer.close()

    async def greets_in_plaintext(self) -> bool:
        """Evidence that the port speaks plaintext SMTP: a second connection, without TLS,
        receives a 220 greeting (the classic: implicit TLS against port 587)."""
        peer = self.session.peer
        if peer is None:
            return False
        parser = ReplyParser()
        writer = None
        try:
            async with asyncio.timeout(min(self.conn.timeout * _GREETING_SHARE, _GREETING_MAX)):
                reader, writer = await asyncio.open_connection(peer[0], peer[1])
                received = 0
                while received < _GREETING_BYTES:
                    data = await reader.read(_GREETING_BYTES - received)
                    if not data:
                        return False
                    received += len(data)
                    replies = parser.feed(data)
                    if replies:
                        return replies[0].code == 220
        except (MalformedReplyError, OSError, TimeoutError):
            return False
        finally:
            if writer is not None:
                writer.close()
        return False

    async def connect(self) -> None:
        """Connect the session; if the greeting is slow, start checking for implicit TLS
        meanwhile, so the diagnosis is ready when the greeting times out."""
        connecting = asyncio.ensure_future(self.session.connect())
        if self.conn.security is not Security.TLS:
            await asyncio.wait((connecting,), timeout=self.conn.timeout * _SNIFF_AFTER)
            if not connecting.done() and self.session.stage is Stage.BANNER:
                self.sniff = asyncio.ensure_future(self.speaks_tls(self.conn.timeout))
        await connecting

    async def silent_port_speaks_tls(self) -> bool:
        sniff = self.sniff
        if sniff is None:
            return await self.speaks_tls(min(self.conn.timeout * _SNIFF_SHARE, _SNIFF_MAX))
        try:  # started long ago: if it has not answered yet, it will not
            async with asyncio.timeout(min(self.conn.timeout * _SNIFF_GRACE, _SNIFF_MAX)):
                return await asyncio.shield(sniff)
        except TimeoutError:
            return False

    def stop_sniffing(self) -> None:
        if self.sniff is not None and not self.sniff.done():
            self.sniff.cancel()

    async def diagnose(self, error: MailconduitError) -> ProbeResult:
        """The failed result for ``error``: the stage it stopped at, what happened, and a hint
        drawn from what the server showed (never a guess)."""
        stage = self.session.stage
        self.passed_until(stage)
        name = stage.value if stage is not Stage.NEW else "dns"
        text = str(error.args[1] if isinstance(error, SMTPError) else error)
        if isinstance(error, SMTPError) and error.code:
            text = str(error)
        if isinstance(error, NetworkPolicyError):
            return self.result(
                False, "dns", error.message, "this address is refused by the network policy"
            )
        if isinstance(error, ConfigError):
            field_error = error.errors[0].field if error.errors else ""
            hint = "check server_url for typos" if field_error == "server_url" else ""
            return self.result(False, name, error.message, hint)
        cause = error.__cause__
        if stage in (Stage.TLS, Stage.STARTTLS) and isinstance(cause, ssl.SSLCertVerificationError):
            await self.fetch_certificate()
            why = explain_verify_failure(cause, self.certificate, self.conn.host)
            hint = _cert_hint(verify_failure(cause, self.certificate))
            return self.result(False, name, f"TLS certificate not trusted: {why}", hint)
        if stage is Stage.DNS:
            return self.result(
                False, "dns", text, "check server_url and the DNS resolver of this machine"
            )
        if stage is Stage.TCP:
            return self.result(False, "tcp", text, _tcp_hint(cause, self.conn.port))
        if stage is Stage.TLS:
            return await self._diagnose_tls(text, cause)
        if stage is Stage.BANNER:
            return await self._diagnose_banner(error, text, cause)
        if stage is Stage.EHLO:
            return self.result(False, "ehlo", text, _ehlo_hint(error))
        if stage is Stage.STARTTLS:
            return self._diagnose_starttls(text, cause)
        if stage is Stage.AUTH:
            return self._diagnose_auth(error, text)
        return self.result(False, name, text)

    async def _diagnose_tls(self, text: str, cause: BaseException | None) -> ProbeResult:
        """Implicit TLS failed: does the port greet in plaintext instead?"""
        port = self.conn.port
        if isinstance(cause, ssl.SSLError) and _is_plaintext_error(cause):
            text = f"port {port} does not speak TLS from the first byte ({cause.reason})"
        if await self.greets_in_plaintext():
            hint = (
                f"port {port} greets in plaintext SMTP: set security to starttls "
                "(or use port 465 for implicit TLS)"
            )
        else:
            hint = (
                f"port {port} answers as an SMTP server neither with TLS nor without: "
                "check the port"
            )
        return self.result(False, "tls", text, hint)

    async def _diagnose_banner(
        self, error: MailconduitError, text: str, cause: BaseException | None
    ) -> ProbeResult:
        """No usable greeting: silence, bytes that are not SMTP (TLS?), or a refusal."""
        port = self.conn.port
        silent = isinstance(cause, TimeoutError)
        not_smtp = isinstance(cause, MalformedReplyError)
        tls_answer = isinstance(cause, MalformedReplyError) and _is_tls_record(cause.sample)
        if self.conn.security is not Security.TLS and (
            tls_answer or (silent and await self.silent_port_speaks_tls())
        ):
            what = "answered in TLS" if not_smtp else "sent no greeting, and speaks TLS"
            return self.result(
                False,
                "banner",
                f"{text} (the port {what})",
                f"port {port} expects implicit TLS: set security to tls",
            )
        if not_smtp:
            hint = "check the port: SMTP uses 25, 465 (implicit TLS), 587 (STARTTLS) or 2525"
        elif silent:
            hint = (
                "the server accepted the TCP connection but never greeted: it may be "
                "overloaded, or not an SMTP server"
            )
        elif isinstance(error, SMTPError) and error.code:
            text = f"the server refused the session: {error}"
            hint = (
                "421 means busy (try later); 554 means this client is not welcome "
                "(IP reputation, access rules)"
            )
        else:
            hint = "check that this port speaks SMTP"
        return self.result(False, "banner", text, hint)

    def _diagnose_starttls(self, text: str, cause: BaseException | None) -> ProbeResult:
        """STARTTLS not offered, refused, or its handshake failed."""
        if not self.session.capabilities.starttls:
            return self.result(
                False,
                "starttls",
                f"{self.conn.host}:{self.conn.port} does not offer STARTTLS",
                "security starttls requires it and mailconduit never falls back to "
                "plaintext: use port 465 with security tls if the server has it, or "
                "security none only on a network you trust",
            )
        if isinstance(cause, ssl.SSLError):
            return self.result(False, "starttls", text, "the TLS handshake after STARTTLS failed")
        return self.result(False, "starttls", text, "the server refused STARTTLS")

    def _diagnose_auth(self, error: MailconduitError, text: str) -> ProbeResult:
        """Credentials refused by the server, or no mechanism both sides can use."""
        if isinstance(error, SMTPError) and error.code:
            return self.result(
                False,
                "auth",
                f"credentials rejected: {error.code} {error.enhanced} {error.reply}".replace(
                    "  ", " "
                ),
                xoauth2_hint(error)
                if self.conn.auth_mechanism is AuthMechanism.XOAUTH2
                else "check the username and password",
            )
        hint = error.hint if isinstance(error, UnusableAuthError) else ""
        return self.result(False, "auth", text, hint)


def _ehlo_hint(error: MailconduitError) -> str:
    """EHLO and HELO unknown (500/502): a server greeting with 220 that is not SMTP (FTP
    greets so too). Refused otherwise: usually the name we announced."""
    if isinstance(error, SMTPError) and error.code in (500, 502):
        return (
            "the server knows neither EHLO nor HELO: this port may not be an SMTP server "
            "(FTP servers greet with 220 too); check the port"
        )
    return "the server refused our greeting; set ehlo_hostname to a name it accepts"


def _tcp_hint(cause: BaseException | None, port: int) -> str:
    """Why a TCP connection failed, as the operating system told it."""
    if isinstance(cause, ConnectionRefusedError):
        return (
            f"nothing accepts connections on port {port} (or a firewall rejects them): "
            "check the port; SMTP uses 25, 465 (implicit TLS), 587 (STARTTLS) or 2525"
        )
    if isinstance(cause, TimeoutError):
        return (
            "no answer at all: a firewall may drop the packets, or the host is down; "
            "check host, port and outbound firewall rules"
        )
    return "check the host name and this machine's network route to it"


def _is_plaintext_error(exc: ssl.SSLError) -> bool:
    reason = (exc.reason or "").upper()
    return any(r in reason for r in _PLAINTEXT_REASONS)


def _is_tls_alert(exc: ssl.SSLError) -> bool:
    """True when OpenSSL failed because the peer sent a TLS alert: the peer speaks TLS."""
    return "ALERT" in (exc.reason or "").upper()


def _is_tls_record(sample: bytes) -> bool:
    """True when bytes start like a TLS record: alert or handshake, protocol version 3.x."""
    return len(sample) >= 3 and sample[0] in (0x15, 0x16) and sample[1] == 3 and sample[2] <= 4


def _cert_hint(kind: VerifyFailure) -> str:
    if kind is VerifyFailure.HOST_MISMATCH:
        return (
            "use a server_url the certificate names, or have the certificate reissued for this name"
        )
    if kind in (VerifyFailure.EXPIRED, VerifyFailure.NOT_YET_VALID):
        return (
            "the server's certificate must be renewed (or the clocks checked); turning "
            "verify_tls off would only hide the problem"
        )
    return (
        "if you trust this server, put its CA certificate (PEM) in ca_file; turning "
        "verify_tls off is possible but not recommended"
    )


def _test_recipient(send_to: str) -> str:
    """The bare address of ``send_to``, read by the same grammar as an export's To."""
    try:
        return parse_mailbox(send_to.strip()).envelope
    except AddressError as exc:
        raise AddressError(
            f"send_to {send_to!r} is not an e-mail address: {exc.message}", send_to
        ) from None


def _test_message(conn: Connection, send_to: str) -> bytes:
    message = EmailMessage()
    message["From"] = conn.sender
    message["To"] = send_to
    message["Subject"] = "mailconduit test message"
    message["Date"] = formatdate(localtime=True)
    domain = conn.sender.rpartition("@")[2] or None
    message["Message-ID"] = make_msgid(domain=domain)
    message.set_content(
        "This is a test message from mailconduit's Test Connection.\n\n"
        f"Connection: {conn.name} ({conn.host}:{conn.port}, security {conn.security.value}).\n"
        "If you can read it, the connection delivers mail.\n"
    )
    return message.as_bytes(policy=email.policy.SMTP)


async def probe(
    conn: Connection, *, send_to: str | None = None, allow_address: AddressPolicy | None = None
) -> ProbeResult:
    """Run Test Connection against ``conn``; every network wait honours ``conn.timeout_ms``."""
    run = _Probe(conn, allow_address)
    session = run.session
    try:
        await run.connect()
    except MailconduitError as error:
        return await run.diagnose(error)
    finally:
        run.stop_sniffing()
    run.passed_until(None)
    hint = ""
    if conn.security is Security.NONE and session.capabilities.starttls:
        hint = "the server offers STARTTLS: consider security starttls"
    try:
        if send_to:
            try:
                if not conn.sender:
                    raise AddressError("no sender address: set from_address on the connection")
                recipient = _test_recipient(send_to)
                outcome = await session.send(
                    conn.sender, [recipient], _test_message(conn, recipient)
                )
            except MailconduitError as error:
                return run.result(False, "send", str(error), "")
            if not outcome.sent:
                detail = f"{outcome.code} {outcome.enhanced} {outcome.text}".replace("  ", " ")
                return run.result(
                    False,
                    "send",
                    f"the test message was not accepted: {detail.strip()}",
                    "the server refused the sender or recipient (relay rules, sender identity)",
                )
            run.passed.append("send")
        await session.quit()
        run.passed.append("quit")
    finally:
        session.close()
    message = f"connected, {'authenticated, ' if session.authenticated_as else ''}"
    message += f"test message sent to {send_to}" if send_to else "no message sent"
    return run.result(True, "quit", message, hint)

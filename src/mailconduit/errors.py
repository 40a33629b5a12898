"""The one exception tree of mailconduit.

Each class says what happens next (exit status, retry, skip the row, abort the run).
Every exception keeps ``self.args`` equal to its constructor arguments so that it
pickles across processes (a worker must be able to send it back). Imports nothing
of ours.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AddressError",
    "AuthenticationError",
    "ConfigError",
    "FieldError",
    "MailconduitError",
    "NetworkPolicyError",
    "NotFoundError",
    "PermanentSMTPError",
    "RecipientRefusedError",
    "RenderError",
    "RowError",
    "RunAbortedError",
    "SMTPError",
    "SourceError",
    "TemplateSandboxError",
    "ThrottledError",
    "TransientSMTPError",
]


class MailconduitError(Exception):
    """Base of every error mailconduit raises on purpose.

    ``exit_code`` is what the CLI returns for it: 2 for usage and configuration
    mistakes, 1 for an operation that was tried and failed.
    """

    exit_code = 1

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


@dataclass(frozen=True, slots=True)
class FieldError:
    """One wrong field: its name and what is wrong with it, in words a user reads."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class ConfigError(MailconduitError):
    """Bad connection or export settings; nothing was attempted (exit status 2).

    ``errors`` names every wrong field so a user fixes them all in one go.
    """

    exit_code = 2

    def __init__(self, message: str, errors: tuple[FieldError, ...] = ()) -> None:
        super().__init__(message, errors)
        self.message = message
        self.errors = tuple(errors)

    @classmethod
    def for_fields(cls, what: str, errors: list[FieldError] | tuple[FieldError, ...]) -> ConfigError:
        errs = tuple(errors)
        joined = "; ".join(str(e) for e in errs)
        return cls(f"invalid {what}: {joined}", errs)

    @property
    def field(self) -> str | None:
        return self.errors[0].field if self.errors else None

    def __str__(self) -> str:
        return self.message


class NotFoundError(MailconduitError):
    """A named thing (connection, run, message) does not exist (exit status 2, HTTP 404).

    Beside :class:`ConfigError`, not below it: a missing thing is not a wrong setting,
    and the web answers it with 404 where a wrong setting gets 422.
    """

    exit_code = 2

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(kind, name)
        self.kind = kind
        self.name = name
        self.message = f"no {kind} named {name!r}"

    def __str__(self) -> str:
        return self.message


class NetworkPolicyError(ConfigError):
    """The network policy refuses every address a server name stands for (exit status 2)."""


class SourceError(MailconduitError):
    """The data container cannot be read; nothing was sent (exit status 2)."""

    exit_code = 2

    def __init__(self, message: str, location: str = "") -> None:
        super().__init__(message, location)
        self.message = message
        self.location = location

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


class RowError(MailconduitError):
    """This row only cannot be sent; it is reported and the others go on.

    ``column`` is the source column at fault, ``field`` the message field (``subject``,
    ``to``...) whose value was refused, each "" when not known where it is raised.
    """

    def __init__(self, message: str, row_key: str = "", column: str = "", field: str = "") -> None:
        super().__init__(message, row_key, column, field)
        self.message = message
        self.row_key = row_key
        self.column = column
        self.field = field

    def __str__(self) -> str:
        where = f"column {self.column}: " if self.column else ""
        return f"{where}{self.message}"


class RenderError(RowError):
    """A template failed for this row (or, before sending, for every row)."""

    def __init__(
        self, message: str, row_key: str = "", column: str = "", template: str = ""
    ) -> None:
        # args stay (message, row_key, column, template): it pickles as it is built
        super().__init__(message, row_key, column, field=template)
        self.template = template

    def __str__(self) -> str:
        where = f"template {self.template}: " if self.template else ""
        return f"{where}{self.message}"


class TemplateSandboxError(RenderError):
    """A template reached for what the sandbox forbids (``x.__class__``): refused before sending."""


class AddressError(RowError):
    """An address is malformed, empty or cannot be sent to this server."""

    def __init__(
        self,
        message: str,
        address: str = "",
        row_key: str = "",
        column: str = "",
        field: str = "",
    ) -> None:
        MailconduitError.__init__(self, message, address, row_key, column, field)
        self.message = message
        self.address = address
        self.row_key = row_key
        self.column = column
        self.field = field


class SMTPError(MailconduitError):
    """A reply or failure from the SMTP conversation.

    ``code`` is the reply code (0 when there was no reply: drop, timeout, TLS),
    ``enhanced`` the RFC 3463 status such as ``5.1.1`` when the server sent one,
    ``reply`` the server's text, ``command`` what we had sent (never a secret),
    ``host`` the server we talked to.
    """

    def __init__(
        self,
        code: int,
        reply: str,
        *,
        enhanced: str = "",
        command: str = "",
        host: str = "",
    ) -> None:
        super().__init__(code, reply, enhanced, command, host)
        self.code = code
        self.reply = reply
        self.enhanced = enhanced
        self.command = command
        self.host = host

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (
            _rebuild_smtp_error,
            (type(self), self.code, self.reply, self.enhanced, self.command, self.host),
        )

    def __str__(self) -> str:
        parts = []
        if self.code:
            parts.append(str(self.code))
        if self.enhanced:
            parts.append(self.enhanced)
        parts.append(self.reply)
        text = " ".join(p for p in parts if p)
        if self.command:
            text += f" (after {self.command})"
        return text


def _rebuild_smtp_error(
    cls: type[SMTPError], code: int, reply: str, enhanced: str, command: str, host: str
) -> SMTPError:
    return cls(code, reply, enhanced=enhanced, command=command, host=host)


class TransientSMTPError(SMTPError):
    """4xx replies, timeouts and dropped connections: retry with back-off."""


class ThrottledError(TransientSMTPError):
    """421 or 4.7.x: the server asks us to slow down; the whole pool slows."""


class PermanentSMTPError(SMTPError):
    """5xx replies: the row fails, no retry."""


class RecipientRefusedError(PermanentSMTPError):
    """Every recipient of a message was refused."""


class AuthenticationError(PermanentSMTPError):
    """Credentials were rejected (535 and kin): the run aborts, nothing more is tried."""


class RunAbortedError(MailconduitError):
    """The whole run stopped (bad credentials, error threshold, interruption)."""

    def __init__(self, reason: str, run_id: str = "") -> None:
        super().__init__(reason, run_id)
        self.reason = reason
        self.run_id = run_id

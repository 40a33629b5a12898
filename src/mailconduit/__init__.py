"""mailconduit: deliver rows of data as e-mail through an SMTP server.

The Python API: ``mailconduit.export(source, connection=..., to=..., subject=..., body=...)``
(``await mailconduit.aexport(...)`` on a running loop), ``resume``/``aresume``,
``test_connection``, the report and the errors. Each name is imported on first use, so
``import mailconduit`` stays cheap (the CLI's start-up is measured).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "AddressError",
    "AuthenticationError",
    "ConfigError",
    "Connection",
    "ExportReport",
    "FieldError",
    "MailconduitError",
    "NetworkPolicyError",
    "NotFoundError",
    "PermanentSMTPError",
    "ProbeResult",
    "Progress",
    "RateLimit",
    "RecipientRefusedError",
    "RenderError",
    "RetryPolicy",
    "RowError",
    "RunAbortedError",
    "SMTPError",
    "SourceError",
    "TemplateSandboxError",
    "ThrottledError",
    "TransientSMTPError",
    "__version__",
    "aexport",
    "aresume",
    "export",
    "resume",
    "test_connection",
]

if TYPE_CHECKING:
    from mailconduit.api import aexport, aresume, export, resume, test_connection
    from mailconduit.config import Connection, RateLimit, RetryPolicy
    from mailconduit.delivery.events import Progress
    from mailconduit.delivery.report import ExportReport
    from mailconduit.errors import (
        AddressError,
        AuthenticationError,
        ConfigError,
        FieldError,
        MailconduitError,
        NetworkPolicyError,
        NotFoundError,
        PermanentSMTPError,
        RecipientRefusedError,
        RenderError,
        RowError,
        RunAbortedError,
        SMTPError,
        SourceError,
        TemplateSandboxError,
        ThrottledError,
        TransientSMTPError,
    )
    from mailconduit.smtp.probe import ProbeResult

    __version__: str

#: The module each public name comes from; a name not listed here comes from ``errors``.
_HOME = {
    "Connection": "config",
    "RateLimit": "config",
    "RetryPolicy": "config",
    "ExportReport": "delivery.report",
    "Progress": "delivery.events",
    "ProbeResult": "smtp.probe",
    "aexport": "api",
    "aresume": "api",
    "export": "api",
    "resume": "api",
    "test_connection": "api",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _version()
    elif name in __all__:
        module = importlib.import_module(f"mailconduit.{_HOME.get(name, 'errors')}")
        value = getattr(module, name)
    else:
        raise AttributeError(f"module 'mailconduit' has no attribute {name!r}")
    globals()[name] = value  # found once; later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def _version() -> str:
    """The installed distribution's version (pyproject.toml is its one source)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mailconduit")
    except PackageNotFoundError:  # imported from a source tree that was never installed
        return "0+unknown"

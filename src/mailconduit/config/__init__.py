"""Typed, frozen settings and the rules that check them. No I/O here.

Every entry point (CLI, REST API, web form, YAML import, environment URL) turns its input
into a ``dict`` and calls :func:`validate_connection` or :func:`validate_export_spec`, so
there is one set of rules and one wording of every error. The package holds:

- :mod:`~mailconduit.config.connection`: the SMTP connection and its server URL;
- :mod:`~mailconduit.config.export`: what an export asks for (:class:`ExportSpec`);
- :mod:`~mailconduit.config.limits`: the longest text each setting may hold;
- :mod:`~mailconduit.config.text`: character names, file encodings, mail charsets, URLs;
- :mod:`~mailconduit.config.secret`: a value that never shows itself.
"""

from __future__ import annotations

from mailconduit.config.connection import (
    CONNECTION_FIELDS,
    DEFAULT_TIMEOUT_MS,
    NAME_RE,
    PORT_SECURITY_HINTS,
    TIMEOUT_MS_MAX,
    TIMEOUT_MS_MIN,
    AuthMechanism,
    Connection,
    ImplementationType,
    Security,
    connection_from_url,
    connection_to_dict,
    derive_security,
    is_loopback_host,
    parse_server_url,
    validate_connection,
)
from mailconduit.config.export import (
    INLINE_NAME_MAX,
    INLINE_NAME_RE,
    ExportMode,
    ExportSpec,
    Oversize,
    RateLimit,
    ReportFormat,
    RetryPolicy,
    SourceKind,
    export_spec_to_dict,
    parse_rate,
    parse_source_kind,
    validate_export_spec,
)
from mailconduit.config.limits import EXPORT_ALIASES, TEXT_LIMITS, text_limit, text_limit_errors
from mailconduit.config.secret import Secret, TokenSource
from mailconduit.config.text import (
    char_name,
    is_database_url,
    mime_charset,
    source_codec,
    url_scheme,
)

__all__ = [
    "CONNECTION_FIELDS",
    "DEFAULT_TIMEOUT_MS",
    "EXPORT_ALIASES",
    "INLINE_NAME_MAX",
    "INLINE_NAME_RE",
    "NAME_RE",
    "PORT_SECURITY_HINTS",
    "TEXT_LIMITS",
    "TIMEOUT_MS_MAX",
    "TIMEOUT_MS_MIN",
    "AuthMechanism",
    "Connection",
    "ExportMode",
    "ExportSpec",
    "ImplementationType",
    "Oversize",
    "RateLimit",
    "ReportFormat",
    "RetryPolicy",
    "Secret",
    "Security",
    "SourceKind",
    "TokenSource",
    "char_name",
    "connection_from_url",
    "connection_to_dict",
    "derive_security",
    "export_spec_to_dict",
    "is_database_url",
    "is_loopback_host",
    "mime_charset",
    "parse_rate",
    "parse_server_url",
    "parse_source_kind",
    "source_codec",
    "text_limit",
    "text_limit_errors",
    "url_scheme",
    "validate_connection",
    "validate_export_spec",
]

"""TLS for SMTP: client contexts, what was negotiated, and certificates described for people.

Verification is on by default (system CAs plus an optional CA file, host name checked).
Certificates are parsed with ``cryptography`` so Test Connection can say who issued a
certificate, when it expires and why it is not trusted, even when verification failed.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import os
import ssl
from dataclasses import dataclass
from typing import Any, ClassVar

from mailconduit.errors import ConfigError, FieldError
from mailconduit.view import Record, Shown

__all__ = [
    "CertificateInfo",
    "TLSInfo",
    "VerifyFailure",
    "client_context",
    "describe_certificate",
    "explain_verify_failure",
    "tls_info",
    "verify_failure",
]


@dataclass(frozen=True, slots=True)
class CertificateInfo(Record):
    """The facts about a server certificate a person needs to judge it."""

    subject: str
    issuer: str
    not_before: str  # ISO 8601, UTC
    not_after: str
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    self_signed: bool = False
    expired: bool = False
    not_yet_valid: bool = False

    _SHOWN: ClassVar[Shown] = (
        "subject",
        "issuer",
        "not_before",
        "not_after",
        "dns_names",
        "ip_addresses",
        "self_signed",
        "expired",
        "not_yet_valid",
    )


@dataclass(frozen=True, slots=True)
class TLSInfo(Record):
    """What a TLS handshake negotiated, and the peer's certificate."""

    version: str
    cipher: str
    certificate: CertificateInfo | None = None
    verified: bool = True

    _SHOWN: ClassVar[Shown] = ("version", "cipher", "verified", "certificate")


def client_context(*, verify: bool, ca_file: str = "") -> ssl.SSLContext:
    """A client context: system CAs plus ``ca_file`` when verifying, nothing checked otherwise.

    Contexts are cached (loading the system CA store costs milliseconds) and keyed by
    the CA file's modification time, so an edited CA file is picked up.
    """
    if not verify:
        return _unverified_context()
    if not ca_file:
        return _verified_context("", 0.0)
    try:
        mtime = os.stat(ca_file).st_mtime
    except OSError as exc:
        raise ConfigError.for_fields(
            "connection", [FieldError("ca_file", f"cannot read {ca_file}: {exc.strerror}")]
        ) from None
    return _verified_context(ca_file, mtime)


@functools.lru_cache(maxsize=16)
def _verified_context(ca_file: str, _mtime: float) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError.for_fields(
                "connection",
                [FieldError("ca_file", f"{ca_file} holds no usable PEM certificate ({exc})")],
            ) from None
    return context


@functools.lru_cache(maxsize=1)
def _unverified_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _name(value: Any) -> str:
    return str(value.rfc4514_string())


def describe_certificate(der: bytes) -> CertificateInfo:
    """Parse a DER certificate into the facts a person checks (subject, issuer, dates, names)."""
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    not_before = cert.not_valid_before_utc
    not_after = cert.not_valid_after_utc
    now = dt.datetime.now(dt.UTC)
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = tuple(san.get_values_for_type(x509.DNSName))
        ip_addresses = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        pass
    return CertificateInfo(
        subject=_name(cert.subject),
        issuer=_name(cert.issuer),
        not_before=not_before.isoformat(),
        not_after=not_after.isoformat(),
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        self_signed=cert.subject == cert.issuer,
        expired=now > not_after,
        not_yet_valid=now < not_before,
    )


def tls_info(ssl_object: ssl.SSLObject | ssl.SSLSocket | None, *, verified: bool) -> TLSInfo | None:
    """What the handshake of ``ssl_object`` negotiated, certificate included."""
    if ssl_object is None:
        return None
    cipher = ssl_object.cipher()
    der = ssl_object.getpeercert(binary_form=True)
    certificate = describe_certificate(der) if der else None
    return TLSInfo(
        version=ssl_object.version() or "",
        cipher=cipher[0] if cipher else "",
        certificate=certificate,
        verified=verified,
    )


# OpenSSL X509_V_ERR_* codes that mean "we do not trust who signed it".
_UNTRUSTED_ISSUER = {2, 19, 20, 21, 27}
_SELF_SIGNED = {18}
_EXPIRED = {10}
_NOT_YET_VALID = {9}
_HOSTNAME_MISMATCH = {62, 64}


class VerifyFailure(enum.StrEnum):
    """Why a certificate was not trusted, as far as the code and the certificate tell."""

    HOST_MISMATCH = "host name mismatch"
    EXPIRED = "expired"
    NOT_YET_VALID = "not valid yet"
    SELF_SIGNED = "self-signed"
    UNKNOWN_ISSUER = "unknown issuer"
    OTHER = "other"


def verify_failure(
    exc: ssl.SSLCertVerificationError, certificate: CertificateInfo | None
) -> VerifyFailure:
    """Sort a verification failure by OpenSSL's code, then by what the certificate shows."""
    code = getattr(exc, "verify_code", 0) or 0
    raw = getattr(exc, "verify_message", "") or str(exc)
    # OpenSSL's own text is the fallback when it gave no code (it is not one of our errors).
    if code in _HOSTNAME_MISMATCH or "hostname mismatch" in raw.lower():
        return VerifyFailure.HOST_MISMATCH
    if code in _EXPIRED or (certificate is not None and certificate.expired):
        return VerifyFailure.EXPIRED
    if code in _NOT_YET_VALID:
        return VerifyFailure.NOT_YET_VALID
    if code in _SELF_SIGNED or (certificate is not None and certificate.self_signed):
        return VerifyFailure.SELF_SIGNED
    if code in _UNTRUSTED_ISSUER:
        return VerifyFailure.UNKNOWN_ISSUER
    return VerifyFailure.OTHER


def explain_verify_failure(
    exc: ssl.SSLCertVerificationError, certificate: CertificateInfo | None, host: str
) -> str:
    """Why a certificate is not trusted: self-signed, unknown issuer, expired, wrong host."""
    kind = verify_failure(exc, certificate)
    if kind is VerifyFailure.HOST_MISMATCH:
        names = ""
        if certificate is not None and (certificate.dns_names or certificate.ip_addresses):
            names = (
                f" (it is valid for {', '.join(certificate.dns_names + certificate.ip_addresses)})"
            )
        return f"host name mismatch: the certificate is not valid for {host}{names}"
    if kind is VerifyFailure.EXPIRED:
        when = f" on {certificate.not_after}" if certificate is not None else ""
        return f"the certificate expired{when}"
    if kind is VerifyFailure.NOT_YET_VALID:
        when = f" before {certificate.not_before}" if certificate is not None else ""
        return f"the certificate is not valid yet{when}"
    if kind is VerifyFailure.SELF_SIGNED:
        return "the certificate is self-signed, and it is not in the trusted CA store"
    if kind is VerifyFailure.UNKNOWN_ISSUER:
        issuer = f" ({certificate.issuer})" if certificate is not None else ""
        return f"unknown issuer{issuer}: the certificate is not signed by a trusted CA"
    raw = getattr(exc, "verify_message", "") or str(exc)
    return f"certificate verification failed: {raw}"

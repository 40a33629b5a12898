"""The sink's own small certificate authority and the server certificate it signs.

Generated on first use under the sink directory so that clients verify the sink's
STARTTLS certificate against ``ca.pem`` instead of turning verification off.
Private keys are written with mode 0600. Certificates close to expiry are renewed.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailconduit.sink.files import write_private_file, write_public_file

__all__ = ["SinkCertificates", "ca_file_of", "ensure_certificates", "server_tls_context"]

CA_VALIDITY = dt.timedelta(days=3650)
SERVER_VALIDITY = dt.timedelta(days=730)
#: Renew a certificate when it has less than this left, so a client never sees it expire.
RENEW_BEFORE = dt.timedelta(days=30)
SERVER_NAMES = ("localhost",)
SERVER_ADDRESSES = ("127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class SinkCertificates:
    """Paths of the sink's CA certificate (what clients trust) and its server cert and key."""

    ca_file: Path
    ca_key_file: Path
    cert_file: Path
    key_file: Path


def _paths(directory: Path) -> SinkCertificates:
    return SinkCertificates(
        ca_file=directory / "ca.pem",
        ca_key_file=directory / "ca-key.pem",
        cert_file=directory / "server.pem",
        key_file=directory / "server-key.pem",
    )


def ca_file_of(directory: Path) -> Path:
    """Where the sink of ``directory`` keeps its CA certificate (whether it exists yet or not)."""
    return _paths(directory).ca_file


def ensure_certificates(directory: Path) -> SinkCertificates:
    """Return the sink's certificates, creating or renewing them when missing or expiring.

    The caller holds the sink directory lock, so two processes never generate at once.
    """
    paths = _paths(directory)
    now = dt.datetime.now(dt.UTC)
    ca = _load_ca(paths, now)
    if ca is None:
        ca = _create_ca(paths, now)
        _create_server_cert(paths, ca, now)
    elif not _server_cert_is_usable(paths, ca[0], now):
        _create_server_cert(paths, ca, now)
    return paths


def server_tls_context(certs: SinkCertificates) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2 or newer) presenting the sink's certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=certs.cert_file, keyfile=certs.key_file)
    return context


def _still_valid(cert: x509.Certificate, now: dt.datetime) -> bool:
    return cert.not_valid_before_utc <= now and cert.not_valid_after_utc - RENEW_BEFORE > now


def _load_ca(
    paths: SinkCertificates, now: dt.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """The existing CA and its key, or None when either is missing, broken or expiring."""
    try:
        cert = x509.load_pem_x509_certificate(paths.ca_file.read_bytes())
        key = serialization.load_pem_private_key(paths.ca_key_file.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    if cert.public_key() != key.public_key() or not _still_valid(cert, now):
        return None
    return cert, key


def _server_cert_is_usable(paths: SinkCertificates, ca: x509.Certificate, now: dt.datetime) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(paths.cert_file.read_bytes())
        key = serialization.load_pem_private_key(paths.key_file.read_bytes(), password=None)
        cert.verify_directly_issued_by(ca)
    except (OSError, ValueError, TypeError, InvalidSignature):
        return False
    return cert.public_key() == key.public_key() and _still_valid(cert, now)


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """A CA signs certificates (and CRLs); a TLS server key only signs handshakes."""
    return x509.KeyUsage(
        digital_signature=not signs_certificates,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _create_ca(
    paths: SinkCertificates, now: dt.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mailconduit"),
            x509.NameAttribute(
                NameOID.COMMON_NAME, f"mailconduit local sink CA ({os.uname().nodename})"
            ),
        ]
    )
    public_key = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private_file(paths.ca_key_file, _key_pem(key))
    write_public_file(paths.ca_file, cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _create_server_cert(
    paths: SinkCertificates,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    now: dt.datetime,
) -> None:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in SERVER_NAMES]
    alt_names += [x509.IPAddress(ipaddress.ip_address(a)) for a in SERVER_ADDRESSES]
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + SERVER_VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    write_private_file(paths.key_file, _key_pem(key))
    write_public_file(paths.cert_file, cert.public_bytes(serialization.Encoding.PEM))

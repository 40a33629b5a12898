"""Certificates for TLS tests: a throw-away CA (``trustme``) and self-signed leaves.

:class:`LocalCA` signs server certificates (also expired ones, or for other names) and
writes its own certificate where a connection's ``ca_file`` can point;
:func:`self_signed_pem` makes what no CA signed. Both end up in a server ``SSLContext``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["LocalCA", "self_signed_pem", "server_context"]


class LocalCA:
    """A certificate authority for tests; ``ca_file`` is its PEM on disk (given a directory).

    Needs the ``trustme`` package (a test dependency), imported only here.
    """

    def __init__(self, directory: Path | None = None) -> None:
        import trustme

        self._ca = trustme.CA()
        self.ca_file = ""
        if directory is not None:
            self.ca_file = str(directory / "ca.pem")
            self._ca.cert_pem.write_to_path(self.ca_file)

    def server_context(
        self,
        *names: str,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> ssl.SSLContext:
        """A server context with a certificate this CA issued for ``names``."""
        leaf = self._ca.issue_cert(
            *(names or ("localhost", "127.0.0.1")), not_before=not_before, not_after=not_after
        )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf.configure_cert(context)
        return context

    def flawed_server_context(self, problem: str, host: str = "127.0.0.1") -> ssl.SSLContext:
        """A server context for ``host`` that a client trusting this CA must refuse.

        ``problem``: ``unknown_issuer`` (signed by another CA), ``self_signed``,
        ``expired`` (three days ago) or ``wrong_host`` (issued for mail.example.org).
        """
        if problem == "unknown_issuer":
            return LocalCA().server_context(host)
        if problem == "self_signed":
            return server_context(*self_signed_pem(host))
        if problem == "expired":
            ended = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=3)
            return self.server_context(
                host, not_before=ended - dt.timedelta(days=90), not_after=ended
            )
        if problem == "wrong_host":
            return self.server_context("mail.example.org")
        raise ValueError(f"unknown certificate problem {problem!r}")


def self_signed_pem(
    *names: str,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> tuple[bytes, bytes]:
    """A self-signed server certificate for ``names`` (host names or IPs): (cert PEM, key PEM)."""
    if not names:
        names = ("localhost", "127.0.0.1")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = dt.datetime.now(dt.UTC)
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(days=1))
        .not_valid_after(not_after or now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def server_context(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A server-side context serving this certificate chain and key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory() as tmp:
        cert_path = Path(tmp) / "cert.pem"
        key_path = Path(tmp) / "key.pem"
        cert_path.write_bytes(cert_pem)
        key_path.write_bytes(key_pem)
        context.load_cert_chain(cert_path, key_path)
    return context

"""Getting a session's socket: resolve the host, connect to one of its addresses, start TLS.

Pure steps for :class:`~mailconduit.smtp.client.SMTPSession`; each failure of the
system (DNS, TCP, TLS) leaves here as one ``mailconduit.errors`` instance.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import ssl
from collections.abc import Callable
from typing import Any

from mailconduit.errors import (
    ConfigError,
    FieldError,
    NetworkPolicyError,
    PermanentSMTPError,
    SMTPError,
    TransientSMTPError,
)
from mailconduit.smtp.protocol import ReplyStream
from mailconduit.smtp.tls import client_context

__all__ = ["AddressPolicy", "default_ehlo_name", "open_tcp", "resolve", "start_tls", "where"]

#: Whether the session may connect to this address (the network policy); None allows all.
AddressPolicy = Callable[[ipaddress.IPv4Address | ipaddress.IPv6Address], bool]


def where(host: str, port: int, ip: str) -> str:
    """How messages name the peer: ``host:port (ip)``, or ``ip:port`` when host is the IP."""
    shown = f"[{ip}]" if ":" in ip else ip
    if ip != host:
        return f"{host}:{port} ({shown})"
    return f"{shown}:{port}"


async def resolve(
    loop: asyncio.AbstractEventLoop,
    host: str,
    port: int,
    *,
    timeout: float,
    allow_address: AddressPolicy | None,
) -> list[tuple[int, str]]:
    """The (family, IP) pairs to try, in order, without duplicates, that the policy allows."""
    try:
        ip = ipaddress.ip_address(host)
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        candidates: list[tuple[int, str]] = [(int(family), str(ip))]
    except ValueError:
        try:
            async with asyncio.timeout(timeout):
                infos = await loop.getaddrinfo(
                    host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
                )
        except TimeoutError as exc:
            raise TransientSMTPError(
                0, f"timed out after {timeout:g} s resolving {host}", host=host
            ) from exc
        except socket.gaierror as exc:
            if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
                raise ConfigError(
                    f"host {host} does not resolve (no such name in DNS)",
                    (FieldError("server_url", f"{host} does not resolve"),),
                ) from exc
            raise TransientSMTPError(
                0, f"cannot resolve {host}: {exc.strerror}", host=host
            ) from exc
        candidates = []
        for family, _, _, _, sockaddr in infos:
            address = (int(family), str(sockaddr[0]))
            if address not in candidates:
                candidates.append(address)
    if allow_address is not None:
        allowed = [c for c in candidates if allow_address(ipaddress.ip_address(c[1]))]
        if not allowed:
            refused = ", ".join(c[1] for c in candidates)
            raise NetworkPolicyError(
                f"connecting to {host} ({refused}) is not allowed by the network policy",
                (FieldError("server_url", f"{host} resolves to a forbidden address ({refused})"),),
            )
        candidates = allowed
    return candidates


async def open_tcp(
    loop: asyncio.AbstractEventLoop,
    protocol: ReplyStream,
    host: str,
    port: int,
    addresses: list[tuple[int, str]],
    *,
    timeout: float,
) -> str:
    """Connect ``protocol`` to the first address that answers; return its IP.

    The time budget is shared: a dead first address (often IPv6) leaves time for the others.
    """
    last: OSError | None = None
    timed_out = False
    deadline = loop.time() + timeout
    for index, (family, ip) in enumerate(addresses):
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        budget = remaining / (len(addresses) - index)
        try:
            async with asyncio.timeout(budget):
                await loop.create_connection(lambda: protocol, ip, port, family=family)
        except TimeoutError:
            timed_out = True
            continue
        except OSError as exc:
            last = exc
            continue
        return ip
    if last is None or timed_out:
        shown = where(host, port, addresses[0][1]) if len(addresses) == 1 else f"{host}:{port}"
        raise TransientSMTPError(
            0, f"timed out after {timeout:g} s connecting to {shown}", host=host
        ) from TimeoutError(errno.ETIMEDOUT, "connect timed out")
    if isinstance(last, ConnectionRefusedError):
        why = "connection refused (nothing listens on that port, or a firewall rejects it)"
    elif last.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        why = f"unreachable ({last.strerror})"
    else:
        why = last.strerror or str(last)
    shown = where(host, port, addresses[-1][1]) if addresses else f"{host}:{port}"
    raise TransientSMTPError(0, f"cannot connect to {shown}: {why}", host=host) from last


async def start_tls(
    loop: asyncio.AbstractEventLoop,
    protocol: ReplyStream,
    host: str,
    *,
    timeout: float,
    verify: bool,
    ca_file: str,
) -> Any:
    """Wrap ``protocol``'s transport in TLS and return the new transport (also set on it).

    A failed handshake ends the protocol with the same error it raises: a certificate or
    TLS failure is permanent, a timeout or a drop transient.
    """
    transport = protocol.transport
    assert transport is not None
    context = client_context(verify=verify, ca_file=ca_file)
    error: SMTPError
    try:
        async with asyncio.timeout(timeout):
            new_transport = await loop.start_tls(
                transport,
                protocol,
                context,
                server_hostname=host,
                ssl_handshake_timeout=timeout * 2,
            )
    except TimeoutError as exc:
        error = TransientSMTPError(
            0, f"timed out after {timeout:g} s during the TLS handshake", host=host
        )
        error.__cause__ = exc
        protocol.fail(error)
        raise error from exc
    except ssl.SSLCertVerificationError as exc:
        error = PermanentSMTPError(
            0, f"TLS certificate not trusted: {exc.verify_message or exc}", host=host
        )
        protocol.fail(error)
        raise error from exc
    except ssl.SSLError as exc:
        error = PermanentSMTPError(0, f"TLS handshake failed: {exc.reason or exc}", host=host)
        protocol.fail(error)
        raise error from exc
    except (OSError, EOFError) as exc:
        error = TransientSMTPError(
            0, f"the connection closed during the TLS handshake: {exc}", host=host
        )
        protocol.fail(error)
        raise error from exc
    if new_transport is None:  # pragma: no cover - start_tls returns a transport or raises
        raise TransientSMTPError(0, "TLS could not be started", host=host)
    protocol.transport = new_transport
    return new_transport


def default_ehlo_name(configured: str, sockname: Any) -> str:
    """The EHLO name: the configured one, this host's FQDN, or our address literal."""
    if configured:
        return configured
    local = socket.gethostname()
    if "." in local and local.isascii() and not local.endswith(".localdomain"):
        return local
    ip = str(sockname[0]) if sockname else "127.0.0.1"
    return f"[IPv6:{ip}]" if ":" in ip else f"[{ip}]"

"""Which network addresses mailconduit may open SMTP connections to: the SSRF guard.

A web user types a host name; without a policy the server would connect wherever that name
points, cloud metadata services included. The SMTP client asks :func:`allow_address` about
the address a name RESOLVED to, at connect time, so a DNS answer that changes between a check
and the connection (DNS rebinding) cannot slip through.

Rules, first match wins:

1. an address inside ``MAILCONDUIT_DENY_NETWORKS`` is refused;
2. an address inside ``MAILCONDUIT_ALLOW_NETWORKS`` is allowed (this is how an administrator
   re-opens one of the built-in denials, e.g. a relay on a link-local address);
3. an address inside the built-in denials (link-local 169.254.0.0/16 and fe80::/10, the cloud
   metadata addresses fd00:ec2::254 and 100.100.100.200, and the unspecified addresses) is refused;
4. when ``MAILCONDUIT_ALLOW_NETWORKS`` is set, every other address is refused (the allow list
   is exclusive); when it is not set, every other address is allowed.

Both variables hold comma-separated networks in CIDR notation (a bare address means /32 or
/128). IPv4-mapped IPv6 addresses (``::ffff:169.254.169.254``) are judged as the IPv4 address.
An IPv6 address that carries an IPv4 address (IPv4-compatible ``::a.b.c.d``, SIIT
``::ffff:0:a.b.c.d``, NAT64 ``64:ff9b::/96`` and the local-use ``64:ff9b:1::/48``, 6to4
``2002::/16``, Teredo ``2001::/32``) is allowed only when the IPv6 address and every IPv4
address it may carry are allowed: a gateway would forward the connection to that IPv4 address.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass

from mailconduit.errors import ConfigError, FieldError

__all__ = [
    "ALLOW_ENV",
    "BUILTIN_DENIED",
    "DENY_ENV",
    "NetworkPolicy",
    "PolicyDecision",
    "allow_address",
    "current_policy",
    "denial_reason",
    "embedded_ipv4",
    "parse_networks",
]

ALLOW_ENV = "MAILCONDUIT_ALLOW_NETWORKS"
DENY_ENV = "MAILCONDUIT_DENY_NETWORKS"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Refused unless an allow list names them: link-local ranges and cloud metadata endpoints.
BUILTIN_DENIED: tuple[tuple[IPNetwork, str], ...] = (
    (ipaddress.ip_network("169.254.0.0/16"), "link-local and cloud metadata (169.254.0.0/16)"),
    (ipaddress.ip_network("fe80::/10"), "IPv6 link-local (fe80::/10)"),
    (ipaddress.ip_network("fd00:ec2::254/128"), "AWS metadata service over IPv6 (fd00:ec2::254)"),
    (
        ipaddress.ip_network("100.100.100.200/32"),
        "Alibaba Cloud metadata service (100.100.100.200)",
    ),
    (ipaddress.ip_network("0.0.0.0/32"), "the unspecified address 0.0.0.0"),
    (ipaddress.ip_network("::/128"), "the unspecified address ::"),
)


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """Whether an address may be connected to, and the sentence that explains a refusal."""

    allowed: bool
    reason: str = ""


def _parse_address(value: str | IPAddress) -> IPAddress:
    """An address from ``192.0.2.1``, ``[::1]`` or ``fe80::1%eth0``; IPv4-mapped ones unwrapped."""
    if isinstance(value, str):
        text = value.strip().strip("[]").split("%", 1)[0]
        address: IPAddress = ipaddress.ip_address(text)
    else:
        address = value
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")
_SIIT = ipaddress.IPv6Network("::ffff:0:0:0/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")
#: RFC 6052 prefix lengths a local-use NAT64 prefix inside 64:ff9b:1::/48 may have.
_LOCAL_USE_PREFIXES = (48, 56, 64, 96)


def _rfc6052_ipv4(address: ipaddress.IPv6Address, prefix: int) -> ipaddress.IPv4Address:
    """The IPv4 address RFC 6052 places after a ``prefix``-bit NAT64 prefix (bits 64-71 skipped)."""
    value = int(address)
    if prefix == 96:
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    bits = f"{value:0128b}"
    without_u = bits[:64] + bits[72:]
    return ipaddress.IPv4Address(int(without_u[prefix : prefix + 32], 2))


def embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[tuple[ipaddress.IPv4Address, str], ...]:
    """Every IPv4 address ``address`` may lead to through a translator or tunnel, with the form."""
    found: list[tuple[ipaddress.IPv4Address, str]] = []
    if address in _NAT64_WELL_KNOWN:
        found.append((_rfc6052_ipv4(address, 96), "NAT64 64:ff9b::/96"))
    elif address in _NAT64_LOCAL_USE:
        found += [(_rfc6052_ipv4(address, n), "NAT64 64:ff9b:1::/48") for n in _LOCAL_USE_PREFIXES]
    elif address in _SIIT:
        found.append((ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), "SIIT ::ffff:0:0:0/96"))
    elif address in _COMPATIBLE and int(address) > 1:
        found.append((ipaddress.IPv4Address(int(address)), "IPv4-compatible ::/96"))
    if address.sixtofour is not None:
        found.append((address.sixtofour, "6to4 2002::/16"))
    if address.teredo is not None:
        server, client = address.teredo
        found += [(server, "Teredo server"), (client, "Teredo client")]
    return tuple(dict.fromkeys(found))


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """Comma-separated networks in CIDR notation (a bare address is one host); ValueError
    names every item that is not one."""
    networks: list[IPNetwork] = []
    bad: list[str] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            bad.append(item)
    if bad:
        raise ValueError(f"{', '.join(map(repr, bad))} is not a network in CIDR notation")
    return tuple(networks)


def _parse_networks(variable: str, text: str) -> tuple[IPNetwork, ...]:
    try:
        return parse_networks(text)
    except ValueError as exc:
        raise ConfigError.for_fields("network policy", [FieldError(variable, str(exc))]) from None


def _find(address: IPAddress, networks: tuple[IPNetwork, ...]) -> IPNetwork | None:
    for network in networks:
        if network.version == address.version and address in network:
            return network
    return None


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    """An allow list and a deny list of networks, applied with the rules of this module's docstring.

    ``allow`` empty means "no allow list": everything not denied is allowed.
    """

    allow: tuple[IPNetwork, ...] = ()
    deny: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> NetworkPolicy:
        """The policy described by MAILCONDUIT_ALLOW_NETWORKS and MAILCONDUIT_DENY_NETWORKS."""
        env = os.environ if environ is None else environ
        return cls(
            allow=_parse_networks(ALLOW_ENV, env.get(ALLOW_ENV, "")),
            deny=_parse_networks(DENY_ENV, env.get(DENY_ENV, "")),
        )

    def decide(self, address: str | IPAddress) -> PolicyDecision:
        """Judge one resolved address; text that is not an IP address is refused."""
        try:
            ip = _parse_address(address)
        except ValueError:
            return PolicyDecision(False, f"{address!r} is not an IP address")
        decision = self._judge(ip)
        if decision.allowed and isinstance(ip, ipaddress.IPv6Address):
            for inner, form in embedded_ipv4(ip):
                refused = self._judge(inner)
                if not refused.allowed:
                    return PolicyDecision(
                        False, f"{ip} leads to {inner} ({form}); {refused.reason}"
                    )
        return decision

    def _judge(self, ip: IPAddress) -> PolicyDecision:
        denied = _find(ip, self.deny)
        if denied is not None:
            return PolicyDecision(False, f"{ip} is inside {denied}, which {DENY_ENV} refuses")
        if _find(ip, self.allow) is not None:
            return PolicyDecision(True)
        for network, what in BUILTIN_DENIED:
            if network.version == ip.version and ip in network:
                return PolicyDecision(
                    False,
                    f"{ip} is refused by the network policy: {what}; "
                    f"add it to {ALLOW_ENV} if this server really lives there",
                )
        if self.allow:
            return PolicyDecision(False, f"{ip} is outside the networks {ALLOW_ENV} allows")
        return PolicyDecision(True)

    def allow_address(self, address: str | IPAddress) -> bool:
        """True when the policy lets mailconduit connect to ``address`` (the SMTP client's hook)."""
        return self.decide(address).allowed

    def denial_reason(self, address: str | IPAddress) -> str:
        """Why ``address`` is refused, or ``""`` when it is allowed."""
        return self.decide(address).reason


_cache: tuple[tuple[str, str], NetworkPolicy] | None = None


def current_policy() -> NetworkPolicy:
    """The policy of the current environment (re-read when the variables change)."""
    global _cache
    key = (os.environ.get(ALLOW_ENV, ""), os.environ.get(DENY_ENV, ""))
    cached = _cache
    if cached is not None and cached[0] == key:
        return cached[1]
    policy = NetworkPolicy.from_env()
    _cache = (key, policy)
    return policy


def allow_address(address: str | IPAddress) -> bool:
    """The environment's policy as a plain callable: may the SMTP client connect to ``address``?"""
    return current_policy().allow_address(address)


def denial_reason(address: str | IPAddress) -> str:
    """Why the environment's policy refuses ``address``, or ``""`` when it is allowed."""
    return current_policy().denial_reason(address)

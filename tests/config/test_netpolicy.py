"""The SSRF network policy: built-in denials, allow/deny lists from the environment, precedence."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailconduit import netpolicy
from mailconduit.errors import ConfigError
from mailconduit.netpolicy import NetworkPolicy


@pytest.fixture(autouse=True)
def _clean_policy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(netpolicy.ALLOW_ENV, raising=False)
    monkeypatch.delenv(netpolicy.DENY_ENV, raising=False)


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "169.254.0.1",
        "fe80::1",
        "fe80::1%eth0",
        "[fe80::abcd]",
        "fd00:ec2::254",
        "100.100.100.200",
        "::ffff:169.254.169.254",
        "0.0.0.0",
        "::",
    ],
)
def test_builtin_denials(address: str) -> None:
    decision = NetworkPolicy().decide(address)
    assert not decision.allowed
    assert "refused by the network policy" in decision.reason
    assert netpolicy.ALLOW_ENV in decision.reason  # tells how to re-open it


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "::1", "192.0.2.10", "10.1.2.3", "2001:db8::5", "100.100.100.201"]
)
def test_everything_else_allowed_by_default(address: str) -> None:
    assert netpolicy.allow_address(address)
    assert netpolicy.denial_reason(address) == ""


def test_not_an_ip_is_refused() -> None:
    decision = NetworkPolicy().decide("smtp.example.com")
    assert not decision.allowed
    assert "not an IP address" in decision.reason


def test_deny_list_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(netpolicy.DENY_ENV, "10.0.0.0/8, 2001:db8::/32")
    assert not netpolicy.allow_address("10.9.9.9")
    assert not netpolicy.allow_address("2001:db8::1")
    assert "10.0.0.0/8" in netpolicy.denial_reason("10.9.9.9")
    assert netpolicy.allow_address("192.0.2.1")


def test_allow_list_is_exclusive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(netpolicy.ALLOW_ENV, "127.0.0.0/8,::1")
    assert netpolicy.allow_address("127.0.0.1")
    assert netpolicy.allow_address("::1")
    assert not netpolicy.allow_address("192.0.2.1")
    assert "outside the networks" in netpolicy.denial_reason("192.0.2.1")


def test_allow_list_reopens_a_builtin_denial(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(netpolicy.ALLOW_ENV, "169.254.10.0/24")
    assert netpolicy.allow_address("169.254.10.5")
    assert not netpolicy.allow_address("169.254.169.254")


def test_deny_beats_allow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(netpolicy.ALLOW_ENV, "192.0.2.0/24")
    monkeypatch.setenv(netpolicy.DENY_ENV, "192.0.2.66")
    assert netpolicy.allow_address("192.0.2.65")
    assert not netpolicy.allow_address("192.0.2.66")


def test_policy_follows_environment_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert netpolicy.allow_address("198.51.100.1")
    monkeypatch.setenv(netpolicy.DENY_ENV, "198.51.100.0/24")
    assert not netpolicy.allow_address("198.51.100.1")


def test_malformed_network_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(netpolicy.DENY_ENV, "10.0.0.0/8, not-a-net, 300.1.1.1")
    with pytest.raises(ConfigError) as info:
        netpolicy.current_policy()
    assert info.value.field == netpolicy.DENY_ENV
    assert "'not-a-net'" in str(info.value) and "'300.1.1.1'" in str(info.value)


# --------------------------------------------------------------------------- IPv4 inside IPv6


def _embeddings(v4: ipaddress.IPv4Address, teredo_server: ipaddress.IPv4Address) -> dict[str, str]:
    """``v4`` written in every IPv6 form that leads a gateway or tunnel to it."""
    n = int(v4)
    local_use = int(ipaddress.IPv6Address("64:ff9b:1::"))
    # RFC 6052 with a /48 prefix: 16 bits of the IPv4 address, the zero "u" octet, 16 bits.
    local_48 = local_use | (n >> 16) << 64 | (n & 0xFFFF) << 40
    teredo = (0x20010000 << 96) | int(teredo_server) << 64 | (n ^ 0xFFFFFFFF)
    return {
        "mapped": f"::ffff:{v4}",
        "compatible": f"::{v4}",
        "siit": str(ipaddress.IPv6Address((0xFFFF << 48) | n)),
        "nat64": str(ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | n)),
        "nat64-local-96": str(ipaddress.IPv6Address(local_use | n)),
        "nat64-local-48": str(ipaddress.IPv6Address(local_48)),
        "6to4": str(ipaddress.IPv6Address((0x2002 << 112) | n << 80 | 1)),
        "teredo": str(ipaddress.IPv6Address(teredo)),
    }


@pytest.mark.parametrize(
    "address",
    [
        "::169.254.169.254",
        "64:ff9b::a9fe:a9fe",
        "2002:a9fe:a9fe::1",
        "::ffff:0:a9fe:a9fe",
        "64:ff9b:1:a9fe:a9:fe00::",
        "2001:0:4136:e378:8000:63bf:5601:5601",
        "64:ff9b::6464:64c8",  # 100.100.100.200
    ],
)
def test_ipv4_inside_ipv6_is_judged_as_ipv4(address: str) -> None:
    decision = NetworkPolicy().decide(address)
    assert not decision.allowed
    assert "leads to" in decision.reason and "refused by the network policy" in decision.reason


def test_loopback_and_plain_ipv6_are_not_taken_for_embedded_ipv4() -> None:
    policy = NetworkPolicy(deny=(ipaddress.ip_network("0.0.0.0/8"),))
    assert policy.allow_address("::1")  # not 0.0.0.1 in the IPv4-compatible form
    assert policy.allow_address("2001:db8::1")
    assert netpolicy.embedded_ipv4(ipaddress.IPv6Address("2001:db8::1")) == ()


ipv4s = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
denied_ipv4s = st.one_of(
    st.integers(0, 2**16 - 1).map(lambda n: ipaddress.IPv4Address(0xA9FE0000 + n)),
    st.just(ipaddress.IPv4Address("100.100.100.200")),
)
#: Addresses no built-in rule refuses (0.0.0.1 is left out: written ::1 it is IPv6 loopback).
plain_ipv4s = (
    st.integers(2, 2**32 - 1)
    .map(ipaddress.IPv4Address)
    .filter(lambda a: NetworkPolicy().allow_address(a))
)


@given(
    v4=denied_ipv4s,
    server=plain_ipv4s,
    form=st.sampled_from(sorted(_embeddings(ipaddress.IPv4Address(0), ipaddress.IPv4Address(0)))),
)
def test_every_embedding_of_a_refused_ipv4_is_refused(
    v4: ipaddress.IPv4Address, server: ipaddress.IPv4Address, form: str
) -> None:
    address = _embeddings(v4, server)[form]
    assert not NetworkPolicy().allow_address(address), (form, address)


@given(v4=plain_ipv4s, server=plain_ipv4s, data=st.data())
def test_embedding_changes_nothing_for_an_allowed_ipv4(
    v4: ipaddress.IPv4Address, server: ipaddress.IPv4Address, data: st.DataObject
) -> None:
    """An IPv4 address the policy allows stays allowed in every form; once its network is on
    the deny list, every form is refused."""
    form = data.draw(st.sampled_from(sorted(_embeddings(v4, server))))
    address = _embeddings(v4, server)[form]
    if not form.startswith("nat64-local"):
        # A local-use NAT64 address is read at every prefix length the range allows, and
        # refused when any reading is: only the forms with one reading are certain to pass.
        assert NetworkPolicy().allow_address(address), (form, address)
    network = ipaddress.ip_network(f"{v4}/24", strict=False)
    deny = NetworkPolicy(deny=(network,))
    assert not deny.allow_address(address), (form, address)
    if not form.startswith("nat64-local"):
        assert f"inside {network}" in deny.denial_reason(address)

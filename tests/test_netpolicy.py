"""The SSRF network policy: built-in denials, allow/deny lists from the environment, precedence."""

from __future__ import annotations

import pytest

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

"""FORWARDED_ALLOW_IPS: one type (a list of checked entries) and one meaning (the peers whose
X-Forwarded-For names the client) for the gateway and every service."""

import pytest
from pydantic import ValidationError
from realtime.forwarded import TrustedProxies, parse_trusted
from realtime.settings import ServiceSettings


def test_a_comma_string_and_a_list_read_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.0/8, 127.0.0.1,unix")
    assert ServiceSettings().forwarded_allow_ips == ["10.0.0.0/8", "127.0.0.1", "unix"]
    assert ServiceSettings(forwarded_allow_ips=["*"]).forwarded_allow_ips == ["*"]
    assert ServiceSettings.model_fields["forwarded_allow_ips"].description


def test_the_services_trust_the_gateway_on_loopback_and_the_unix_socket_by_default() -> None:
    assert ServiceSettings.model_fields["forwarded_allow_ips"].default == ["127.0.0.1", "unix"]


def test_a_typo_is_refused_rather_than_trusted_or_ignored() -> None:
    with pytest.raises(ValueError, match="CIDR"):
        parse_trusted("10.0.0.0/33")
    with pytest.raises(ValidationError, match="FORWARDED_ALLOW_IPS"):
        ServiceSettings(forwarded_allow_ips="gateway.local")


def test_trust_by_address_network_unix_and_star() -> None:
    trusted = TrustedProxies(["10.0.0.0/8", "127.0.0.1"])
    assert "10.1.2.3" in trusted and "127.0.0.1" in trusted
    assert "192.168.0.1" not in trusted and "unix" not in trusted and "not-an-ip" not in trusted
    assert "unix" in TrustedProxies(["unix"]) and None in TrustedProxies(["unix"])
    assert "203.0.113.9" in TrustedProxies(["*"])


def test_the_client_is_the_right_most_untrusted_hop_of_a_trusted_peer() -> None:
    trusted = TrustedProxies(["10.0.0.0/8"])
    assert trusted.client("10.0.0.1", ["198.51.100.7", "10.0.0.2"]) == "198.51.100.7"
    assert trusted.client("10.0.0.1", ["6.6.6.6", "198.51.100.7"]) == "198.51.100.7"  # spoofed left part
    assert trusted.client("10.0.0.1", []) == "10.0.0.1"
    # An untrusted peer's header is not believed: the peer is the client.
    assert trusted.client("198.51.100.7", ["1.2.3.4"]) == "198.51.100.7"

import pytest
from gateway.routes import RouteTable
from gateway.settings import GatewaySettings
from gateway.splice import Request
from gateway.upstreams import UpstreamPool, parse_target

TABLE = RouteTable({"/echo": "echo", "/ws/{room_id}": "rooms", "/stats": "stats"})


@pytest.mark.parametrize(
    ("path", "upstream"),
    [
        ("/echo", "echo"),
        ("/echo/", "echo"),
        ("/ws/VIP", "rooms"),
        ("/ws/", None),
        ("/ws/a/b", None),
        ("/stats", "stats"),
        ("/", None),
        ("/echoes", None),
    ],
)
def test_paths_route_to_their_upstream(path: str, upstream: str | None) -> None:
    assert TABLE.upstream_for(path) == upstream


def test_upstreams_setting_takes_lists_or_comma_strings(monkeypatch) -> None:
    monkeypatch.setenv("UPSTREAMS", '{"echo": "a:1, b:2", "rooms": ["c:3"], "stats": ["d:4"]}')
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.0/8, 127.0.0.1")
    settings = GatewaySettings()
    assert settings.upstreams["echo"] == ["a:1", "b:2"]
    assert settings.forwarded_allow_ips == ["10.0.0.0/8", "127.0.0.1"]


def test_targets_parse_and_bad_ones_are_refused() -> None:
    assert parse_target("[::1]:80") == ("::1", 80)
    with pytest.raises(ValueError, match="host:port"):
        parse_target("echo")


def test_round_robin_puts_replicas_known_down_last() -> None:
    pool = UpstreamPool("echo", ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"])
    firsts = [pool.candidates()[0] for _ in range(3)]
    assert sorted(firsts) == [("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 3)]
    pool.mark(("127.0.0.1", 2), False)
    for _ in range(3):
        assert pool.candidates()[-1] == ("127.0.0.1", 2)


RAW = (
    b"GET /ws/VIP?pass=x&format=json HTTP/1.1\r\nhost: gw\r\nupgrade: websocket\r\n"
    b"x-forwarded-for: 6.6.6.6\r\nsec-websocket-key: k\r\n\r\n"
)


def test_untrusted_peer_cannot_forge_its_address() -> None:
    head = Request(RAW).for_upstream("10.1.2.3", trusted=False)
    assert head.startswith(b"GET /ws/VIP?pass=x&format=json HTTP/1.1\r\n")
    assert b"6.6.6.6" not in head
    assert b"x-forwarded-for: 10.1.2.3\r\n" in head


def test_trusted_proxy_chain_is_extended() -> None:
    head = Request(RAW).for_upstream("10.1.2.3", trusted=True)
    assert b"x-forwarded-for: 6.6.6.6, 10.1.2.3\r\n" in head


def test_forwarded_allow_ips_has_the_services_type_and_meaning(monkeypatch) -> None:
    from realtime.settings import ServiceSettings

    gateway_field = GatewaySettings.model_fields["forwarded_allow_ips"]
    service_field = ServiceSettings.model_fields["forwarded_allow_ips"]
    assert gateway_field.annotation == service_field.annotation == list[str]
    assert gateway_field.default == []  # the public door trusts nobody's X-Forwarded-For by default
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "unix, 10.0.0.0/8")
    assert (
        GatewaySettings().forwarded_allow_ips
        == ServiceSettings().forwarded_allow_ips
        == ["unix", "10.0.0.0/8"]
    )
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.0/33")
    with pytest.raises(ValueError, match="FORWARDED_ALLOW_IPS"):
        GatewaySettings()


@pytest.mark.parametrize(
    ("path", "upstream"),
    [("/ws", "rooms"), ("/ws/lobby", "rooms"), ("/ws/a/b", None), ("/echo", "echo"), ("/stats", "stats")],
)
def test_the_default_routes_send_both_room_paths_to_rooms(path: str, upstream: str | None) -> None:
    """``/ws`` (many rooms on one connection) and ``/ws/{room_id}`` are both the rooms service's."""
    assert RouteTable(GatewaySettings().routes).upstream_for(path) == upstream

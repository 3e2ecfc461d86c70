"""The rooms app in one process: TestClient and the memory:// bus (the slow send path)."""

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from realtime.close_codes import CloseCode
from rooms_service.app import create_app
from rooms_service.guard import hash_password
from rooms_service.settings import RoomsSettings
from starlette.websockets import WebSocketDisconnect

PASSWORDS = {"VIP": "secret123", "vault": hash_password("vault-pw", iterations=1000)}


def make_client(**overrides: Any) -> TestClient:
    settings = RoomsSettings(bus_url="memory://", room_passwords=PASSWORDS, **overrides)
    return TestClient(create_app(settings))


@pytest.fixture
def client() -> Iterator[TestClient]:
    with make_client() as test_client:
        yield test_client


def room_subjects(client: TestClient) -> list[str]:
    """The bus subscriptions of rooms (the replica's one shared-throttle subscription left out)."""
    subjects = [s.subject for s in client.app.state.bus._subscriptions]  # type: ignore[attr-defined]
    return sorted(s for s in subjects if s != "rooms.auth.results")


def closed_code(ws: Any) -> tuple[int, str]:
    with pytest.raises(WebSocketDisconnect) as info:
        ws.receive_text()
    return info.value.code, info.value.reason


def test_message_reaches_every_member_sender_included_and_no_other_room(client: TestClient) -> None:
    with (
        client.websocket_connect("/ws/lobby") as alice,
        client.websocket_connect("/ws/lobby") as bob,
        client.websocket_connect("/ws/kitchen") as carol,
    ):
        alice.send_text("hello")
        assert alice.receive_text() == "hello"
        assert bob.receive_text() == "hello"
        carol.send_text("only kitchen")
        assert carol.receive_text() == "only kitchen"  # the first thing carol hears is her own room
        bob.send_text("one")
        bob.send_text("two")
        assert [alice.receive_text(), alice.receive_text()] == ["one", "two"]
        assert [bob.receive_text(), bob.receive_text()] == ["one", "two"]


def test_subscription_follows_local_membership(client: TestClient) -> None:
    rooms = client.app.state.rooms  # type: ignore[attr-defined]
    with client.websocket_connect("/ws/lobby") as a, client.websocket_connect("/ws/lobby") as b:
        a.send_text("x")
        b.receive_text()
        assert rooms.stats() == {"rooms": 1, "subscriptions": 1, "members": 2, "slow_consumers_cut_off": 0}
        assert room_subjects(client) == ["rooms.lobby"]  # one per room, not one per member
    assert client.get("/rooms").json()["subscriptions"] == 0
    assert room_subjects(client) == []


@pytest.mark.parametrize(
    "url",
    [
        "/ws/VIP",
        "/ws/VIP?pass=wrong",
        "/ws/VIP?pass=",
        "/ws/vault?pass=secret123",
        "/ws/VIP?password=secret123",
    ],
)
def test_wrong_or_missing_password_closes_4003_after_accept(client: TestClient, url: str) -> None:
    with client.websocket_connect(url) as ws:  # the handshake succeeds: the client sees the code
        assert closed_code(ws) == (CloseCode.FORBIDDEN, "forbidden")
    assert client.get("/rooms").json()["members"] == 0


@pytest.mark.parametrize("url", ["/ws/VIP?pass=secret123", "/ws/vault?pass=vault-pw&format=json"])
def test_right_password_joins(client: TestClient, url: str) -> None:
    with client.websocket_connect(url) as ws:
        if "json" in url:
            assert ws.receive_json()["type"] == "welcome"
        ws.send_text("in")
        message = ws.receive_json() if "json" in url else ws.receive_text()
        assert message == "in" or message["text"] == "in"


def test_repeated_failures_are_throttled_even_with_the_right_password() -> None:
    with make_client(auth_max_failures=3) as client:
        for _ in range(3):
            with client.websocket_connect("/ws/VIP?pass=guess") as ws:
                assert closed_code(ws)[0] == CloseCode.FORBIDDEN
        with client.websocket_connect("/ws/VIP?pass=secret123") as ws:
            assert closed_code(ws) == (CloseCode.FORBIDDEN, "forbidden")
        with client.websocket_connect("/ws/lobby") as ws:  # other rooms are not affected
            ws.send_text("fine")
            assert ws.receive_text() == "fine"


@pytest.mark.parametrize(
    "path", ["/ws/a.b", "/ws/*", "/ws/%3E", "/ws/a%20b", "/ws/" + "x" * 65, "/ws/a/b", "/ws/a%2Eb"]
)
def test_invalid_room_id_closes_1008(client: TestClient, path: str) -> None:
    with client.websocket_connect(path) as ws:
        assert closed_code(ws) == (CloseCode.POLICY_VIOLATION, "invalid room id")
    assert room_subjects(client) == []


def test_unknown_format_closes_1008(client: TestClient) -> None:
    with client.websocket_connect("/ws/lobby?format=xml") as ws:
        assert closed_code(ws)[0] == CloseCode.POLICY_VIOLATION


def test_json_envelopes_carry_sender_seq_and_presence(client: TestClient) -> None:
    with client.websocket_connect("/ws/lobby?format=json") as watcher:
        welcome = watcher.receive_json()
        assert welcome["type"] == "welcome" and welcome["count"] == 1
        assert len(welcome["you"]) == 12
        with client.websocket_connect("/ws/lobby") as plain:
            joined = watcher.receive_json()
            assert (joined["type"], joined["count"]) == ("join", 2)
            plain.send_text("hi there")
            message = watcher.receive_json()
            assert message["type"] == "message" and message["text"] == "hi there"
            assert message["sender"] == joined["member"] and message["room"] == "lobby"
            assert message["seq"] > joined["seq"] and message["ts"] > 0
            assert plain.receive_text() == "hi there"  # plain clients never see JSON or presence
        left = watcher.receive_json()
        assert (left["type"], left["count"], left["member"]) == ("leave", 1, joined["member"])
        assert left["seq"] > message["seq"]


def test_binary_message_closes_1008(client: TestClient) -> None:
    with client.websocket_connect("/ws/lobby") as ws:
        ws.send_bytes(b"\x00")
        assert closed_code(ws) == (CloseCode.POLICY_VIOLATION, "text messages only")


def test_message_rate_limit_closes_1008_and_others_stay() -> None:
    with (
        make_client(message_rate=1.0, message_burst=3) as client,
        client.websocket_connect("/ws/lobby") as calm,
        client.websocket_connect("/ws/lobby") as noisy,
    ):
        for i in range(4):
            noisy.send_text(f"m{i}")
        for i in range(3):
            assert noisy.receive_text() == f"m{i}"
        assert closed_code(noisy) == (CloseCode.POLICY_VIOLATION, "rate limit exceeded")
        assert [calm.receive_text() for _ in range(3)] == ["m0", "m1", "m2"]
        calm.send_text("still here")
        assert calm.receive_text() == "still here"


def test_passwords_never_reach_a_log_line(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for url in ("/ws/VIP?pass=wrong-guess-42", "/ws/VIP?pass=secret123"):
        with client.websocket_connect(url) as ws:
            if "secret123" in url:
                ws.send_text("x")
                ws.receive_text()
            else:
                closed_code(ws)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "refused" in logged
    assert "wrong-guess-42" not in logged and "secret123" not in logged


def test_failed_publish_closes_1013(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_bus(*args: object) -> None:
        raise ConnectionError("NATS buffer full")

    monkeypatch.setattr(client.app.state.rooms, "say", no_bus)  # type: ignore[attr-defined]
    with client.websocket_connect("/ws/lobby") as ws:
        ws.send_text("lost")
        assert closed_code(ws) == (CloseCode.TRY_AGAIN_LATER, "messaging unavailable")


def test_password_check_results_are_shared_and_applied(client: TestClient) -> None:
    guard = client.app.state.guard  # type: ignore[attr-defined]
    for _ in range(5):  # as if another replica saw five failures from this client
        guard.heard("testclient", "VIP", False)
    with client.websocket_connect("/ws/VIP?pass=secret123") as ws:
        assert closed_code(ws) == (CloseCode.FORBIDDEN, "forbidden")
    guard.heard("testclient", "VIP", True)  # a success elsewhere clears the count
    with client.websocket_connect("/ws/VIP?pass=secret123") as ws:
        ws.send_text("in")
        assert ws.receive_text() == "in"

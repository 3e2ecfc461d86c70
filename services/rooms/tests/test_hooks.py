"""Hooks in the rooms app alone (the app's backend and its answers: tests/test_rooms_hooks.py)."""

import pytest
from realtime.close_codes import CloseCode
from realtime.testing import free_port
from rooms_service.app import create_app
from rooms_service.hooks import short_reason
from rooms_service.settings import RoomsSettings
from roomsclient import client, close_of, recv_json, served


def nobody_listening() -> str:
    return f"http://127.0.0.1:{free_port()}/join"


async def test_a_join_hook_that_cannot_be_reached_refuses_with_1013() -> None:
    async with served(join_hook_url=nobody_listening()) as (app, url), client(f"{url}/ws/lobby") as conn:
        assert await close_of(conn) == (CloseCode.TRY_AGAIN_LATER, "try again later")
        assert app.state.rooms.stats()["members"] == 0


async def test_with_fail_open_a_join_hook_that_cannot_be_reached_admits() -> None:
    async with (
        served(join_hook_url=nobody_listening(), join_hook_fail_open=True) as (_, url),
        client(f"{url}/ws/lobby?format=json&name=Kim") as conn,
    ):
        welcome = await recv_json(conn)
        assert (welcome["type"], welcome["name"]) == ("welcome", "Kim")


async def test_a_publish_hook_that_cannot_be_reached_stores_nothing_and_says_1013() -> None:
    async with (
        served(publish_hook_url=nobody_listening()) as (_, url),
        client(f"{url}/ws/lobby?format=json") as conn,
    ):
        assert (await recv_json(conn))["type"] == "welcome"
        await conn.send('{"text":"hello","id":"m-1"}')
        assert await recv_json(conn) == {
            "type": "error",
            "id": "m-1",
            "code": CloseCode.TRY_AGAIN_LATER,
            "reason": "try again later",
        }


@pytest.mark.parametrize("secret", ["not-a-whsec", "whsec_c2hvcnQ="])
@pytest.mark.parametrize(
    ("setting", "field", "extra"),
    [
        ("HOOK_SECRET", "hook_secret", {}),
        ("EVENTS_WEBHOOK_SECRET", "events_webhook_secret", {"events_webhook_url": "http://127.0.0.1:9/e"}),
    ],
)
def test_a_malformed_secret_stops_the_start_naming_its_setting(
    secret: str, setting: str, field: str, extra: dict[str, str]
) -> None:
    with pytest.raises(ValueError) as refused:
        create_app(RoomsSettings(bus_url="memory://", **{field: secret}, **extra))
    assert str(refused.value).startswith(f"{setting} must")
    assert secret not in str(refused.value)


def test_a_hook_url_must_be_http() -> None:
    with pytest.raises(ValueError):
        RoomsSettings(join_hook_url="ftp://example.invalid/join")


def test_a_long_reason_is_cut_to_what_a_close_frame_carries() -> None:
    assert len(short_reason("é" * 100).encode("utf-8")) <= 123
    assert short_reason("fine") == "fine"

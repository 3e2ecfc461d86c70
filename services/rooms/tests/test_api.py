"""The HTTP API (publish, history) through the rooms app under the platform's uvicorn, memory:// bus."""

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from realtime.bus import BusUnavailable
from rooms_service import guard
from rooms_service.app import create_app
from rooms_service.guard import hash_password
from rooms_service.settings import RoomsSettings
from roomsclient import DEADLINE, client, recv, recv_json, served

KEY = "test-key-5b1c9e"
HASHED_KEY = "hashed-key-77d0a1"
SECRET_TEXT = "payload-secret-e41f"
AUTH = {"Authorization": f"Bearer {KEY}"}
URL = "/api/rooms/lobby/messages"


@contextlib.asynccontextmanager
async def api_app(**overrides: Any) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """The app (keys: ``KEY`` unless told) and an HTTP client for it."""
    overrides.setdefault("publish_api_keys", [KEY])
    async with served(**overrides) as (app, url), http(url) as http_client:
        yield app, http_client


@pytest.fixture
async def api() -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    async with api_app() as running:
        yield running


def http(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url.replace("ws://", "http://"), timeout=DEADLINE)


async def test_publish_reaches_json_and_text_members_with_seq_sender_and_name(api) -> None:
    app, http_client = api
    url = f"ws://127.0.0.1:{app.state.settings.port}"
    async with client(f"{url}/ws/lobby?format=json") as member, client(f"{url}/ws/lobby") as plain:
        assert (await recv_json(member))["type"] == "welcome"
        await recv_json(member)  # the plain member's join
        answer = await http_client.post(
            URL, json={"text": "shipped", "name": "shop", "id": "o-1"}, headers=AUTH
        )
        assert answer.status_code == 201
        assert answer.json() == {"seq": answer.json()["seq"], "duplicate": False} and answer.json()["seq"] > 0
        event = await recv_json(member)
        assert event["type"] == "message" and event["text"] == "shipped" and event["sender"] == "api"
        assert (event["name"], event["id"], event["seq"]) == ("shop", "o-1", answer.json()["seq"])
        assert "user" not in event
        assert list(event) == ["type", "room", "sender", "text", "ts", "origin", "id", "name", "seq"]
        assert await recv(plain) == "shipped"


async def test_same_id_is_stored_once_with_the_first_seq(api) -> None:
    _, http_client = api
    first = await http_client.post(URL, json={"text": "once", "id": "same"}, headers=AUTH)
    again = await http_client.post(URL, json={"text": "once", "id": "same"}, headers=AUTH)
    other_room = await http_client.post(
        "/api/rooms/other/messages", json={"text": "x", "id": "same"}, headers=AUTH
    )
    assert (first.status_code, again.status_code, other_room.status_code) == (201, 201, 201)
    assert again.json() == {"seq": first.json()["seq"], "duplicate": True}
    assert other_room.json()["duplicate"] is False  # ids are per room
    history = (await http_client.get(URL, headers=AUTH)).json()
    assert [m["text"] for m in history["messages"]] == ["once"]


async def test_a_members_id_and_an_api_id_do_not_collide(api) -> None:
    app, http_client = api
    url = f"ws://127.0.0.1:{app.state.settings.port}"
    async with client(f"{url}/ws/lobby?format=json") as member:
        await recv_json(member)
        await member.send(json.dumps({"text": "from member", "id": "m-1"}))
        acked = await recv_json(member, skip=("members", "message"))
        answer = await http_client.post(URL, json={"text": "from api", "id": "m-1"}, headers=AUTH)
        assert answer.json()["duplicate"] is False and answer.json()["seq"] > acked["seq"]


async def test_history_returns_messages_as_members_get_them(api) -> None:
    app, http_client = api
    url = f"ws://127.0.0.1:{app.state.settings.port}"
    empty = await http_client.get(URL, headers=AUTH)
    assert empty.status_code == 200 and empty.json()["seq"] == 0 and empty.json()["messages"] == []
    async with client(f"{url}/ws/lobby?format=json") as member:
        welcome = await recv_json(member)
        await member.send("said by a member")
        as_member = await recv(member)
        seqs = [
            (await http_client.post(URL, json={"text": f"n{i}"}, headers=AUTH)).json()["seq"]
            for i in range(4)
        ]
    page = await http_client.get(URL, params={"limit": 2}, headers=AUTH)
    assert page.status_code == 200 and page.headers["content-type"] == "application/json"
    body = page.json()
    assert (body["room"], body["epoch"], body["seq"]) == ("lobby", welcome["epoch"], seqs[-1])
    assert [m["text"] for m in body["messages"]] == ["said by a member", "n0"]
    assert json.dumps(body["messages"][0], separators=(",", ":"), ensure_ascii=False) == as_member
    rest = (await http_client.get(URL, params={"since": body["messages"][-1]["seq"]}, headers=AUTH)).json()
    assert [m["seq"] for m in rest["messages"]] == seqs[1:]
    past = (await http_client.get(URL, params={"since": seqs[-1]}, headers=AUTH)).json()
    assert past["messages"] == [] and past["seq"] == seqs[-1]


async def test_history_is_capped_by_what_is_stored() -> None:
    async with api_app(room_history_size=3) as (_, http_client):
        for i in range(5):
            await http_client.post(URL, json={"text": f"n{i}"}, headers=AUTH)
        body = (await http_client.get(URL, params={"limit": 1000}, headers=AUTH)).json()
        assert [m["text"] for m in body["messages"]] == ["n2", "n3", "n4"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}, {"Authorization": "Bearer"}],
)
async def test_missing_or_wrong_key_is_401_with_www_authenticate(api, headers: dict[str, str]) -> None:
    _, http_client = api
    for answer in (
        await http_client.post(URL, json={"text": "x"}, headers=headers),
        await http_client.get(URL, headers=headers),
    ):
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.json() == {"detail": "missing or wrong API key"}


async def test_the_key_is_checked_before_the_body_and_the_room() -> None:
    async with api_app() as (_, http_client):
        for path, body in [("/api/rooms/a.b/messages", b"{}"), (URL, b"{broken"), (URL, b"x" * 1_000_000)]:
            assert (await http_client.post(path, content=body)).status_code == 401


async def test_no_keys_configured_refuses_everyone() -> None:
    async with api_app(publish_api_keys=[]) as (_, http_client):
        answer = await http_client.post(URL, json={"text": "x"}, headers={"Authorization": "Bearer anything"})
        assert answer.status_code == 401


async def test_hashed_key_costs_pbkdf2_once_per_replica(monkeypatch: pytest.MonkeyPatch) -> None:
    hashed = hash_password(HASHED_KEY, iterations=1000)
    calls = []
    real = hashlib.pbkdf2_hmac

    def counting(*args: Any) -> bytes:
        calls.append(args[1])
        return real(*args)

    monkeypatch.setattr(guard.hashlib, "pbkdf2_hmac", counting)
    async with api_app(publish_api_keys=[hashed, KEY]) as (_, http_client):
        headers = {"Authorization": f"Bearer {HASHED_KEY}"}
        answers = await asyncio.gather(
            *[http_client.post(URL, json={"text": f"h{i}"}, headers=headers) for i in range(5)]
        )
        answers += [await http_client.get(URL, headers=headers) for _ in range(3)]
        assert [a.status_code for a in answers] == [201] * 5 + [200] * 3
        assert calls == [HASHED_KEY.encode()]  # concurrent first requests shared one verification
        assert (await http_client.get(URL, headers=AUTH)).status_code == 200  # plain keys: no PBKDF2
        wrong = await http_client.get(URL, headers={"Authorization": "Bearer not-it"})
        assert wrong.status_code == 401 and len(calls) == 2  # a wrong key is never remembered


async def test_wrong_keys_from_one_address_are_throttled_even_with_the_right_key() -> None:
    async with api_app(auth_max_failures=3, auth_failure_window=30) as (_, http_client):
        for _ in range(3):
            answer = await http_client.post(URL, json={"text": "x"}, headers={"Authorization": "Bearer no"})
            assert answer.status_code == 401
        for headers in ({"Authorization": "Bearer no"}, AUTH, {}):
            answer = await http_client.post(URL, json={"text": "x"}, headers=headers)
            assert answer.status_code == 429
            assert 1 <= int(answer.headers["retry-after"]) <= 30
            assert answer.json() == {"detail": "too many failures"}
        other = {**AUTH, "X-Forwarded-For": "10.1.2.3"}  # another client behind the gateway
        assert (await http_client.post(URL, json={"text": "x"}, headers=other)).status_code == 201


async def test_over_the_rate_of_its_key_is_429_retry_after_1() -> None:
    async with api_app(publish_api_keys=[KEY, "second-key"], publish_rate=0.01, publish_burst=3) as (
        _,
        http_client,
    ):
        answers = [await http_client.post(URL, json={"text": f"r{i}"}, headers=AUTH) for i in range(4)]
        assert [a.status_code for a in answers] == [201, 201, 201, 429]
        assert answers[-1].headers["retry-after"] == "1"
        assert answers[-1].json() == {"detail": "rate limit exceeded"}
        assert (await http_client.get(URL, headers=AUTH)).status_code == 429  # reads count too
        other = {"Authorization": "Bearer second-key"}  # per key
        assert (await http_client.post(URL, json={"text": "x"}, headers=other)).status_code == 201


@pytest.mark.parametrize("room", ["a.b", "*", "%3E", "a%20b", "x" * 65])
async def test_invalid_room_id_is_400(api, room: str) -> None:
    _, http_client = api
    for answer in (
        await http_client.post(f"/api/rooms/{room}/messages", json={"text": "x"}, headers=AUTH),
        await http_client.get(f"/api/rooms/{room}/messages", headers=AUTH),
    ):
        assert answer.status_code == 400 and answer.json() == {"detail": "invalid room id"}


async def test_text_over_ws_max_size_bytes_is_413() -> None:
    async with api_app(ws_max_size=1024) as (_, http_client):
        fits = await http_client.post(URL, json={"text": "é" * 512}, headers=AUTH)  # 1024 bytes of UTF-8
        over = await http_client.post(URL, json={"text": "é" * 513}, headers=AUTH)
        assert (fits.status_code, over.status_code) == (201, 413)
        assert over.json() == {"detail": "text over WS_MAX_SIZE bytes"}
        # JSON may escape what it carries (\u00e9 is 6 bytes for 2): such a body still fits the bound
        escaped = json.dumps({"text": "\x01" * 1024}).encode()
        assert len(escaped) > 6 * 1024
        assert (await http_client.post(URL, content=escaped, headers=AUTH)).status_code == 201


async def test_a_body_over_the_bound_is_413_without_being_read() -> None:
    async with served(publish_api_keys=[KEY], ws_max_size=1024) as (_, url):
        host, port = url.removeprefix("ws://").split(":")
        for framing in (b"Content-Length: 100000000\r\n", b"Transfer-Encoding: chunked\r\n"):
            reader, writer = await asyncio.open_connection(host, int(port))
            try:
                head = b"POST /api/rooms/lobby/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                writer.write(head % KEY.encode() + framing + b"\r\n")
                if b"chunked" in framing:  # it keeps sending: the answer comes once the bound is passed
                    for _ in range(10):
                        writer.write(b"%x\r\n%s\r\n" % (4096, b"x" * 4096))
                else:
                    writer.write(b"x" * 1000)  # far less than announced: answered without waiting for it
                await writer.drain()
                answer = await asyncio.wait_for(reader.read(1000), DEADLINE)
                assert answer.startswith(b"HTTP/1.1 413 "), answer
                assert b'{"detail":"request body too large"}' in answer
            finally:
                writer.close()


@pytest.mark.parametrize(
    "body",
    [
        b"{broken",
        b"",
        b"[]",
        b'{"text": 1}',
        b'{"text": null}',
        b'{"name": "no text"}',
        b'{"text": "x", "extra": 1}',
        b'{"text": "x", "name": ""}',
        b'{"text": "x", "name": "' + b"n" * 65 + b'"}',
        b'{"text": "x", "name": "tab\\there"}',
        b'{"text": "x", "id": "' + b"i" * 129 + b'"}',
        b'{"text": "x", "id": 7}',
        b'{"text": "\\ud800"}',
    ],
)
async def test_broken_json_wrong_types_unknown_fields_are_422(api, body: bytes) -> None:
    _, http_client = api
    answer = await http_client.post(URL, content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert answer.status_code == 422
    assert all(error["loc"][0] == "body" for error in answer.json()["detail"])


@pytest.mark.parametrize("query", ["since=-1", "since=x", "limit=0", "limit=1001", "limit=x"])
async def test_bad_since_or_limit_is_422(api, query: str) -> None:
    _, http_client = api
    assert (await http_client.get(f"{URL}?{query}", headers=AUTH)).status_code == 422


async def test_messaging_unavailable_is_503_with_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    async with api_app(room_store_timeout=0.3) as (app, http_client):
        tries = []

        async def unavailable(*args: Any, **kwargs: Any) -> Any:
            tries.append(args)
            raise BusUnavailable("not connected")

        for method in ("store", "stored_after", "last_stored"):
            monkeypatch.setattr(app.state.bus, method, unavailable)
        answer = await http_client.post(URL, json={"text": "x", "id": "retry-me"}, headers=AUTH)
        assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
        assert answer.json() == {"detail": "messaging unavailable"}
        assert len(tries) > 1  # retried (with the same id) until ROOM_STORE_TIMEOUT
        answer = await http_client.get(URL, headers=AUTH)
        assert answer.status_code == 503 and answer.headers["retry-after"] == "5"


async def test_keys_and_texts_never_reach_a_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    hashed = hash_password(HASHED_KEY, iterations=1000)
    async with api_app(publish_api_keys=[KEY, hashed], access_log=True, auth_max_failures=2) as (
        app,
        http_client,
    ):
        await http_client.post(URL, json={"text": SECRET_TEXT}, headers=AUTH)
        await http_client.post(
            URL, json={"text": SECRET_TEXT}, headers={"Authorization": f"Bearer {HASHED_KEY}"}
        )
        await http_client.get(URL, headers=AUTH)
        monkey = app.state.bus.store

        async def failing(*args: Any, **kwargs: Any) -> Any:
            raise BusUnavailable("not connected")

        app.state.bus.store = failing
        try:
            await http_client.post(URL, json={"text": SECRET_TEXT}, headers=AUTH)
        finally:
            app.state.bus.store = monkey
        for _ in range(3):
            await http_client.post(URL, json={"text": "x"}, headers={"Authorization": f"Bearer {KEY}x"})
    logs = caplog.text
    assert "POST /api/rooms/lobby/messages" in logs  # the access log was captured
    assert "api: refused 127.0.0.1 (wrong key)" in logs and "(throttled key)" in logs
    for secret in (KEY, HASHED_KEY, SECRET_TEXT):
        assert secret not in logs


async def test_the_openapi_schema_shows_both_routes_with_a_bearer_scheme(api) -> None:
    _, http_client = api
    schema = (await http_client.get("/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "one of PUBLISH_API_KEYS",
    }
    operations = schema["paths"]["/api/rooms/{room_id}/messages"]
    assert set(operations) == {"get", "post", "delete"}  # delete: the server API (server_api.py)
    for operation in operations.values():
        assert operation["security"] == [{"HTTPBearer": []}]
        assert {"400", "401", "429", "503"} <= set(operation["responses"])
    post = operations["post"]
    body_schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema["required"] == ["text"] and set(body_schema["properties"]) == {"text", "name", "id"}
    assert body_schema["additionalProperties"] is False
    assert {"201", "413", "422"} <= set(post["responses"])
    assert {"since", "limit"} == {p["name"] for p in operations["get"]["parameters"] if p["in"] == "query"}
    assert "HistoryResponse" in schema["components"]["schemas"]
    assert [p for p in schema["paths"] if not p.startswith("/api/")] == []  # health, metrics: not in it


def test_a_malformed_key_stops_the_app_without_echoing_it() -> None:
    for bad in ("pbkdf2_sha256$S3cr3t", "has a space S3cr3t", "unicodé-S3cr3t"):
        with pytest.raises(ValueError) as info:
            create_app(RoomsSettings(bus_url="memory://", publish_api_keys=[bad]))
        assert "S3cr3t" not in str(info.value)


def test_keys_come_from_the_list_and_the_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(["from-file"]))
    monkeypatch.setenv("PUBLISH_API_KEYS", json.dumps(["from-env"]))
    monkeypatch.setenv("PUBLISH_API_KEYS_FILE", str(path))
    assert RoomsSettings().api_keys() == ["from-env", "from-file"]
    path.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(ValueError, match="JSON list"):
        RoomsSettings().api_keys()


def test_a_malformed_keys_setting_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBLISH_API_KEYS", json.dumps({"S3cr3t": 1}))
    with pytest.raises(ValueError) as info:
        RoomsSettings()
    assert "S3cr3t" not in str(info.value)

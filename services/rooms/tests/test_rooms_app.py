"""The rooms app in one process, under the platform's real uvicorn protocol, on the memory:// bus."""

import asyncio
import json
import logging
import urllib.request

import pytest
from realtime.close_codes import CloseCode
from rooms_service.guard import hash_password
from roomsclient import DEADLINE, client, close_of, recv, recv_json, served

PASSWORDS = {"VIP": "secret123", "vault": hash_password("vault-pw", iterations=1000)}


def room_subjects(app) -> list[str]:  # type: ignore[no-untyped-def]
    """The bus subscriptions of rooms (the replica's own shared-throttle and presence ones left out)."""
    subjects = [s.subject for s in app.state.bus._subscriptions]
    return sorted(s for s in subjects if s.count(".") == 1)


def get_json(url: str, path: str) -> dict:
    with urllib.request.urlopen(url.replace("ws://", "http://") + path, timeout=DEADLINE) as response:
        return json.loads(response.read())


async def test_message_reaches_every_member_sender_included_and_no_other_room() -> None:
    async with (
        served() as (_, url),
        client(f"{url}/ws/lobby") as alice,
        client(f"{url}/ws/lobby") as bob,
        client(f"{url}/ws/kitchen") as carol,
    ):
        await alice.send("hello")
        assert await recv(alice) == "hello"
        assert await recv(bob) == "hello"
        await carol.send("only kitchen")
        assert await recv(carol) == "only kitchen"  # the first thing carol hears is her own room
        await bob.send("one")
        await bob.send("two")
        assert [await recv(alice), await recv(alice)] == ["one", "two"]
        assert [await recv(bob), await recv(bob)] == ["one", "two"]


async def test_subscription_follows_local_membership() -> None:
    async with served() as (app, url):
        rooms = app.state.rooms
        async with client(f"{url}/ws/lobby") as a, client(f"{url}/ws/lobby") as b:
            await a.send("x")
            await recv(b)
            assert rooms.stats() == {
                "rooms": 1,
                "subscriptions": 1,
                "members": 2,
                "slow_consumers_cut_off": 0,
            }
            assert room_subjects(app) == ["rooms.lobby"]  # one per room, not one per member
        async with asyncio.timeout(DEADLINE):
            internal = f"http://127.0.0.1:{app.state.settings.internal_port}"  # /rooms is an operator path
            while (await asyncio.to_thread(get_json, internal, "/rooms"))["subscriptions"]:
                await asyncio.sleep(0.01)
        assert room_subjects(app) == []


@pytest.mark.parametrize(
    "path",
    ["/ws/VIP", "/ws/VIP?pass=wrong", "/ws/VIP?pass=", "/ws/vault?pass=secret123", "/ws/VIP?password=x"],
)
async def test_wrong_or_missing_password_closes_4003_after_accept(path: str) -> None:
    async with served(room_passwords=PASSWORDS) as (app, url), client(f"{url}{path}") as ws:
        assert await close_of(ws) == (CloseCode.FORBIDDEN, "forbidden")
        assert app.state.rooms.stats()["members"] == 0


@pytest.mark.parametrize("path", ["/ws/VIP?pass=secret123", "/ws/vault?pass=vault-pw&format=json"])
async def test_right_password_joins(path: str) -> None:
    async with served(room_passwords=PASSWORDS) as (_, url), client(f"{url}{path}") as ws:
        if "json" in path:
            assert (await recv_json(ws))["type"] == "welcome"
        await ws.send("in")
        message = await recv(ws)
        assert message == "in" or json.loads(message)["text"] == "in"


async def test_repeated_failures_are_throttled_even_with_the_right_password() -> None:
    async with served(room_passwords=PASSWORDS, auth_max_failures=3) as (_, url):
        for _ in range(3):
            async with client(f"{url}/ws/VIP?pass=guess") as ws:
                assert (await close_of(ws))[0] == CloseCode.FORBIDDEN
        async with client(f"{url}/ws/VIP?pass=secret123") as ws:
            assert await close_of(ws) == (CloseCode.FORBIDDEN, "forbidden")
        async with client(f"{url}/ws/lobby") as ws:  # other rooms are not affected
            await ws.send("fine")
            assert await recv(ws) == "fine"


@pytest.mark.parametrize(
    "path", ["/ws/a.b", "/ws/*", "/ws/%3E", "/ws/a%20b", "/ws/" + "x" * 65, "/ws/a/b", "/ws/a%2Eb"]
)
async def test_invalid_room_id_closes_1008(path: str) -> None:
    async with served() as (app, url), client(f"{url}{path}") as ws:
        assert await close_of(ws) == (CloseCode.POLICY_VIOLATION, "invalid room id")
        assert room_subjects(app) == []


@pytest.mark.parametrize(
    "query", ["format=xml", "since=3", "format=json&since=-1", "format=json&history=x", "history=2"]
)
async def test_bad_format_since_or_history_closes_1008(query: str) -> None:
    async with served() as (_, url), client(f"{url}/ws/lobby?{query}") as ws:
        assert (await close_of(ws))[0] == CloseCode.POLICY_VIOLATION


async def test_json_envelopes_carry_sender_seq_and_presence() -> None:
    async with served() as (_, url), client(f"{url}/ws/lobby?format=json") as watcher:
        welcome = await recv_json(watcher)
        assert welcome["type"] == "welcome" and welcome["count"] == 1
        assert welcome["seq"] == 0 and welcome["epoch"] and "recovered" not in welcome
        assert len(welcome["you"]) == 12
        async with client(f"{url}/ws/lobby") as plain:
            joined = await recv_json(watcher)
            assert (joined["type"], joined["count"]) == ("join", 2)
            assert "seq" not in joined  # presence is outside the message seq space
            await plain.send("hi there")
            message = await recv_json(watcher)
            assert message["type"] == "message" and message["text"] == "hi there"
            assert message["sender"] == joined["member"] and message["room"] == "lobby"
            assert message["seq"] == 1 and message["ts"] > 0
            assert await recv(plain) == "hi there"  # plain clients never see JSON or presence
        left = await recv_json(watcher)
        assert (left["type"], left["count"], left["member"]) == ("leave", 1, joined["member"])


async def test_binary_message_closes_1008() -> None:
    async with served() as (_, url), client(f"{url}/ws/lobby") as ws:
        await ws.send(b"\x00")
        assert await close_of(ws) == (CloseCode.POLICY_VIOLATION, "text messages only")


async def test_message_rate_limit_closes_1008_and_others_stay() -> None:
    async with (
        served(message_rate=1.0, message_burst=3) as (_, url),
        client(f"{url}/ws/lobby") as calm,
        client(f"{url}/ws/lobby") as noisy,
    ):
        for i in range(4):
            await noisy.send(f"m{i}")
        assert await close_of(noisy) == (CloseCode.POLICY_VIOLATION, "rate limit exceeded")
        assert [await recv(calm) for _ in range(3)] == ["m0", "m1", "m2"]
        await calm.send("still here")
        assert await recv(calm) == "still here"


async def test_passwords_never_reach_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with served(room_passwords=PASSWORDS) as (_, url):
        async with client(f"{url}/ws/VIP?pass=wrong-guess-42") as ws:
            await close_of(ws)
        async with client(f"{url}/ws/VIP?pass=secret123") as ws:
            await ws.send("x")
            await recv(ws)
    # the service's own lines (uvicorn's access line is redacted by realtime.logs, set up by serve())
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("rooms_service"))
    assert "refused" in logged
    assert "wrong-guess-42" not in logged and "secret123" not in logged


async def test_failed_store_closes_1013(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_bus(*args: object) -> None:
        raise ConnectionError("NATS buffer full")

    async with served() as (app, url), client(f"{url}/ws/lobby") as ws:
        monkeypatch.setattr(app.state.rooms, "say", no_bus)
        await ws.send("lost")
        assert await close_of(ws) == (CloseCode.TRY_AGAIN_LATER, "messaging unavailable")


async def test_password_check_results_are_shared_and_applied() -> None:
    async with served(room_passwords=PASSWORDS) as (app, url):
        guard = app.state.guard
        for _ in range(5):  # as if another replica saw five failures from this client
            guard.heard("127.0.0.1", "VIP", False)
        async with client(f"{url}/ws/VIP?pass=secret123") as ws:
            assert await close_of(ws) == (CloseCode.FORBIDDEN, "forbidden")
        guard.heard("127.0.0.1", "VIP", True)  # a success elsewhere clears the count
        async with client(f"{url}/ws/VIP?pass=secret123") as ws:
            await ws.send("in")
            assert await recv(ws) == "in"


# --- stored messages: acks, dedup, resume, history -----------------------------------------------
async def test_a_sent_id_is_acknowledged_with_its_seq_and_a_resend_is_stored_once() -> None:
    async with (
        served() as (_, url),
        client(f"{url}/ws/lobby?format=json") as sender,
        client(f"{url}/ws/lobby?format=json") as member,
    ):
        await recv_json(sender, skip=("members", "join"))
        await recv_json(member)
        await sender.send(json.dumps({"text": "once", "id": "c1-1"}))
        first = [await recv_json(sender, skip=("members", "join")) for _ in range(2)]
        ack = next(e for e in first if e["type"] == "ack")
        message = next(e for e in first if e["type"] == "message")
        assert ack == {"type": "ack", "id": "c1-1", "seq": message["seq"]}
        assert message["id"] == "c1-1" and message["text"] == "once"
        await sender.send(json.dumps({"text": "once", "id": "c1-1"}))  # the ack was "lost": resent
        assert await recv_json(sender, skip=("members", "join")) == ack  # acked again, not stored again
        await sender.send("plain text from a JSON client")
        heard = await recv_json(member)
        assert heard["seq"] == message["seq"]
        later = await recv_json(member)
        assert later["text"] == "plain text from a JSON client" and later["seq"] == message["seq"] + 1


async def test_resume_with_since_gets_exactly_what_was_missed_then_live() -> None:
    async with served() as (_, url), client(f"{url}/ws/lobby") as talker:
        async with client(f"{url}/ws/lobby?format=json") as member:
            welcome = await recv_json(member)
            await talker.send("m1")
            seen = (await recv_json(member))["seq"]
        assert await recv(talker) == "m1"
        for i in range(2, 5):
            await talker.send(f"m{i}")
            assert await recv(talker) == f"m{i}"
        query = f"format=json&since={seen}&epoch={welcome['epoch']}"
        async with client(f"{url}/ws/lobby?{query}") as back:
            again = await recv_json(back)
            assert again["type"] == "welcome" and again["recovered"] is True
            missed = [await recv_json(back) for _ in range(3)]
            assert [m["text"] for m in missed] == ["m2", "m3", "m4"]
            assert [m["seq"] for m in missed] == list(range(seen + 1, seen + 4))
            assert again["seq"] == missed[-1]["seq"]
            await talker.send("live")
            live = await recv_json(back)
            assert (live["text"], live["seq"]) == ("live", seen + 4)  # nothing doubled at the seam


async def test_resume_past_the_history_or_with_another_epoch_is_not_recovered() -> None:
    async with served(room_history_size=3) as (_, url), client(f"{url}/ws/lobby") as talker:
        async with client(f"{url}/ws/lobby?format=json") as member:
            epoch = (await recv_json(member))["epoch"]
        for i in range(6):
            await talker.send(f"m{i}")
            await recv(talker)
        async with client(f"{url}/ws/lobby?format=json&since=1&epoch={epoch}&history=2") as back:
            welcome = await recv_json(back)
            assert (welcome["recovered"], welcome["seq"]) == (False, 6)
            assert [(await recv_json(back))["text"] for _ in range(2)] == ["m4", "m5"]  # the last 2
        async with client(f"{url}/ws/lobby?format=json&since=5&epoch=not-this-one") as other:
            assert (await recv_json(other))["recovered"] is False
            await talker.send("next")
            assert (await recv_json(other))["text"] == "next"  # nothing from before, then live


async def test_history_gives_the_last_messages_before_live() -> None:
    async with served() as (_, url), client(f"{url}/ws/lobby") as talker:
        for i in range(5):
            await talker.send(f"h{i}")
            await recv(talker)
        async with client(f"{url}/ws/lobby?format=json&history=3") as late:
            welcome = await recv_json(late)
            assert welcome["seq"] == 5 and "recovered" not in welcome
            assert [(await recv_json(late))["text"] for _ in range(3)] == ["h2", "h3", "h4"]


async def test_a_recreated_history_sends_members_away_to_resume_and_says_not_recovered() -> None:
    async with served() as (app, url), client(f"{url}/ws/lobby?format=json") as member:
        welcome = await recv_json(member)
        await member.send("before")
        seq = (await recv_json(member))["seq"]
        bus = app.state.bus
        bus._streams.clear()  # the server lost its store: the stream is made again, a new epoch
        bus._ready_changed(True)  # as after a reconnect
        assert await close_of(member) == (CloseCode.SERVICE_RESTART, "history reset")
        async with client(f"{url}/ws/lobby?format=json&since={seq}&epoch={welcome['epoch']}") as back:
            again = await recv_json(back)
            assert again["recovered"] is False and again["epoch"] != welcome["epoch"]
            assert again["seq"] == 0


async def test_a_lost_live_message_is_filled_from_the_store_before_the_next_one() -> None:
    async with served() as (app, url), client(f"{url}/ws/lobby?format=json") as member:
        await recv_json(member)
        bus = app.state.bus
        deliver = bus._deliver
        dropped: list[int] = []

        def lossy(message):  # type: ignore[no-untyped-def]
            if message.seq and not dropped:  # the first stored message never reaches the replica live
                dropped.append(message.seq)
                return
            deliver(message)

        bus._deliver = lossy
        async with client(f"{url}/ws/lobby") as talker:
            await talker.send("lost live")
            await talker.send("next")
            got = [await recv_json(member, skip=("members", "join")) for _ in range(2)]
        assert [(m["text"], m["seq"]) for m in got] == [("lost live", dropped[0]), ("next", dropped[0] + 1)]


async def test_a_quiet_room_finds_a_lost_message_at_the_next_check() -> None:
    async with served(presence_interval=0.2) as (app, url), client(f"{url}/ws/lobby?format=json") as member:
        await recv_json(member)
        bus = app.state.bus
        deliver = bus._deliver
        bus._deliver = lambda message: None if message.seq else deliver(message)  # every republish lost
        async with client(f"{url}/ws/lobby") as talker:
            await talker.send("only one")
            got = await recv_json(member, skip=("members", "join", "leave"))
        assert got["text"] == "only one"  # from the store, at the next presence beat's check

"""A membership gets every frame through its room's hub: the welcome and the acks are counted as
deliveries and fall under the slow-consumer rule like the live stream."""

import json

import pytest
from realtime.close_codes import CloseCode
from realtime.hub import SLOW_CONSUMER, Hub, Policy, hub_metrics
from rooms_service.membership import Membership, NotJoined
from roomsclient import client, recv, served


class Writer:
    """A connection's outlet that takes every frame and reports a backlog of ``buffered`` bytes."""

    def __init__(self, buffered: int = 0) -> None:
        self.frames: list[bytes] = []
        self.buffered = buffered
        self.open = True
        self.closed: tuple[int, str] | None = None

    def write(self, frame: bytes) -> bool:
        if self.open:
            self.frames.append(frame)
        return self.open

    def close(self, code: int, reason: str = "", *, abort_after: float = 0) -> None:
        self.open, self.closed = False, (code, reason)


def test_a_membership_that_never_joined_has_no_way_to_be_written_to() -> None:
    member = Membership("m1", "lobby", Writer(), json=True)  # type: ignore[arg-type]
    with pytest.raises(NotJoined):
        member.send(b"frame")


def test_a_frame_to_a_member_that_cannot_keep_up_cuts_it_off_with_1013() -> None:
    hub = Hub(Policy.CUT_OFF, 100)
    slow = Writer(buffered=500)
    member = Membership("m1", "lobby", slow, json=True, hub=hub)  # type: ignore[arg-type]
    assert member.send(b"ack", force=True)  # a catch-up write waits for the reader itself
    assert slow.closed is None
    assert member.send(b"ack")
    assert slow.closed == (CloseCode.TRY_AGAIN_LATER, SLOW_CONSUMER)
    assert hub.cut_off == 1
    assert not member.send(b"more")  # nothing more after the close


async def test_the_welcome_and_the_ack_are_counted_as_deliveries() -> None:
    counted = hub_metrics("rooms").delivered
    async with served() as (_, url):
        before = counted.value
        async with client(f"{url}/ws/lobby?format=json") as ws:
            assert json.loads(await recv(ws))["type"] == "welcome"
            await ws.send(json.dumps({"id": "a1", "text": "hello"}))
            kinds = {json.loads(await recv(ws))["type"] for _ in range(2)}
            assert kinds == {"ack", "message"}
            assert counted.value - before == 3  # welcome, ack, message: each through the hub

"""Room traffic that checks the delivery promise: used by the rooms system tests and ``bench faults``.

Both sides are the Python client (``realtime_client.Room``), which resends and resumes by itself:
- ``Sender``: sends numbered messages (text and id ``<name>-<n>``) at a steady rate, each one kept
  until acknowledged and sent again with the same id after any reconnect (stored once).
- ``Listener``: a member that records every message (seq, id, when); after any close with a reconnect
  code the client comes back with ``since=<last seq>&epoch=<epoch>``. A message the server sends again
  (a seq not above the last) is dropped by the client and counted here as out of order.
- ``check``: every acknowledged message reached every member exactly once, in seq order.

Everything is bounded: joins and acks have deadlines, reconnects back off, ``stop()`` ends them.
"""

import asyncio
import contextlib
import itertools
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from devstack.stack import Stack
from realtime_client import Backoff, Room, RoomClosed

CONNECT_DEADLINE = 5.0
SENDERS, LISTENERS, RATE = 2, 4, 20.0  # 40 messages a second into one room, 4 members hear them all


def _backoff() -> Backoff:
    return Backoff(first=0.1, limit=1.0)  # faults here are short: come back quickly


@dataclass
class Sender:
    base: str  # ws://host:port (the gateway)
    room: str
    name: str
    rate: float  # messages a second
    # The client's resend pace: the server's own MESSAGE_RATE and MESSAGE_BURST (these senders send at
    # the server's rate, so a pace below it would never catch up with a backlog).
    pace: dict[str, float] = field(default_factory=dict)
    acked: dict[str, int] = field(default_factory=dict)  # id -> seq
    ack_times: list[float] = field(default_factory=list)  # monotonic time of each acknowledgement
    sent: int = 0
    resent: int = 0
    closes: list[int] = field(default_factory=list)
    unacked: int = 0  # still waiting when it stopped
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self) -> None:
        self._stop.set()

    async def _one(self, room: Room, msg_id: str) -> None:
        with contextlib.suppress(RoomClosed, asyncio.CancelledError):
            self.acked[msg_id] = await room.send(msg_id, id=msg_id)
            self.ack_times.append(time.monotonic())

    async def run(self) -> None:
        room = Room(
            self.base,
            self.room,
            client_id=self.name,
            backoff=_backoff(),
            open_timeout=CONNECT_DEADLINE,
            **self.pace,  # type: ignore[arg-type]
        )
        async with room:
            sends: list[asyncio.Task[None]] = []
            next_at = time.monotonic()
            while not self._stop.is_set():
                next_at += 1.0 / self.rate
                msg_id = f"{self.name}-{self.sent}"
                self.sent += 1
                sends.append(asyncio.create_task(self._one(room, msg_id)))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), max(0.0, next_at - time.monotonic()))
            # stopped: wait (bounded) for the last acks before leaving
            if sends:
                await asyncio.wait(sends, timeout=CONNECT_DEADLINE)
            self.unacked = room.unacknowledged
            self.resent = room.resent
            self.closes = [code for code, _ in room.closes]
            for task in sends:
                task.cancel()


@dataclass
class Listener:
    base: str
    room: str
    seqs: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # monotonic time of each delivery
    out_of_order: int = 0
    not_recovered: int = 0
    welcomes: int = 0
    closes: list[int] = field(default_factory=list)
    joined: asyncio.Event = field(default_factory=asyncio.Event)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        room = Room(self.base, self.room, backoff=_backoff(), open_timeout=CONNECT_DEADLINE)
        try:
            async with room:
                self.joined.set()
                reading = asyncio.create_task(self._read(room))
                stopping = asyncio.create_task(self._stop.wait())
                await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError, RoomClosed):
                    await reading  # a final close (4003, 1008, ...) ends it: coming back would not help
        finally:
            self.out_of_order = room.duplicates
            self.not_recovered = len(room.gaps)
            self.welcomes = room.welcomes
            self.closes = [code for code, _ in room.closes]

    async def _read(self, room: Room) -> None:
        async for message in room:
            self.seqs.append(message.seq)
            self.ids.append(message.id or "")
            self.times.append(time.monotonic())


@dataclass
class Verdict:
    acked: int
    lost: list[int]  # per listener: acknowledged messages it never got
    duplicated: list[int]  # per listener: messages it got more than once (or out of order)
    longest_gap: float  # seconds, the longest pause between two deliveries to one listener
    not_recovered: int

    @property
    def ok(self) -> bool:
        return not any(self.lost) and not any(self.duplicated) and self.not_recovered == 0


def longest_ack_gap(senders: list[Sender]) -> float:
    """Seconds of the longest pause between two acknowledgements to one sender: how long its sends hung."""
    gaps = [b - a for s in senders for a, b in itertools.pairwise(sorted(s.ack_times))]
    return max(gaps, default=0.0)


def check(senders: list[Sender], listeners: list[Listener]) -> Verdict:
    acked = {msg_id: seq for s in senders for msg_id, seq in s.acked.items()}
    lost, duplicated = [], []
    gaps = [0.0]
    for listener in listeners:
        got = dict(zip(listener.ids, listener.seqs, strict=True))
        lost.append(sum(1 for msg_id, seq in acked.items() if got.get(msg_id) != seq))
        duplicated.append(len(listener.ids) - len(set(listener.ids)) + listener.out_of_order)
        gaps += [b - a for a, b in zip(listener.times, listener.times[1:], strict=False)]
    return Verdict(len(acked), lost, duplicated, max(gaps), sum(x.not_recovered for x in listeners))


async def all_delivered(senders: list[Sender], listeners: list[Listener], deadline: float) -> bool:
    """Wait until every listener has every acknowledged message (or the deadline passes)."""
    acked = {seq for s in senders for seq in s.acked.values()}
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if all(acked <= set(x.seqs) for x in listeners):
            return True
        await asyncio.sleep(0.05)
    return False


# --- faults: each an async action on a running stack -----------------------------------------
async def in_thread(action: Callable[[], object]) -> None:
    await asyncio.to_thread(action)


def kill_and_restart_nats(stack: Stack) -> Callable[[], Awaitable[None]]:
    async def fault() -> None:
        await in_thread(lambda: stack.stop_process("nats", signal.SIGKILL))
        await asyncio.sleep(1.0)  # NATS is away this long (the fault itself, not a wait for an event)
        await in_thread(lambda: stack.start_process("nats"))  # same port, same store
        await in_thread(lambda: stack.wait_ready(names=["nats"]))

    return fault


def kill_one_replica(stack: Stack) -> Callable[[], Awaitable[None]]:
    async def fault() -> None:
        await in_thread(lambda: stack.stop_process("rooms-1", signal.SIGKILL))

    return fault


def restart_gateway(stack: Stack) -> Callable[[], Awaitable[None]]:
    async def fault() -> None:
        await in_thread(lambda: stack.stop_process("gateway", signal.SIGTERM))
        await in_thread(lambda: stack.start_process("gateway"))
        await in_thread(lambda: stack.wait_ready(names=["gateway"]))

    return fault


def kill_and_restart_gateway(stack: Stack) -> Callable[[], Awaitable[None]]:
    """The public door crashes: every member's connection breaks at once (1006), mid-traffic."""

    async def fault() -> None:
        await in_thread(lambda: stack.stop_process("gateway", signal.SIGKILL))
        await in_thread(lambda: stack.start_process("gateway"))
        await in_thread(lambda: stack.wait_ready(names=["gateway"]))

    return fault


def rolling_restart(stack: Stack) -> Callable[[], Awaitable[None]]:
    async def fault() -> None:
        for replica in ("rooms-1", "rooms-2"):
            await in_thread(lambda r=replica: stack.stop_process(r, signal.SIGTERM))
            await in_thread(lambda r=replica: stack.start_process(r))
            await in_thread(lambda r=replica: stack.wait_ready(names=[r]))

    return fault


FAULTS = {
    "nats-sigkill-restart": kill_and_restart_nats,
    "rooms-replica-sigkill": kill_one_replica,
    "gateway-sigterm-restart": restart_gateway,
    "gateway-sigkill-restart": kill_and_restart_gateway,
    "rolling-restart": rolling_restart,
}


def server_pace(stack: Stack) -> dict[str, float]:
    """The stack's message rate and burst (the rooms service's defaults unless set), as client arguments."""
    env = stack.config.env
    return {
        "resend_rate": float(env.get("MESSAGE_RATE", 20)),
        "resend_burst": int(env.get("MESSAGE_BURST", 40)),
    }


async def run_traffic(
    stack: Stack,
    room: str,
    fault: Callable[[], Awaitable[None]],
    *,
    senders: int = SENDERS,
    rate: float = RATE,
) -> dict:
    """Steady traffic, the fault, traffic until it flows again and a little more; then the verdict."""
    base = stack.gateway_url
    listeners = [Listener(base, room) for _ in range(LISTENERS)]
    sending = [Sender(base, room, f"s{i}", rate, server_pace(stack)) for i in range(senders)]
    tasks = [asyncio.create_task(x.run()) for x in listeners]
    async with asyncio.timeout(CONNECT_DEADLINE * 2):
        for listener in listeners:
            await listener.joined.wait()
    tasks += [asyncio.create_task(s.run()) for s in sending]
    try:
        await asyncio.sleep(1.5)  # steady traffic before the fault
        started = time.monotonic()
        await fault()
        recovered = time.monotonic()
        acked_then = sum(len(s.acked) for s in sending)
        async with asyncio.timeout(30):  # messages flow again: new acks, and every member hears them
            while sum(len(s.acked) for s in sending) < acked_then + 10:
                await asyncio.sleep(0.05)
            while not all(x.times and x.times[-1] > recovered for x in listeners):
                await asyncio.sleep(0.05)
        flowing = time.monotonic()
        await asyncio.sleep(1.0)  # and a little more steady traffic
    finally:
        for sender in sending:
            sender.stop()
        await asyncio.gather(*tasks[LISTENERS:], return_exceptions=True)
    delivered = await all_delivered(sending, listeners, deadline=20)
    for listener in listeners:
        listener.stop()
    await asyncio.gather(*tasks[:LISTENERS], return_exceptions=True)
    verdict = check(sending, listeners)
    return {
        "verdict": verdict,
        "delivered": delivered,
        "flow_again_s": flowing - started,
        "fault_s": recovered - started,
        "listener_closes": [x.closes for x in listeners],
        "sender_closes": [s.closes for s in sending],
        "resent": sum(s.resent for s in sending),
        "ack_gap_s": longest_ack_gap(sending),
        "acked_seqs": sorted({seq for s in sending for seq in s.acked.values()}),
    }

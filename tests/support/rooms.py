"""Room traffic that checks the delivery promise: used by the rooms system tests and ``bench faults``.

- ``Sender``: a JSON client sending numbered messages ``{"text", "id"}`` at a steady rate; it keeps
  each one until it is acknowledged and, after any close, reconnects and resends what is unacknowledged
  (the id makes a resend safe: it is stored once).
- ``Listener``: a JSON member that records every message (seq, id, when) and, after any close with a
  reconnect code, comes back with ``since=<last seq>&epoch=<epoch>``.
- ``check``: every acknowledged message reached every member exactly once, in seq order.

Everything is bounded: connects and reads have deadlines, reconnects back off, ``stop()`` ends them.
"""

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from devstack.stack import Stack
from realtime.close_codes import FINAL
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

CONNECT_DEADLINE = 5.0
RECONNECT_WAIT = 0.1
SENDERS, LISTENERS, RATE = 2, 4, 20.0  # 40 messages a second into one room, 4 members hear them all


async def _open(url: str) -> ClientConnection:
    return await asyncio.wait_for(
        connect(url, compression=None, open_timeout=CONNECT_DEADLINE), CONNECT_DEADLINE
    )


def _close_code(conn: ClientConnection | None) -> int:
    if conn is None or conn.protocol.close_rcvd is None:
        return 1006
    return conn.protocol.close_rcvd.code


@dataclass
class Sender:
    base: str  # ws://host:port (the gateway)
    room: str
    name: str
    rate: float  # messages a second
    acked: dict[str, int] = field(default_factory=dict)  # id -> seq
    unacked: dict[str, str] = field(default_factory=dict)  # id -> text, in send order
    sent: int = 0
    resent: int = 0
    closes: list[int] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        while not self._stop.is_set():
            conn = None
            try:
                conn = await _open(f"{self.base}/ws/{self.room}?format=json")
                await self._session(conn)
            except (ConnectionClosed, OSError, TimeoutError, InvalidHandshake, InvalidStatus):
                pass
            finally:
                if conn is not None and not self._stop.is_set():
                    self.closes.append(_close_code(conn))
                    with contextlib.suppress(Exception):
                        await conn.close()
            if self._stop.is_set():
                return
            await asyncio.sleep(RECONNECT_WAIT)

    async def _session(self, conn: ClientConnection) -> None:
        reader = asyncio.create_task(self._read(conn))
        try:
            for msg_id, text in list(self.unacked.items()):  # what may not have been stored
                await conn.send(json.dumps({"text": text, "id": msg_id}))
                self.resent += 1
            next_at = time.monotonic()
            while not self._stop.is_set() and not reader.done():
                next_at += 1.0 / self.rate
                msg_id = f"{self.name}-{self.sent}"
                self.unacked[msg_id] = msg_id
                self.sent += 1
                await conn.send(json.dumps({"text": msg_id, "id": msg_id}))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), max(0.0, next_at - time.monotonic()))
            if reader.done():
                reader.result()
            # stopped: wait (bounded) for the last acks before leaving
            async with asyncio.timeout(CONNECT_DEADLINE):
                while self.unacked and not reader.done():
                    await asyncio.sleep(0.02)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await reader

    async def _read(self, conn: ClientConnection) -> None:
        async for raw in conn:
            event = json.loads(raw)
            if event.get("type") == "ack":
                self.unacked.pop(event["id"], None)
                self.acked.setdefault(event["id"], event["seq"])


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
    start_seq: int | None = None  # the welcome seq of the first connection: everything after it
    epoch: str | None = None
    joined: asyncio.Event = field(default_factory=asyncio.Event)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self) -> None:
        self._stop.set()

    @property
    def last(self) -> int | None:
        return self.seqs[-1] if self.seqs else self.start_seq

    async def run(self) -> None:
        while not self._stop.is_set():
            query = "format=json"
            if self.last is not None:
                query += f"&since={self.last}&epoch={self.epoch}"
            conn = None
            try:
                conn = await _open(f"{self.base}/ws/{self.room}?{query}")
                reading = asyncio.create_task(self._read(conn))
                stopping = asyncio.create_task(self._stop.wait())
                await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if reading.done():
                    reading.result()
                else:
                    reading.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reading
                    return
            except (ConnectionClosed, OSError, TimeoutError, InvalidHandshake, InvalidStatus):
                pass
            finally:
                if conn is not None:
                    if not self._stop.is_set():  # the server (or the gateway) ended it
                        self.closes.append(_close_code(conn))
                    with contextlib.suppress(Exception):
                        await conn.close()
            if conn is not None and _close_code(conn) in FINAL:
                return  # 4003, 4004, 1008, 1009: coming back would not help
            await asyncio.sleep(RECONNECT_WAIT)

    async def _read(self, conn: ClientConnection) -> None:
        async for raw in conn:
            event = json.loads(raw)
            kind = event.get("type")
            if kind == "welcome":
                self.welcomes += 1
                if event.get("recovered") is False:
                    self.not_recovered += 1
                if self.start_seq is None:
                    self.start_seq = event["seq"]
                self.epoch = event["epoch"]
                self.joined.set()
            elif kind == "message":
                seq = event["seq"]
                last = self.last
                if last is not None and seq <= last:
                    self.out_of_order += 1
                    continue
                self.seqs.append(seq)
                self.ids.append(event.get("id") or "")
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
    "rolling-restart": rolling_restart,
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
    sending = [Sender(base, room, f"s{i}", rate) for i in range(senders)]
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
    }

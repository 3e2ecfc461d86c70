"""Reconnect storms for ``python -m bench faults``: many members, the gateway SIGKILLed and restarted.

Members are light raw clients (``bench.wsclient``) in this process, JSON format, each resuming after any
close with ``since``/``epoch`` and the jittered ``realtime.backoff.Backoff`` the clients use. All are
opened through the gateway, then the gateway is killed (every connection breaks at once, 1006) and
started again; meanwhile one message per room is published through a replica's API (the gateway is
down). Measured: the time from the kill until the last member has its welcome again, and whether every
member got its room's message (lost) exactly once (duplicated), and every welcome said ``recovered``.
"""

import asyncio
import base64
import contextlib
import functools
import json
import os
import signal
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
from devstack.stack import Stack
from realtime.backoff import Backoff

from bench.wsclient import OP_CLOSE, OP_TEXT, RawClient

IN_FLIGHT = 200  # joins in flight while the members first open
BACK_DEADLINE = 120.0  # seconds for every member to be back after the kill


@dataclass(eq=False)
class Member:
    room: str
    epoch: str | None = None
    seq: int | None = None
    welcomed: asyncio.Event = field(default_factory=asyncio.Event)
    welcomed_at: float = 0.0
    unrecovered: int = 0  # welcomes after a resume that said recovered false
    seqs: list[int] = field(default_factory=list)  # every message seq received
    wanted: int = -1  # the seq of the message published to its room during the fault
    got: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False
    refused: int = 0  # closes before a welcome (1013 server busy, no upstream available) after the kill

    def want(self, seq: int) -> None:
        self.wanted = seq
        if seq in self.seqs:
            self.got.set()

    def target(self) -> str:
        path = f"/ws/{self.room}?format=json"
        if self.epoch is not None and self.seq is not None:
            path += f"&since={self.seq}&epoch={self.epoch}"
        return path

    def heard(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "welcome":
            resumed = self.epoch is not None and self.seq is not None
            if resumed and event.get("recovered") is not True:
                self.unrecovered += 1
            self.epoch = event["epoch"]
            if self.seq is None:
                self.seq = event["seq"]
            self.welcomed_at = time.monotonic()
            self.welcomed.set()
        elif kind == "message":
            self.seqs.append(event["seq"])
            if event["seq"] == self.wanted:
                self.got.set()
            self.seq = max(self.seq or 0, event["seq"])


class Conn(RawClient):
    def __init__(self, member: Member, request: bytes) -> None:
        super().__init__(request)
        self.member = member
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_frame(self, opcode: int, buf: bytes, start: int, end: int) -> None:
        if opcode == OP_TEXT:
            self.member.heard(json.loads(buf[start:end]))
        elif opcode == OP_CLOSE and not self.member.welcomed.is_set():
            self.member.refused += 1

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.lost.done():
            self.lost.set_result(None)


async def keep(member: Member, url: str, gate: asyncio.Semaphore) -> None:
    """Forever: connect (resuming), stay until the connection is lost, back off, again."""
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    backoff = Backoff()
    while not member.closed:
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {member.target()} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        conn = None
        try:
            async with gate:
                _, conn = await loop.create_connection(
                    functools.partial(Conn, member, request), parts.hostname, parts.port
                )
                await asyncio.wait_for(conn.upgraded, 30)
            backoff.reset()
            await conn.lost
        except (OSError, RuntimeError, TimeoutError, ConnectionError):
            if conn is not None and conn.transport is not None:
                conn.transport.abort()
        if not member.closed:
            member.welcomed.clear()
            await asyncio.sleep(backoff.next())


def layout(groups: list[tuple[int, int]]) -> list[str]:
    """Each member's room: ``groups`` are (members, room size) pairs, e.g. [(5000, 5000), (5000, 10)] for
    one room of 5 000 and 500 rooms of 10."""
    return [f"storm{g}x{size}-{i // size}" for g, (count, size) in enumerate(groups) for i in range(count)]


async def storm(stack: Stack, groups: list[tuple[int, int]], key: str) -> dict[str, object]:
    rooms = layout(groups)
    members = len(rooms)
    crowd = [Member(room) for room in rooms]
    gate = asyncio.Semaphore(IN_FLIGHT)
    tasks = [asyncio.create_task(keep(m, stack.gateway_url, gate)) for m in crowd]
    gateway_back_s = float("nan")
    try:
        async with asyncio.timeout(BACK_DEADLINE):
            await asyncio.gather(*(m.welcomed.wait() for m in crowd))
        for m in crowd:
            m.seqs.clear()
        killed = time.monotonic()
        await asyncio.to_thread(stack.stop_process, "gateway", signal.SIGKILL)
        for m in crowd:
            m.welcomed.clear()
        restart = asyncio.create_task(asyncio.to_thread(_restart_gateway, stack))
        published = await _publish_one_per_room(stack, sorted(set(rooms)), key)
        for m in crowd:
            m.want(published[m.room])
        gateway_back_s = await restart - killed
        async with asyncio.timeout(BACK_DEADLINE):
            await asyncio.gather(*(m.welcomed.wait() for m in crowd))
        back_s = max(m.welcomed_at for m in crowd) - killed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):  # the published messages reach every member
                await asyncio.gather(*(m.got.wait() for m in crowd))
        lost = sum(1 for m in crowd if not m.got.is_set())
    except TimeoutError:
        back_s = float("nan")
        lost = sum(1 for m in crowd if not m.welcomed.is_set())
    finally:
        for m in crowd:
            m.closed = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "members": members,
        "back_s": back_s,
        "gateway_back_s": gateway_back_s,
        "lost": lost,
        "duplicated": sum(len(m.seqs) - len(set(m.seqs)) for m in crowd),
        "unrecovered": sum(m.unrecovered for m in crowd),
        "refused": sum(m.refused for m in crowd),
    }


def _restart_gateway(stack: Stack) -> float:
    """Start the gateway again; returns the moment it is ready."""
    stack.start_process("gateway")
    stack.wait_ready(names=["gateway"])
    return time.monotonic()


async def _publish_one_per_room(stack: Stack, rooms: list[str], key: str) -> dict[str, int]:
    """One message per room through rooms-1's own API (the gateway is down): room -> its seq."""
    url = f"http://127.0.0.1:{stack.processes['rooms-1'].port}"
    headers = {"Authorization": f"Bearer {key}"}
    seqs: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        gate = asyncio.Semaphore(20)

        async def one(room: str) -> None:
            async with gate:
                body = {"text": "while the gateway was away"}
                reply = await client.post(f"/api/rooms/{room}/messages", json=body)
                reply.raise_for_status()
                seqs[room] = reply.json()["seq"]

        await asyncio.gather(*(one(room) for room in rooms))
    return seqs

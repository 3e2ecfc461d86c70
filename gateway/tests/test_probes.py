"""Health probes of the upstreams (``UpstreamPool.probe``) against real loopback listeners: a replica that
answers, one that accepts but never answers, one that refuses."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from gateway.upstreams import UpstreamPool
from realtime.testing import free_port

DEADLINE = 0.3  # seconds a probe waits for its answer here


class Replica:
    """A loopback listener whose /healthz answers 200, or nothing at all while ``silent``."""

    def __init__(self) -> None:
        self.silent = False
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        if self.silent:
            return  # busy: the connection stays open without an answer until the test ends
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        await writer.drain()
        writer.close()


@pytest.fixture
async def replica() -> AsyncIterator[Replica]:
    it = Replica()
    server = await asyncio.start_server(it.handle, "127.0.0.1", 0)
    it.port = server.sockets[0].getsockname()[1]
    async with server:
        yield it
        for writer in it.writers:
            writer.close()


async def test_a_replica_silent_for_one_probe_stays_reachable_and_for_two_is_not(replica: Replica) -> None:
    pool = UpstreamPool("rooms", [f"127.0.0.1:{replica.port}"])
    await pool.probe(DEADLINE)
    assert pool.any_reachable
    replica.silent = True
    await pool.probe(DEADLINE)
    assert pool.any_reachable  # one probe without an answer: a busy moment
    await pool.probe(DEADLINE)
    assert not pool.any_reachable  # two in a row: gone
    replica.silent = False
    await pool.probe(DEADLINE)
    assert pool.any_reachable
    replica.silent = True  # and a busy moment later counts from one again
    await pool.probe(DEADLINE)
    assert pool.any_reachable


async def test_a_refused_connection_is_unreachable_at_once(replica: Replica) -> None:
    closed = free_port()  # nothing listens there
    pool = UpstreamPool("rooms", [f"127.0.0.1:{replica.port}", f"127.0.0.1:{closed}"])
    await pool.probe(DEADLINE)
    assert pool.reachable == {("127.0.0.1", replica.port)}
    assert ("127.0.0.1", closed) in pool.down


async def test_a_replica_never_reachable_stays_unreachable_when_silent(replica: Replica) -> None:
    replica.silent = True
    pool = UpstreamPool("rooms", [f"127.0.0.1:{replica.port}"])
    await pool.probe(DEADLINE)
    assert not pool.any_reachable

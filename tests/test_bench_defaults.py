"""The benches run with the project's defaults (issue 19, "the three trips"): ``python -m bench stats`` opened
5 000 clients from one address and the gateway's per-address cap (MAX_CONNECTIONS_PER_ADDRESS, 1 000 by
default) answered the 1 001st with 429. The bench's clients now come from several loopback addresses.

Checked here at a small scale against a real gateway whose cap is lowered to what one source address carries:
with every client from 127.0.0.1 (before), the clients past the cap were refused and this test failed."""

import asyncio

import pytest
from gateway.settings import GatewaySettings

from bench import wsclient
from bench.wsclient import OP_TEXT, RawClient, open_clients, source_address
from tests.conftest import make_stack

PER_SOURCE = 20
CLIENTS = 3 * PER_SOURCE + 5


class Quiet(RawClient):
    def on_frame(self, opcode: int, buf: bytes, start: int, end: int) -> None:
        assert opcode != OP_TEXT or buf[start:end]


def test_one_source_address_never_carries_more_than_the_default_cap() -> None:
    assert GatewaySettings.model_fields["max_connections_per_address"].default >= wsclient.CLIENTS_PER_SOURCE
    addresses = {source_address(i, "127.0.0.1") for i in range(5000)}
    assert len(addresses) == -(-5000 // wsclient.CLIENTS_PER_SOURCE)
    assert source_address(0, "192.0.2.1") is None  # not loopback: the system picks the source


@pytest.mark.timeout(120)
async def test_more_clients_than_the_per_address_cap_all_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wsclient, "CLIENTS_PER_SOURCE", PER_SOURCE)
    with make_stack(MAX_CONNECTIONS_PER_ADDRESS=str(PER_SOURCE)) as stack:
        clients = await asyncio.wait_for(
            open_clients(f"{stack.gateway_url}/echo", CLIENTS, Quiet), timeout=60
        )
        try:
            assert len(clients) == CLIENTS
            peers = {c.transport.get_extra_info("sockname")[0] for c in clients}  # type: ignore[union-attr]
            assert len(peers) == -(-CLIENTS // PER_SOURCE)
        finally:
            for client in clients:
                client.close()
                if client.transport is not None:
                    client.transport.close()

"""``SCALE="nats=3"``: a JetStream cluster of three nodes, each its own supervised process with its own
ports and store, from the one node template; the rooms stream on R3; replicas spread over the nodes."""

import json
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from devstack.stack import NATS_TEMPLATE, Stack, parse_scale

from tests.conftest import DEADLINE, make_stack, recv, wait_until_async, ws
from tests.support.cluster import stream_cluster, wait_for_leader
from tests.support.launcher import Launcher, alive

pytestmark = pytest.mark.timeout(120)


def test_scale_takes_an_odd_number_of_nats_nodes_up_to_five() -> None:
    assert parse_scale("")["nats"] == 1  # one node stays the default
    assert parse_scale("nats=3 rooms=2")["nats"] == 3
    assert parse_scale("nats=5")["nats"] == 5
    for bad in ("nats=2", "nats=4", "nats=7", "nats=0"):
        with pytest.raises(ValueError, match="nats"):
            parse_scale(bad)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Stack]:
    with make_stack("nats=3 rooms=2", PRESENCE_INTERVAL="1") as running:
        running.start_supervisor()
        yield running


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def test_three_nodes_each_with_its_own_process_ports_and_store(cluster: Stack) -> None:
    nodes = cluster.nats_nodes
    assert [n.name for n in nodes] == ["nats-1", "nats-2", "nats-3"] and "nats" not in cluster.processes
    pids = {cluster.processes[n.name].pid for n in nodes}
    ports = {p for n in nodes for p in (n.port, n.monitor_port, n.cluster_port)}
    assert len(pids) == 3 and len(ports) == 9
    for node in nodes:
        assert (node.store_dir / "jetstream").is_dir()
        assert cluster.processes[node.name].argv[-2:] == ["--config", str(NATS_TEMPLATE)]
        varz = get_json(f"{node.monitor_url}/varz")
        assert varz["server_name"] == node.name and varz["cluster"]["name"] == "realtime"
        assert varz["host"] == "127.0.0.1" and varz["cluster"]["addr"] == "127.0.0.1"  # loopback only
        assert get_json(f"{node.monitor_url}/routez")["num_routes"] >= 2
    described = "\n".join(cluster.describe())
    for node in nodes:  # printed at start: each node's monitoring port
        assert f"{node.monitor_url}/jsz" in described


def test_every_service_gets_every_node_each_replica_another_first(cluster: Stack) -> None:
    urls = {n.url.removeprefix("nats://") for n in cluster.nats_nodes}
    firsts = []
    for name, process in cluster.processes.items():
        if name in cluster.nats_names:
            continue
        servers = process.env["BUS_URL"].removeprefix("nats://").split(",")
        assert set(servers) == urls, name
        if name.startswith("rooms-"):
            firsts.append(servers[0])
    assert len(set(firsts)) == 2  # rooms-1 and rooms-2 start on different nodes


def test_the_rooms_stream_has_three_replicas_and_a_leader(cluster: Stack) -> None:
    leader, _ = wait_for_leader(cluster, 20)
    info = stream_cluster(cluster, leader)
    assert info is not None and info["name"] == "realtime"
    assert sorted([leader, *(r["name"] for r in info["replicas"])]) == cluster.nats_names
    assert all(p.env["ROOM_STREAM_REPLICAS"] == "3" for p in cluster.replicas("rooms"))


async def test_a_killed_node_is_restarted_by_the_supervisor_and_rejoins(cluster: Stack) -> None:
    node = "nats-3"
    before = cluster.processes[node].pid
    cluster.kill(node, signal.SIGKILL)
    await wait_until_async(
        lambda: any(e.name == node and e.kind == "back" for e in cluster.events), "the node back", 30
    )
    assert cluster.processes[node].pid != before
    async with await ws(f"{cluster.gateway_url}/echo") as conn:  # the stack serves on
        await conn.send("still here")
        assert await recv(conn) == "Echo: still here"


async def test_make_run_with_scale_nats_3_starts_prints_and_stops_the_cluster(tmp_path: Path) -> None:
    launcher = Launcher(tmp_path, SCALE="nats=3")  # `SCALE="nats=3" make run`, on free ports
    try:
        launcher.wait_for_line("realtime stack is up", 90)
        launcher.wait_for_line(r"NATS cluster of 3 nodes; BUS_URL nats://\S+,\S+,\S+", 5)
        for i in (1, 2, 3):  # each node's process, ports, monitoring endpoint and store, printed at start
            launcher.wait_for_line(rf"^nats-{i}\s+127\.0\.0\.1:\d+\s+pid \d+", 5)
            launcher.wait_for_line(
                rf"^nats-{i}\s+monitoring http://127\.0\.0\.1:\d+/jsz\s+routes .*store ", 5
            )
            assert (tmp_path / "logs" / f"nats-{i}" / "jetstream").is_dir()
        children = list(launcher.pids().values())
        assert {"nats-1", "nats-2", "nats-3"} <= set(launcher.pids())
        async with await ws(f"ws://127.0.0.1:{launcher.port}/echo") as conn:
            await conn.send("on a cluster")
            assert await recv(conn) == "Echo: on a cluster"
        launcher.process.send_signal(signal.SIGTERM)
        assert launcher.process.wait(DEADLINE * 2) == 0
    finally:
        launcher.stop(DEADLINE)
    await wait_until_async(lambda: not any(alive(p) for p in children), "every child gone", DEADLINE * 2)

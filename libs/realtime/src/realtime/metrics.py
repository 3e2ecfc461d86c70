"""Every Prometheus metric of the platform, defined once, and ``GET /metrics`` in the text format.

Labels are bounded by construction: a route is the route's path *pattern* (``/ws/{room_id}``, never a
room id), a close code is one of ``CloseCode`` or ``other``, a service is the service's configured name,
an upstream is a configured upstream name, a reason comes from a fixed set. No label ever carries a room
id, a client address, an instance id or a secret.

Hot path: never ``.labels(...)`` per message. Per connection or event, resolve a child once (``child``)
and call ``.inc()`` on it. Per message, even that (about 0.7 us: a lock and two checks) is too much:
count in a ``Tally`` (``tally.value += 1``, an attribute add), which moves into its counter when
``/metrics`` is scraped, and every second in multiprocess mode (``flushing``).

Multiprocess mode: when ``PROMETHEUS_MULTIPROC_DIR`` is set before prometheus_client is imported (the
gateway's ``serve_workers`` does that for its workers), every worker writes its values to files there and
``/metrics`` on any worker reads them all, so the figures cover every worker. Gauges say how they combine
(``multiprocess_mode``): open connections and splices add up, ``nats_connected`` is the lowest of the
live workers (1 only if every worker is connected).
"""

import asyncio
import contextlib
import os
import weakref
from collections.abc import AsyncIterator, Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.requests import Request
from starlette.responses import Response

from realtime.close_codes import CloseCode
from realtime.tasks import cancel_and_wait

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# --- WebSocket sessions (every service; hooked in realtime.connections) ---------------------------
WS_OPEN = Gauge(
    "realtime_ws_connections_open",
    "WebSocket sessions open now (accepted, handler still running)",
    ["service", "route"],
    multiprocess_mode="livesum",
)
WS_OPENED = Counter("realtime_ws_connections_opened", "WebSocket sessions accepted", ["service", "route"])
WS_CLOSED = Counter(
    "realtime_ws_connections_closed",
    "WebSocket sessions ended, by close code (the app's close, or the client's)",
    ["service", "route", "code"],
)

# --- messages (echo, rooms) --------------------------------------------------------------------------
MESSAGES_RECEIVED = Counter("realtime_messages_received", "messages received from clients", ["service"])
MESSAGES_PUBLISHED = Counter(
    "realtime_messages_published", "messages published to the bus (NATS)", ["service"]
)
MESSAGES_DELIVERED = Counter(
    "realtime_messages_delivered", "messages written to clients (one per client per message)", ["service"]
)
BYTES_OUT = Counter(
    "realtime_bytes_out",
    "bytes written to clients (echo: the payload, UTF-8 for text; rooms, stats: whole frames)",
    ["service"],
)
SLOW_CONSUMERS = Counter(
    "realtime_slow_consumers", "clients cut off because their unread bytes passed the limit", ["service"]
)
RATE_LIMITED = Counter(
    "realtime_rate_limited", "clients closed for sending faster than the message rate", ["service"]
)
AUTH_FAILURES = Counter(
    "realtime_auth_failures",
    "password and token checks that failed (wrong or missing password, refused identity token)",
    ["service"],
)
AUTH_THROTTLED = Counter(
    "realtime_auth_throttled",
    "password or token attempts refused unchecked: too many recent failures",
    ["service"],
)

# --- NATS (every service; hooked in the bus) ---------------------------------------------------------
NATS_CONNECTED = Gauge(
    "realtime_nats_connected",
    "1 while connected to NATS (with several workers: 1 only if every worker is)",
    ["service"],
    multiprocess_mode="livemin",
)
NATS_RECONNECTS = Counter("realtime_nats_reconnects", "reconnections to NATS", ["service"])
NATS_PENDING = Gauge(
    "realtime_nats_pending_bytes",
    "bytes buffered for NATS, not yet sent (grows while NATS is away)",
    ["service"],
    multiprocess_mode="livesum",
)

# --- latency (rooms) ---------------------------------------------------------------------------------
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
PUBLISH_TO_STORE = Histogram(
    "realtime_publish_to_store_seconds",
    "from a client's message to the store's acknowledgement (JetStream publish)",
    ["service"],
    buckets=LATENCY_BUCKETS,
)
FANOUT = Histogram(
    "realtime_fanout_seconds",
    "one message's fan-out to this replica's local members (from the bus to the last write)",
    ["service"],
    buckets=LATENCY_BUCKETS,
)

# --- room events' webhooks (rooms; the app's URL and secret are never a label) -------------------------
WEBHOOK_REQUESTS = Counter(
    "realtime_webhook_requests",
    "webhook requests sent, by outcome: ok (2xx), status (another answer), error (timeout, refused)",
    ["service", "outcome"],
)
WEBHOOK_EVENTS = Counter("realtime_webhook_events", "room events delivered to the webhook (2xx)", ["service"])
WEBHOOK_LAG = Gauge(
    "realtime_webhook_lag_seconds",
    "age of the oldest event of the batch being delivered (0: nothing waiting)",
    ["service"],
    multiprocess_mode="livemax",
)
WEBHOOK_PENDING = Gauge(
    "realtime_webhook_pending",
    "room events recorded and not yet delivered to the webhook (the shared consumer's backlog)",
    ["service"],
    multiprocess_mode="livemax",
)

# --- the app's hooks (rooms): no room, user or URL label ---------------------------------------------
HOOK_KINDS = ("join", "publish")
HOOK_OUTCOMES = ("allow", "replace", "deny", "timeout", "error")
HOOK_SECONDS = Histogram(
    "realtime_hook_seconds",
    "one hook call, from asking for a slot to the app's answer (or the timeout), by hook",
    ["service", "hook"],
    buckets=LATENCY_BUCKETS,
)
HOOK_CALLS = Counter(
    "realtime_hook_calls",
    "hook calls by hook and outcome: allow, replace (publish: allowed with a new text), deny, timeout, "
    "error (non-200, unreadable answer, connection failed)",
    ["service", "hook", "outcome"],
)

# --- the pulse (every instance samples; stats builds and relays) -------------------------------------
PULSE_SAMPLES_PUBLISHED = Counter(
    "realtime_pulse_samples_published", "pulse samples this instance published", ["service"]
)
PULSE_SAMPLES_SKIPPED = Counter(
    "realtime_pulse_samples_skipped",
    "pulse samples not sent, by reason: late (taken too late in its tick), bus (not connected)",
    ["service", "reason"],
)
PULSES_BUILT = Counter("realtime_pulses_built", "pulses this stats replica built from samples")
PULSES_RELAYED = Counter("realtime_pulses_relayed", "pulses relayed from a peer stats replica")
PULSES_SKIPPED = Counter(
    "realtime_pulses_skipped", "pulse deliveries skipped: the client still had earlier pulses unsent"
)
PULSE_LAG = Histogram(
    "realtime_pulse_lag_seconds",
    "from a tick's start to its pulse written to the last client",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

# --- gateway -----------------------------------------------------------------------------------------
GATEWAY_REPLICAS_UP = Gauge(
    "realtime_gateway_replicas_up",
    "replicas of an upstream that answer their health probe",
    ["upstream"],
    multiprocess_mode="livemax",
)
GATEWAY_SPLICES_OPEN = Gauge(
    "realtime_gateway_splices_open",
    "client sessions spliced to an upstream now",
    ["upstream"],
    multiprocess_mode="livesum",
)
REFUSAL_REASONS = ("cap", "origin", "malformed", "no_upstream")
GATEWAY_REFUSALS = Counter("realtime_gateway_refusals", "upgrades the gateway refused, by reason", ["reason"])
GATEWAY_HTTP_REQUESTS = Counter(
    "realtime_gateway_http_requests",
    "plain HTTP requests under an HTTP route, by upstream and the status class the client got (the "
    "upstream's, or the gateway's own 413, 502, 503, 504)",
    ["upstream", "status"],
)


def status_class(status: int) -> str:
    """``201`` -> ``"2xx"``: the bounded status label (anything outside 100-599 is ``"5xx"``)."""
    return f"{status // 100}xx" if 100 <= status < 600 else "5xx"


# The close-code label: one of the named codes, or "other" (a client may send any code 3000-4999).
_KNOWN_CODES = frozenset(int(c) for c in CloseCode)


def code_label(code: int | None) -> str:
    if code is None:
        return str(int(CloseCode.NO_STATUS))
    return str(code) if code in _KNOWN_CODES else "other"


def refusal(reason: str) -> Counter:
    """The refusal counter child of ``reason``, one of ``REFUSAL_REASONS`` (anything else is a bug)."""
    if reason not in REFUSAL_REASONS:
        raise ValueError(f"refusal reason {reason!r} is not one of {REFUSAL_REASONS}")
    return GATEWAY_REFUSALS.labels(reason=reason)


class _Noop:
    """Stands in for a metric child when metrics are off (``METRICS=false``): same calls, no work."""

    __slots__ = ()

    def inc(self, amount: float = 1) -> None:
        pass

    def dec(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, value: float) -> None:
        pass


NOOP = _Noop()


def child(metric: Counter | Gauge | Histogram, enabled: bool = True, **labels: str) -> Any:
    """``metric.labels(**labels)`` (the metric itself when it has no labels), resolved once, or a no-op
    stand-in when metrics are off."""
    if not enabled:
        return NOOP
    return metric.labels(**labels) if labels else metric


class Tally:
    """A counter for the hot path: add to ``value``; ``flush()`` moves what was added into the
    Prometheus counter child. Single-threaded: the event loop adds and flushes."""

    __slots__ = ("__weakref__", "_child", "_flushed", "value")

    def __init__(self, child: Any) -> None:
        self.value = 0
        self._flushed = 0
        self._child = child

    def flush(self) -> None:
        delta = self.value - self._flushed
        if delta:
            self._flushed = self.value
            self._child.inc(delta)


_tallies: "weakref.WeakSet[Tally]" = weakref.WeakSet()


def tally(metric: Counter, enabled: bool = True, **labels: str) -> Tally:
    """A ``Tally`` of ``metric.labels(**labels)``; with metrics off one that goes nowhere."""
    if not enabled:
        return Tally(NOOP)
    found = Tally(metric.labels(**labels))
    _tallies.add(found)
    return found


def flush_tallies() -> None:
    for found in list(_tallies):
        found.flush()


@contextlib.asynccontextmanager
async def flushing(interval: float = 1.0) -> AsyncIterator[None]:
    """In multiprocess mode, flush this worker's tallies every ``interval`` seconds while the block runs
    (another worker may answer the scrape); otherwise the scrape itself flushes and this does nothing."""
    if multiprocess_dir() is None:
        yield
        return

    async def flush_forever() -> None:
        while True:
            await asyncio.sleep(interval)
            flush_tallies()

    task = asyncio.create_task(flush_forever(), name="metrics-flush")
    try:
        yield
    finally:
        await cancel_and_wait(task)
        flush_tallies()


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def render() -> bytes:
    """Every metric in the Prometheus text format; in multiprocess mode, summed over every worker."""
    flush_tallies()
    path = multiprocess_dir()
    if path is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)
    return generate_latest(registry)


async def metrics_endpoint(request: Request) -> Response:
    # The classic text format (0.0.4): every Prometheus version reads it; the names need no escaping.
    return Response(render(), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


def prepare_multiprocess_dir(path: str) -> None:
    """Empty ``path`` (create it if needed): stale files of an earlier run would count again."""
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))


def mark_dead(pids: Iterable[int]) -> None:
    """A worker that died no longer counts in the live gauges (``live*`` modes)."""
    path = multiprocess_dir()
    if path is None:
        return
    for pid in pids:
        multiprocess.mark_process_dead(pid, path)

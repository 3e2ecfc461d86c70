"""NATS bus (nats-py): many replicas, several servers, reconnects that flip readiness. Its streams
(JetStream: the stored history) are ``nats_streams.py``."""

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.errors import SlowConsumerError

from realtime import metrics
from realtime.bus.base import Bus, BusUnavailable, Message, Subscription
from realtime.bus.nats_streams import NatsStreams
from realtime.tasks import cancel_and_wait

PENDING_SAMPLE_INTERVAL = 1.0  # seconds between two looks at nats-py's unsent buffer (never per publish)

logger = logging.getLogger(__name__)


def server_urls(url: str) -> list[str]:
    """``nats://a:4222,b:4222`` -> ``["nats://a:4222", "nats://b:4222"]``."""
    scheme, rest = url.split("://", 1)
    urls = [f"{scheme}://{part.strip()}" for part in rest.split(",") if part.strip()]
    for each in urls:
        if not urlsplit(each).hostname:
            raise ValueError(f"bus URL {url!r} has a server without a host")
    return urls


def _message(msg: Msg) -> Message:
    headers = msg.headers
    if headers and "Nats-Sequence" in headers:  # a stored message, republished by its stream
        seq, last = int(headers["Nats-Sequence"]), int(headers.get("Nats-Last-Sequence") or 0)
        return Message(msg.subject, msg.data, seq, last)
    return Message(msg.subject, msg.data)


class NatsBus(NatsStreams, Bus):
    """Core NATS (publish, subscriptions, the connection's life); the streams are ``NatsStreams``'."""

    def __init__(
        self,
        url: str,
        *,
        name: str = "realtime",
        connect_timeout: float = 2.0,
        reconnect_wait: float = 0.5,
        ping_interval: float = 2.0,
        max_outstanding_pings: int = 2,
        request_timeout: float = 2.0,
        randomize: bool = True,
        service: str | None = None,
        metrics_on: bool = True,
    ) -> None:
        super().__init__()
        on = metrics_on and service is not None
        self._connected_gauge = metrics.child(metrics.NATS_CONNECTED, on, service=service or "")
        self._reconnects = metrics.child(metrics.NATS_RECONNECTS, on, service=service or "")
        self._pending = metrics.child(metrics.NATS_PENDING, on, service=service or "")
        self._sampling: asyncio.Task[None] | None = None
        self._metrics_on = on
        self._servers = server_urls(url)
        self._name = name
        self._connect_timeout = connect_timeout
        self._reconnect_wait = reconnect_wait
        # A hung server (SIGSTOP, a partition without a reset) never closes the socket: unanswered pings
        # find it; then nats-py reconnects to the next server of the pool (the cluster's other nodes).
        self._ping_interval = ping_interval
        self._max_outstanding_pings = max_outstanding_pings
        self._request_timeout = request_timeout
        self._randomize = randomize
        self._nc: Client | None = None
        self._ready = False
        self._first_connect: asyncio.Task[None] | None = None
        self._subscriptions: dict[Subscription, NatsSubscription | None] = {}

    @property
    def ready(self) -> bool:
        return self._ready

    async def connect(self) -> None:
        # The first connection is made in the background: the service starts (not ready) without NATS.
        self._connected_gauge.set(0)
        self._first_connect = asyncio.create_task(self._connect_until_up(), name="nats-first-connect")
        if self._metrics_on:
            self._sampling = asyncio.create_task(self._sample_pending(), name="nats-pending-sample")

    async def _sample_pending(self) -> None:
        while True:
            nc = self._nc
            self._pending.set(nc.pending_data_size if nc is not None else 0)
            await asyncio.sleep(PENDING_SAMPLE_INTERVAL)

    async def _connect_until_up(self) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                nc = await nats.connect(
                    servers=self._servers,
                    name=self._name,
                    connect_timeout=self._connect_timeout,
                    reconnect_time_wait=self._reconnect_wait,
                    max_reconnect_attempts=-1,
                    allow_reconnect=True,
                    ping_interval=self._ping_interval,
                    max_outstanding_pings=self._max_outstanding_pings,
                    dont_randomize=not self._randomize,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    closed_cb=self._on_closed,
                )
            except Exception as exc:  # nats raises several types for "no server yet"
                if attempt == 1 or attempt % 20 == 0:
                    logger.warning("NATS not reachable at %s (%s); retrying", self._servers, exc)
                await asyncio.sleep(min(self._reconnect_wait * attempt, 5.0))
                continue
            self._nc = nc
            for subscription in list(self._subscriptions):
                await self._nats_subscribe(subscription)
            self._set_ready(True)
            logger.info("NATS connected to %s", nc.connected_url.netloc if nc.connected_url else "?")
            return

    async def disconnect(self) -> None:
        await cancel_and_wait(self._sampling)
        self._sampling = None
        if self._first_connect is not None and not self._first_connect.done():
            await cancel_and_wait(self._first_connect)
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            if nc.is_connected:
                try:
                    await asyncio.wait_for(nc.drain(), timeout=self._connect_timeout + 1)
                except Exception as exc:
                    logger.warning("NATS drain did not finish cleanly: %s", exc)
            if not nc.is_closed:
                await self._close_unconnected(nc)
        self._set_ready(False)

    async def _close_unconnected(self, nc: Client) -> None:
        """Close a client that is not connected (NATS is away: reconnecting) without a traceback.

        nats-py's ``close()`` writes what it buffered while reconnecting to the transport it lost, which
        raises ``RuntimeError`` (the handler is closed); that buffer can never be sent now, so it is
        dropped first (nats-py has no public call for it: pinned by tests/test_nats_internals.py)."""
        pending = nc.pending_data_size
        if not nc.is_connected and pending:
            logger.info("NATS not connected at shutdown: %d unsent bytes dropped", pending)
            nc._pending = []
            nc._pending_data_size = 0
        try:
            await asyncio.wait_for(nc.close(), timeout=self._connect_timeout + 1)
        except Exception as exc:  # closing is best effort: the process is going away
            logger.info("NATS connection closed uncleanly (%s: %s)", type(exc).__name__, exc)

    async def publish(self, subject: str, payload: bytes) -> None:
        nc = self._nc
        if nc is None or nc.is_closed:
            raise BusUnavailable("NATS is not connected")
        # While reconnecting nats-py buffers the publish and sends it once back.
        await nc.publish(subject, payload)

    async def _add(self, subscription: Subscription) -> None:
        self._subscriptions[subscription] = None
        if self._nc is not None and not self._nc.is_closed:
            await self._nats_subscribe(subscription)

    async def _remove(self, subscription: Subscription) -> None:
        nats_sub = self._subscriptions.pop(subscription, None)
        if nats_sub is not None and self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await nats_sub.unsubscribe()

    calls_handlers = True  # a listen() handler is called by nats-py's subscription task: one queue

    async def _nats_subscribe(self, subscription: Subscription) -> None:
        handler = subscription.handler
        if handler is None:  # subscribe(): a reader iterates the subscription's own queue

            async def on_message(msg: Msg) -> None:
                subscription.deliver(_message(msg))

            limits: dict[str, int] = {}
        else:  # listen(): straight from nats-py's queue to the handler, no copy in between

            async def on_message(msg: Msg) -> None:
                try:
                    await handler(_message(msg))
                except Exception:
                    logger.exception("subscription %s: the handler failed", subscription.subject)

            limits = {"pending_msgs_limit": subscription.max_pending}

        nc = self._nc
        if nc is None:
            return  # subscribed later, once the first connection is up
        nats_sub = await nc.subscribe(subscription.subject, cb=on_message, **limits)
        self._subscriptions[subscription] = nats_sub

    def _slow_listener(self, exc: SlowConsumerError) -> bool:
        """nats-py dropped a message for a ``listen()`` handler that is not keeping up: count it there."""
        for subscription, nats_sub in self._subscriptions.items():
            if nats_sub is not None and nats_sub is exc.sub:
                subscription.missed()
                return True
        return False

    def _set_ready(self, ready: bool) -> None:
        if ready != self._ready:
            self._ready = ready
            self._connected_gauge.set(1 if ready else 0)
            self._ready_changed(ready)

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, SlowConsumerError) and self._slow_listener(exc):
            return
        logger.warning("NATS error: %s", exc)

    async def _on_disconnected(self) -> None:
        if self._nc is not None:
            logger.warning("NATS disconnected; reconnecting")
        self._set_ready(False)

    async def _on_reconnected(self) -> None:
        nc = self._nc
        url = nc.connected_url.netloc if nc is not None and nc.connected_url else "?"
        logger.info("NATS reconnected to %s; subscriptions restored", url)
        self._reconnects.inc()
        self._set_ready(True)

    async def _on_closed(self) -> None:
        self._set_ready(False)

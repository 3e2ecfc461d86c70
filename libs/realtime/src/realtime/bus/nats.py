"""NATS bus (nats-py): many replicas, several servers, reconnects that flip readiness."""

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from realtime.bus.base import Bus, BusUnavailable, Message, Subscription

logger = logging.getLogger(__name__)


def server_urls(url: str) -> list[str]:
    """``nats://a:4222,b:4222`` -> ``["nats://a:4222", "nats://b:4222"]``."""
    scheme, rest = url.split("://", 1)
    urls = [f"{scheme}://{part.strip()}" for part in rest.split(",") if part.strip()]
    for each in urls:
        if not urlsplit(each).hostname:
            raise ValueError(f"bus URL {url!r} has a server without a host")
    return urls


class NatsBus(Bus):
    def __init__(
        self,
        url: str,
        *,
        name: str = "realtime",
        connect_timeout: float = 2.0,
        reconnect_wait: float = 0.5,
    ) -> None:
        super().__init__()
        self._servers = server_urls(url)
        self._name = name
        self._connect_timeout = connect_timeout
        self._reconnect_wait = reconnect_wait
        self._nc: Client | None = None
        self._ready = False
        self._first_connect: asyncio.Task[None] | None = None
        self._subscriptions: dict[Subscription, NatsSubscription | None] = {}

    @property
    def ready(self) -> bool:
        return self._ready

    async def connect(self) -> None:
        # The first connection is made in the background: the service starts (not ready) without NATS.
        self._first_connect = asyncio.create_task(self._connect_until_up(), name="nats-first-connect")

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
        if self._first_connect is not None and not self._first_connect.done():
            self._first_connect.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._first_connect
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            try:
                await asyncio.wait_for(nc.drain(), timeout=self._connect_timeout + 1)
            except Exception as exc:
                logger.warning("NATS drain did not finish cleanly: %s", exc)
                await nc.close()
        self._set_ready(False)

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

    async def _nats_subscribe(self, subscription: Subscription) -> None:
        async def on_message(msg: Msg) -> None:
            subscription.deliver(Message(msg.subject, msg.data))

        nc = self._nc
        if nc is None:
            return  # subscribed later, once the first connection is up
        self._subscriptions[subscription] = await nc.subscribe(subscription.subject, cb=on_message)

    def _set_ready(self, ready: bool) -> None:
        if ready != self._ready:
            self._ready = ready
            self._ready_changed(ready)

    async def _on_error(self, exc: Exception) -> None:
        logger.warning("NATS error: %s", exc)

    async def _on_disconnected(self) -> None:
        if self._nc is not None:
            logger.warning("NATS disconnected; reconnecting")
        self._set_ready(False)

    async def _on_reconnected(self) -> None:
        nc = self._nc
        url = nc.connected_url.netloc if nc is not None and nc.connected_url else "?"
        logger.info("NATS reconnected to %s; subscriptions restored", url)
        self._set_ready(True)

    async def _on_closed(self) -> None:
        self._set_ready(False)

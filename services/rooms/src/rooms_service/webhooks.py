"""Room events delivered to the app's webhook (``EVENTS_WEBHOOK_URL``): signed batches that lose nothing.

One durable JetStream consumer on the events stream is shared by every replica, and one replica at a
time delivers from it: the holder of a lease (a key of the ``<events stream>_WEBHOOK`` bucket, kept
alive while it delivers; a replica that dies loses it within 2 presence intervals and another takes
over). Delivering one at a time keeps the events in order, per room and overall.

A batch is up to ``EVENTS_WEBHOOK_BATCH`` events of the types in ``EVENTS_WEBHOOK_TYPES`` (the other
types are passed over), POSTed as ``{"events": [...]}`` with the Standard Webhooks headers
(``signing.py``, keyed by ``EVENTS_WEBHOOK_SECRET``). A 2xx acknowledges the batch (its last message,
acknowledging all before it); anything else, a timeout or a refused connection is retried with
exponential backoff capped at ``EVENTS_WEBHOOK_RETRY_LIMIT``, for as long as the events are kept, with the
same ``webhook-id``: the id names the batch's range in the stream, recorded before the first attempt
(``webhook_batches.py``), so a batch JetStream redelivers (a replica taking over from a dead one, or
acks lost when nats-server crashed) is sent again as the very same batch. An app that drops a
``webhook-id`` it has already handled therefore gets every event exactly once.

The URL and the secret appear in no log line and no metric label (errors are logged by type only).
"""

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import httpx
from nats.js import api
from realtime import metrics
from realtime.backoff import Backoff
from realtime.lograte import worth_logging

from rooms_service.events import TYPES, Recorder
from rooms_service.settings import RoomsSettings
from rooms_service.signing import Signer
from rooms_service.webhook_batches import Batch, BatchLog

logger = logging.getLogger(__name__)

LEASE_KEY = "lease"
FETCH_WAIT = 1.0  # seconds one fetch waits for events


def event_types(setting: str) -> frozenset[str]:
    types = frozenset(t.strip() for t in setting.split(",") if t.strip())
    unknown = types - set(TYPES)
    if unknown:
        raise ValueError(f"EVENTS_WEBHOOK_TYPES: unknown event types {sorted(unknown)} (known: {TYPES})")
    return types


class LeaseLost(RuntimeError):
    """Another replica delivers now."""


class NotYet(RuntimeError):
    """A batch must wait for an earlier one to be redelivered."""


class Webhooks:
    """The delivery loop of one replica (``run()``); it delivers only while it holds the lease."""

    def __init__(self, recorder: Recorder, settings: RoomsSettings) -> None:
        self._recorder = recorder
        self._url = settings.events_webhook_url or ""
        secret = settings.events_webhook_secret
        self._signer = Signer(secret.get_secret_value() if secret else None, "EVENTS_WEBHOOK_SECRET")
        self._types = event_types(settings.events_webhook_types)
        self._batch = settings.events_webhook_batch
        self._timeout = settings.events_webhook_timeout
        self._retry_limit = settings.events_webhook_retry_limit
        self._me = settings.instance_id
        self._lease_ttl = self._ack_wait = max(2.0, 2 * settings.presence_interval)
        self.bucket = f"{recorder.stream}_WEBHOOK"
        self.consumer = f"{recorder.stream}_WEBHOOK"
        self._replicas = settings.room_stream_replicas
        on, service = settings.metrics, settings.service_name
        self._ok = metrics.child(metrics.WEBHOOK_REQUESTS, on, service=service, outcome="ok")
        self._status = metrics.child(metrics.WEBHOOK_REQUESTS, on, service=service, outcome="status")
        self._error = metrics.child(metrics.WEBHOOK_REQUESTS, on, service=service, outcome="error")
        self._delivered = metrics.child(metrics.WEBHOOK_EVENTS, on, service=service)
        self._lag = metrics.child(metrics.WEBHOOK_LAG, on, service=service)
        self._pending = metrics.child(metrics.WEBHOOK_PENDING, on, service=service)
        self._failures = 0
        self._kv: Any = None
        self._log = BatchLog(recorder.stream, settings.events_retention, settings.room_stream_replicas)
        self._revision: int | None = None  # of the lease, while this replica holds it
        self._next: int | None = None  # after a new batch this replica acked: where the next one starts

    def __repr__(self) -> str:  # never the URL or the secret
        return f"Webhooks(types={sorted(self._types)}, batch={self._batch})"

    # --- the loop -------------------------------------------------------------------------------
    async def run(self) -> None:
        await self._recorder.ready.wait()
        backoff = Backoff(first=0.2, limit=2.0)
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            while True:
                try:
                    sub = await self._setup()
                    backoff.reset()
                    await self._lead(client, sub)
                except Exception as exc:  # NATS away or restarting: set up again
                    self._revision = self._next = None
                    self._failures += 1
                    if worth_logging(self._failures):
                        logger.info("webhooks: waiting for NATS (%s)", type(exc).__name__)
                    await asyncio.sleep(backoff.next())

    def _js(self) -> Any:
        return self._recorder._js()

    async def _setup(self) -> Any:
        js = self._js()
        self._kv = await self._bucket(self.bucket, self._lease_ttl)  # the lease: gone if not kept
        await self._log.open(js)  # the ranges of the batches sent: kept as long as the events
        config = api.ConsumerConfig(
            durable_name=self.consumer,
            ack_policy=api.AckPolicy.ALL,
            ack_wait=self._ack_wait,
            max_deliver=-1,
            deliver_policy=api.DeliverPolicy.ALL,
            filter_subject=self._recorder.spec.subjects,
            num_replicas=self._replicas,
        )
        with contextlib.suppress(Exception):  # made by another replica already: same config
            await js.add_consumer(self._recorder.stream, config)
        return await js.pull_subscribe_bind(durable=self.consumer, stream=self._recorder.stream)

    async def _bucket(self, name: str, ttl: float) -> Any:
        js = self._js()
        try:
            return await js.key_value(name)
        except Exception:
            config = api.KeyValueConfig(
                bucket=name, history=1, ttl=ttl, storage=api.StorageType.FILE, replicas=self._replicas
            )
            return await js.create_key_value(config)

    async def _hold_lease(self) -> bool:
        """Take the lease if it is free, or keep it if held; False: another replica holds it."""
        try:
            if self._revision is None:
                self._revision = await self._kv.create(LEASE_KEY, self._me.encode())
                self._next = None  # another replica may have delivered meanwhile
                logger.info("webhooks: this replica delivers now")
            else:
                self._revision = await self._kv.update(LEASE_KEY, self._me.encode(), last=self._revision)
            return True
        except Exception:
            if self._revision is not None:
                logger.info("webhooks: another replica delivers now")
            self._revision = self._next = None
            return False

    async def _lead(self, client: httpx.AsyncClient, sub: Any) -> None:
        while True:
            if not await self._hold_lease():
                await asyncio.sleep(self._lease_ttl / 4)
                continue
            try:
                messages = await sub.fetch(self._batch, timeout=FETCH_WAIT)
            except TimeoutError:
                self._lag.set(0)
                self._pending.set(0)
                continue
            try:
                await self._deliver(client, sub, messages)
            except NotYet:
                await asyncio.sleep(self._ack_wait / 4)

    # --- one batch ------------------------------------------------------------------------------
    async def _deliver(self, client: httpx.AsyncClient, sub: Any, messages: list[Any]) -> None:
        held = [messages]  # what the keepalive keeps
        keepalive = asyncio.create_task(self._keep(held), name="webhook batch keepalive")
        try:
            messages, batch, fresh = await self._frame(sub, messages)
            held[0] = messages
            self._pending.set(messages[-1].metadata.num_pending)
            events = [json.loads(m.data) for m in messages]
            events = [e for e in events if e.get("type") in self._types]
            if events:
                body = json.dumps({"events": events}, separators=(",", ":"), ensure_ascii=False).encode()
                await self._post(client, body, batch.webhook_id, events[0].get("ts", time.time()))
            await messages[-1].ack_sync()  # AckPolicy.ALL: the whole batch
            self._next = batch.last + 1 if fresh else None  # after a rebuilt one: more may follow
            self._delivered.inc(len(events))
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive

    async def _frame(self, sub: Any, messages: list[Any]) -> tuple[list[Any], Batch, bool]:
        """The batch these messages start: the recorded one if a batch was sent from there before (a
        redelivery: same range, same ``webhook-id``), else a new one (True), recorded before its first POST.
        Only where this replica's last new batch ended is a batch new for sure; elsewhere, look."""
        messages = sorted({_seq(m): m for m in messages}.values(), key=_seq)  # in order, each once
        epoch, first = self._recorder.epoch, _seq(messages[0])
        expected, self._next = self._next, None
        if first != expected:
            recorded = await self._log.starting_at(epoch, first)
            if recorded is not None:
                return await self._rebuild(sub, messages, recorded), recorded, False
            latest = await self._log.latest(epoch)
            if latest is not None and first <= latest.last:  # inside a range whose start has expired
                messages = await self._cut(messages)
            elif latest is not None:
                info = await self._js().consumer_info(self._recorder.stream, self.consumer)
                if info.ack_floor.stream_seq < latest.last:
                    # the batch another replica was sending is still pending: it goes first, once it
                    # is redelivered (its ack wait runs out); these come back after it
                    await _nak(messages)
                    raise NotYet("the previous batch is not redelivered yet")
        batch = Batch(epoch, first, _seq(messages[-1]))
        await self._log.record(batch)
        return messages, batch, True

    async def _rebuild(self, sub: Any, messages: list[Any], batch: Batch) -> list[Any]:
        while _seq(messages[-1]) < batch.last:  # redelivered in parts: the rest
            with contextlib.suppress(TimeoutError):
                messages += await sub.fetch(self._batch, timeout=FETCH_WAIT)
        await _nak([m for m in messages if _seq(m) > batch.last])  # for the next batch, at once
        return [m for m in messages if _seq(m) <= batch.last]

    async def _cut(self, messages: list[Any]) -> list[Any]:
        """The messages before the first one that starts a recorded batch (the rest are nak'ed)."""
        for i, message in enumerate(messages[1:], start=1):
            if await self._log.starting_at(self._recorder.epoch, _seq(message)) is not None:
                await _nak(messages[i:])
                return messages[:i]
        return messages

    async def _keep(self, held: list[list[Any]]) -> None:
        """While a batch is being delivered: its messages stay this replica's, and so does the lease."""
        while True:
            await asyncio.sleep(self._ack_wait / 3)
            await self._hold_lease()
            for message in [m for messages in held for m in messages]:
                with contextlib.suppress(Exception):
                    await message.in_progress()

    async def _post(self, client: httpx.AsyncClient, body: bytes, webhook_id: str, oldest: float) -> None:
        backoff = Backoff(first=0.2, limit=self._retry_limit)
        while True:
            self._lag.set(max(0.0, time.time() - oldest))
            headers = self._signer.headers(body, webhook_id) | {"content-type": "application/json"}
            try:
                response = await client.post(self._url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                self._error.inc()
                outcome = type(exc).__name__
            else:
                if 200 <= response.status_code < 300:
                    self._ok.inc()
                    return
                self._status.inc()
                outcome = f"status {response.status_code}"
            self._failures += 1
            if worth_logging(self._failures):
                logger.warning("webhooks: a delivery failed (%s); retrying", outcome)
            await asyncio.sleep(backoff.next())
            if self._revision is None:  # another replica took over (this one was cut off): it sends
                raise LeaseLost("webhook lease lost")


def _seq(message: Any) -> int:
    return int(message.metadata.sequence.stream)


async def _nak(messages: list[Any]) -> None:
    for message in messages:
        await message.nak()

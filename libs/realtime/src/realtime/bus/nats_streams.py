"""The NATS bus's streams (JetStream): stored messages with their sequence numbers, read back by sequence
or after one. A part of ``NatsBus`` (``nats.py``), which owns the connection these use."""

import contextlib
import secrets

from nats.aio.client import Client
from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError, NotFoundError

from realtime.bus.base import BusUnavailable, StoreAck, Stored, StreamSpec

STREAM_NAME_IN_USE = 10058  # JetStream's error code: a stream of that name exists with another config
FETCH_TIMEOUT = 2.0  # seconds one batch of stored messages may take


class NatsStreams:
    """The ``Bus`` stream operations over ``NatsBus``'s current connection."""

    _nc: Client | None  # NatsBus's connection (None before the first one)
    _request_timeout: float

    def _js(self) -> JetStreamContext:
        nc = self._nc
        if nc is None or nc.is_closed:
            raise BusUnavailable("NATS is not connected")
        # A request to a hung server fails after request_timeout; the store is retried with the same id.
        return nc.jetstream(timeout=self._request_timeout)

    def jetstream(self) -> JetStreamContext:
        """The current connection's JetStream context, for what this interface does not cover (key-value
        buckets, durable consumers: the rooms' events); raises ``BusUnavailable`` while not connected."""
        return self._js()

    async def ensure_stream(self, spec: StreamSpec) -> str:
        config = api.StreamConfig(
            name=spec.name,
            subjects=[spec.subjects],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
            discard=api.DiscardPolicy.OLD,
            max_msgs_per_subject=spec.max_per_subject,
            max_age=spec.max_age,
            max_msg_size=spec.max_msg_size,
            duplicate_window=spec.duplicate_window,
            num_replicas=spec.replicas,
            allow_direct=True,
            republish=api.RePublish(src=spec.subjects, dest=spec.republish_to) if spec.republish_to else None,
        )
        js = self._js()
        try:
            info = await js.add_stream(config)
        except BadRequestError as exc:  # every replica races to create it: the others update
            if exc.err_code != STREAM_NAME_IN_USE:
                raise
            info = await js.update_stream(config)
        created = info.created
        return f"{created.timestamp():.6f}" if created is not None else spec.name

    async def store(self, stream: str, subject: str, payload: bytes, msg_id: str | None = None) -> StoreAck:
        headers = {api.Header.MSG_ID: msg_id} if msg_id is not None else None
        ack = await self._js().publish(subject, payload, stream=stream, headers=headers)
        return StoreAck(ack.seq, bool(ack.duplicate))

    async def last_stored(self, stream: str, subject: str) -> int:
        try:
            msg = await self._js().get_last_msg(stream, subject, direct=True)
        except NotFoundError:
            return 0
        return int(msg.seq or 0)

    async def purge(self, stream: str, subject: str) -> None:
        await self._js().purge_stream(stream, subject=subject)

    async def stored_at(self, stream: str, seq: int) -> Stored | None:
        js = self._js()
        try:
            msg = await js.get_msg(stream, seq=seq, direct=True)
        except NotFoundError:
            # Any replica answers a direct read, and one back from a hang may not hold it yet: the leader's
            # store decides (only on this rare path, so the usual read stays off the leader).
            try:
                msg = await js.get_msg(stream, seq=seq)
            except NotFoundError:
                return None
        return Stored(int(msg.seq or seq), msg.subject or "", msg.data or b"")

    async def stored_after(self, stream: str, subject: str, after: int, limit: int) -> list[Stored]:
        if limit < 1:
            return []
        js = self._js()
        # The leader's newest seq, not a replica's: the read's consumer may sit on a replica still catching
        # up (a node back from a hang), so it reads until this seq rather than until its replica runs out.
        newest = await self._newest_on_leader(js, stream, subject)
        if newest <= after:
            return []  # nothing to read (a fetch from an empty range waits out its timeout)
        name = f"read-{secrets.token_hex(8)}"  # named here, so it can be deleted by name afterwards
        config = api.ConsumerConfig(
            name=name,
            filter_subject=subject,
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=after + 1,
            ack_policy=api.AckPolicy.NONE,
            mem_storage=True,
            num_replicas=1,
            inactive_threshold=30.0,  # the server removes it if this replica vanishes mid-read
        )
        await js.add_consumer(stream, config)
        found: list[Stored] = []
        sub: JetStreamContext.PullSubscription | None = None
        try:
            sub = await js.pull_subscribe_bind(consumer=name, stream=stream)
            while len(found) < limit and (not found or found[-1].seq < newest):
                try:
                    batch = await sub.fetch(min(limit - len(found), 1000), timeout=FETCH_TIMEOUT)
                except TimeoutError:
                    break
                for msg in batch:
                    meta = msg.metadata
                    found.append(Stored(meta.sequence.stream, msg.subject, msg.data))
        finally:
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            with contextlib.suppress(Exception):
                await js.delete_consumer(stream, name)
        if len(found) < limit and (not found or found[-1].seq < newest):
            # Its replica did not catch up within the fetch timeout (or the subject was purged meanwhile):
            # an answer without acknowledged messages would be a silent gap, so the caller retries.
            reached = found[-1].seq if found else after
            raise BusUnavailable(f"{stream}: the read reached seq {reached} of {newest}")
        return found[:limit]

    @staticmethod
    async def _newest_on_leader(js: JetStreamContext, stream: str, subject: str) -> int:
        try:
            msg = await js.get_last_msg(stream, subject)  # not direct: the stream leader answers
        except NotFoundError:
            return 0
        return int(msg.seq or 0)

"""The ranges of the webhook batches, kept so a batch JetStream redelivers is sent again as the same batch.

Why: JetStream may redeliver events the receiver already acknowledged. An ack is not written to disk at
once (the server saves a consumer's state lazily), so after nats-server is killed and restarted the
consumer may be back a few batches. Those events must come back under the ``webhook-id`` they were sent
with, so an app that drops a ``webhook-id`` it has handled still sees each event once.

How: before a batch is first POSTed, its range of stream sequences (first, last) is written to the
key-value bucket ``<events stream>_WEBHOOK_BATCHES`` under ``b.<first>`` (kept as long as the events,
``EVENTS_RETENTION``; replicated like them): one put per batch. Batches are recorded in order, so the
bucket's last entry is the highest range (read only when a fetch does not simply follow this replica's
last batch). A fetch that starts where a recorded range starts rebuilds that range; the ``webhook-id``
is ``<epoch>-<first>-<last>``, the stream's epoch naming its life (a stream made anew starts its
sequences again).
"""

import json
from dataclasses import dataclass
from typing import Any

from nats.js import api
from nats.js.errors import KeyNotFoundError, NotFoundError


@dataclass(frozen=True)
class Batch:
    epoch: str
    first: int
    last: int

    @property
    def webhook_id(self) -> str:
        return f"{self.epoch}-{self.first}-{self.last}"


class BatchLog:
    """The recorded ranges of one events stream (bucket opened by ``open()`` after each (re)connect)."""

    def __init__(self, stream: str, retention: float, replicas: int) -> None:
        self.bucket = f"{stream}_WEBHOOK_BATCHES"
        self._stream = f"KV_{self.bucket}"  # the bucket's own stream
        self._retention = retention
        self._replicas = replicas
        self._kv: Any = None
        self._js: Any = None

    async def open(self, js: Any) -> None:
        self._js = js
        try:
            self._kv = await js.key_value(self.bucket)
        except Exception:  # not there yet: made here (another replica racing makes the same)
            config = api.KeyValueConfig(
                bucket=self.bucket,
                history=1,
                ttl=self._retention,
                storage=api.StorageType.FILE,
                replicas=self._replicas,
            )
            self._kv = await js.create_key_value(config)

    async def starting_at(self, epoch: str, seq: int) -> Batch | None:
        """The recorded batch that starts at ``seq``, if any."""
        return await self._get(f"b.{seq}", epoch)

    async def latest(self, epoch: str) -> Batch | None:
        """The highest recorded batch: the bucket's last entry."""
        state = (await self._js.stream_info(self._stream)).state
        if not state.messages:
            return None
        try:
            message = await self._js.get_msg(self._stream, state.last_seq)
        except NotFoundError:  # expired meanwhile: nothing recorded within the retention
            return None
        return _batch(message.data, epoch)

    async def record(self, batch: Batch) -> None:
        """Before the batch's first POST (batches are recorded in order)."""
        value = json.dumps({"epoch": batch.epoch, "first": batch.first, "last": batch.last}).encode()
        await self._kv.put(f"b.{batch.first}", value)

    async def _get(self, key: str, epoch: str) -> Batch | None:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None
        return _batch(entry.value, epoch)


def _batch(value: bytes | None, epoch: str) -> Batch | None:
    record = json.loads(value or b"{}")
    if record.get("epoch") != epoch:  # a range of an earlier life of the stream
        return None
    return Batch(epoch, int(record["first"]), int(record["last"]))

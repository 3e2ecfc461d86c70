"""Encode once, write to every local connection: the broadcast hot path shared by rooms and stats.

A ``Hub`` holds the ``FrameWriter`` of each local connection that should hear a broadcast. ``broadcast``
takes a frame encoded once (``realtime.frames``) and costs one ``transport.write`` per connection: no
queue and no task per connection. What happens to a connection whose unread backlog passes
``max_buffered`` bytes is the hub's policy:

- ``Policy.CUT_OFF`` (rooms: every message matters): the frame is written, then the connection is
  closed with 1013 "slow consumer", a reconnect-and-resume code. The close frame follows the backlog, and
  the connection stays up for ``close_deadline`` seconds so the client can read both and learn the code
  (the backlog is bounded: nothing more is written after the close);
- ``Policy.LATEST_WINS`` (the stats pulse: only the newest value matters): the frame is skipped for that
  connection, which gets a later one once it has read what it has.

Metrics (``service`` given): deliveries and bytes out are tallies shared by every hub of the service
(``hub_metrics``), added once per broadcast (members x frame length), never per member; a cut-off
slow consumer counts on a counter child resolved once.
"""

import enum
import logging
from collections.abc import Iterator

from realtime import metrics
from realtime.close_codes import CloseCode
from realtime.transport import FrameWriter

logger = logging.getLogger(__name__)

SLOW_CONSUMER = "slow consumer"


class Policy(enum.StrEnum):
    CUT_OFF = "cut_off"
    LATEST_WINS = "latest_wins"


class HubMetrics:
    """One service's delivery metrics, shared by all its hubs (rooms open and close hubs all the time:
    a tally of its own would be lost with its hub before the next scrape)."""

    __slots__ = ("bytes_out", "delivered", "slow")

    def __init__(self, service: str, enabled: bool = True) -> None:
        self.delivered = metrics.tally(metrics.MESSAGES_DELIVERED, enabled, service=service)
        self.bytes_out = metrics.tally(metrics.BYTES_OUT, enabled, service=service)
        self.slow = metrics.child(metrics.SLOW_CONSUMERS, enabled, service=service)


_hub_metrics: dict[tuple[str, bool], HubMetrics] = {}


def hub_metrics(service: str, enabled: bool = True) -> HubMetrics:
    """The ``HubMetrics`` of ``service``, made on first use and kept (its tallies must outlive hubs)."""
    found = _hub_metrics.get((service, enabled))
    if found is None:
        found = _hub_metrics[(service, enabled)] = HubMetrics(service, enabled)
    return found


_OFF = HubMetrics("", enabled=False)


class Hub:
    __slots__ = (
        "_m",
        "_writers",
        "close_deadline",
        "cut_off",
        "max_buffered",
        "name",
        "policy",
        "skipped",
    )

    def __init__(
        self,
        policy: Policy,
        max_buffered: int,
        *,
        close_deadline: float = 60.0,
        name: str = "hub",
        service: str | None = None,
        metrics_on: bool = True,
    ) -> None:
        self._m = hub_metrics(service, metrics_on) if service is not None and metrics_on else _OFF
        self.policy = policy
        self.max_buffered = max_buffered
        self.close_deadline = close_deadline
        self.name = name
        self.cut_off = 0  # connections closed as slow consumers
        self.skipped = 0  # frames not written under LATEST_WINS
        self._writers: set[FrameWriter] = set()

    def __len__(self) -> int:
        return len(self._writers)

    def __contains__(self, writer: object) -> bool:
        return writer in self._writers

    def __iter__(self) -> Iterator[FrameWriter]:
        return iter(self._writers)

    def add(self, writer: FrameWriter) -> None:
        self._writers.add(writer)

    def discard(self, writer: FrameWriter) -> None:
        self._writers.discard(writer)

    def broadcast(self, frame: bytes) -> int:
        """Write ``frame`` to every connection under the policy; returns how many got it."""
        sent = 0
        limit = self.max_buffered
        if self.policy is Policy.LATEST_WINS:
            for writer in self._writers:
                if writer.buffered > limit:
                    self.skipped += 1
                elif writer.write(frame):
                    sent += 1
            self._count(sent, len(frame))
            return sent
        slow: list[FrameWriter] = []
        for writer in self._writers:
            if writer.write(frame):
                sent += 1
                if writer.buffered > limit:
                    slow.append(writer)
        self._count(sent, len(frame))
        for writer in slow:
            self.close_slow(writer)
        return sent

    def _count(self, sent: int, size: int) -> None:
        m = self._m
        m.delivered.value += sent
        m.bytes_out.value += sent * size

    def send(self, writer: FrameWriter, frame: bytes, *, force: bool = False) -> bool:
        """One frame to one connection (in the hub or not) under the same policy; ``force`` ignores
        the limit (a welcome, the newest pulse for a client that just arrived)."""
        if not force and self.policy is Policy.LATEST_WINS and writer.buffered > self.max_buffered:
            self.skipped += 1
            return False
        if not writer.write(frame):
            return False
        self._count(1, len(frame))
        if not force and self.policy is Policy.CUT_OFF and writer.buffered > self.max_buffered:
            self.close_slow(writer)
        return True

    def close_slow(self, writer: FrameWriter) -> None:
        """Cut one connection off as a slow consumer: 1013, then nothing more is written to it."""
        self._writers.discard(writer)
        if not writer.open:
            return
        self.cut_off += 1
        self._m.slow.inc()
        logger.info("%s: slow consumer cut off, %d bytes unread", self.name, writer.buffered)
        writer.close(CloseCode.TRY_AGAIN_LATER, SLOW_CONSUMER, abort_after=self.close_deadline)

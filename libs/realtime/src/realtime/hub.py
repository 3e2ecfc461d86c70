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
"""

import enum
import logging
from collections.abc import Iterator

from realtime.close_codes import CloseCode
from realtime.serve import FrameWriter

logger = logging.getLogger(__name__)

SLOW_CONSUMER = "slow consumer"


class Policy(enum.StrEnum):
    CUT_OFF = "cut_off"
    LATEST_WINS = "latest_wins"


class Hub:
    __slots__ = ("_writers", "close_deadline", "cut_off", "max_buffered", "name", "policy", "skipped")

    def __init__(
        self, policy: Policy, max_buffered: int, *, close_deadline: float = 60.0, name: str = "hub"
    ) -> None:
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
            return sent
        slow: list[FrameWriter] = []
        for writer in self._writers:
            if writer.write(frame):
                sent += 1
                if writer.buffered > limit:
                    slow.append(writer)
        for writer in slow:
            self.close_slow(writer)
        return sent

    def send(self, writer: FrameWriter, frame: bytes, *, force: bool = False) -> bool:
        """One frame to one connection (in the hub or not) under the same policy; ``force`` ignores
        the limit (a welcome, the newest pulse for a client that just arrived)."""
        if not force and self.policy is Policy.LATEST_WINS and writer.buffered > self.max_buffered:
            self.skipped += 1
            return False
        if not writer.write(frame):
            return False
        if not force and self.policy is Policy.CUT_OFF and writer.buffered > self.max_buffered:
            self.close_slow(writer)
        return True

    def close_slow(self, writer: FrameWriter) -> None:
        """Cut one connection off as a slow consumer: 1013, then nothing more is written to it."""
        self._writers.discard(writer)
        if not writer.open:
            return
        self.cut_off += 1
        logger.info("%s: slow consumer cut off, %d bytes unread", self.name, writer.buffered)
        writer.close(CloseCode.TRY_AGAIN_LATER, SLOW_CONSUMER, abort_after=self.close_deadline)

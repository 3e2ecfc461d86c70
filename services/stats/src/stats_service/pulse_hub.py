"""The pulse to every local client: encoded once per tick, latest value wins, never a backlog.

Each pulse is serialised once and framed once (``realtime.frames.text_frame``); the shared hub
(``realtime.hub``, policy ``LATEST_WINS``) writes the same bytes to every client's transport. A client
that still has more than ``max_buffered`` bytes of earlier pulses unsent skips this tick and gets the
newest pulse at a later one, so a slow reader holds at most one pulse in this process.
"""

import logging
import time

from fastapi import WebSocket
from realtime import metrics
from realtime.frames import text_frame
from realtime.hub import Hub, Policy
from realtime.serve import FrameWriter, frame_writer

logger = logging.getLogger(__name__)


class PulseHub:
    """The local clients of one stats replica and the newest pulse."""

    def __init__(self, max_buffered: int = 0, *, service: str = "stats", metrics_on: bool = True) -> None:
        self.hub = Hub(Policy.LATEST_WINS, max_buffered, name="stats", service=service, metrics_on=metrics_on)
        self._skipped = metrics.child(metrics.PULSES_SKIPPED, metrics_on)
        self._lag = metrics.child(metrics.PULSE_LAG, metrics_on)
        self.latest_text: str | None = None
        self.latest_frame: bytes | None = None
        self.latest_tick: int | None = None
        self.sent = 0

    @property
    def clients(self) -> Hub:
        return self.hub

    @property
    def skipped(self) -> int:
        return self.hub.skipped

    def join(self, websocket: WebSocket) -> FrameWriter:
        """Register an accepted client and hand it the newest pulse at once."""
        writer = frame_writer(websocket)
        if writer is None:
            raise RuntimeError("/stats needs the platform's WebSocket protocol (realtime.serve)")
        self.hub.add(writer)
        if self.latest_frame is not None:
            self.hub.send(writer, self.latest_frame, force=True)  # a new client never waits
        return writer

    def leave(self, writer: FrameWriter) -> None:
        self.hub.discard(writer)

    def publish(self, tick: int, text: str, started: float | None = None) -> tuple[int, int]:
        """Send one pulse to every client; returns (sent, skipped). ``started``: the tick's start on the
        wall clock (``time.time()``), for the pulse lag."""
        frame = text_frame(text)
        self.latest_tick, self.latest_text, self.latest_frame = tick, text, frame
        skipped_before = self.hub.skipped
        sent = self.hub.broadcast(frame)
        if started is not None:
            self._lag.observe(max(0.0, time.time() - started))
        skipped = len(self.hub) - sent
        if self.hub.skipped > skipped_before:
            self._skipped.inc(self.hub.skipped - skipped_before)
        self.sent += sent
        if skipped:
            logger.debug("pulse %d: %d clients skipped (still reading an earlier pulse)", tick, skipped)
        return sent, skipped

    def close(self) -> None:
        for writer in list(self.hub):
            self.hub.discard(writer)

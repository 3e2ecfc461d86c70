"""The pulse to every local client: encoded once per tick, latest value wins, never a backlog.

Each pulse is serialised once and framed once (``realtime.frames.text_frame``); the same bytes go to
every client's transport through its ``FrameWriter``. A client that still has more than ``max_buffered``
bytes of earlier pulses unsent skips this tick and gets the newest pulse at a later one, so a slow
reader holds at most one pulse in this process, however long it dawdles.

Under a server without the platform's protocol (Starlette's TestClient) there is no FrameWriter: each
client then has a one-slot mailbox and a small task that sends whatever is newest in it.
"""

import asyncio
import contextlib
import logging

from fastapi import WebSocket
from realtime.frames import text_frame
from realtime.serve import FrameWriter, frame_writer

logger = logging.getLogger(__name__)


class FrameClient:
    """A client on the hot path: frames go straight to its transport."""

    __slots__ = ("writer",)

    def __init__(self, writer: FrameWriter) -> None:
        self.writer = writer

    def offer(self, frame: bytes, text: str, max_buffered: int) -> bool:
        """Write the pulse unless earlier ones are still unsent; True when it was written."""
        writer = self.writer
        if writer.buffered > max_buffered:
            return False
        return writer.write(frame)

    def stop(self) -> None:
        return None


class MailboxClient:
    """The fallback: one slot holding the newest pulse text, sent by the client's own task."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self._newest: str | None = None
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._send_newest(), name="stats-mailbox")

    def offer(self, frame: bytes, text: str, max_buffered: int) -> bool:
        self._newest = text  # an unsent older pulse is replaced, never queued behind
        self._wake.set()
        return True

    async def _send_newest(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            text, self._newest = self._newest, None
            if text is None:
                continue
            try:
                await self.websocket.send_text(text)
            except Exception:  # the client went away mid-send: its own handler cleans up
                return

    def stop(self) -> None:
        self._task.cancel()


Client = FrameClient | MailboxClient


class PulseHub:
    """The local clients of one stats replica and the newest pulse."""

    def __init__(self, max_buffered: int = 0) -> None:
        self.max_buffered = max_buffered
        self.clients: set[Client] = set()
        self.latest_text: str | None = None
        self.latest_frame: bytes | None = None
        self.latest_tick: int | None = None
        self.sent = 0
        self.skipped = 0

    def join(self, websocket: WebSocket) -> Client:
        """Register an accepted client and hand it the newest pulse at once."""
        writer = frame_writer(websocket)
        client: Client = FrameClient(writer) if writer is not None else MailboxClient(websocket)
        self.clients.add(client)
        if self.latest_frame is not None and self.latest_text is not None:
            # a new client never waits: a full buffer is impossible yet, so ignore the limit
            client.offer(self.latest_frame, self.latest_text, max_buffered=1 << 62)
        return client

    def leave(self, client: Client) -> None:
        self.clients.discard(client)
        client.stop()

    def publish(self, tick: int, text: str) -> tuple[int, int]:
        """Send one pulse to every client; returns (sent, skipped)."""
        frame = text_frame(text)
        self.latest_tick, self.latest_text, self.latest_frame = tick, text, frame
        sent = skipped = 0
        limit = self.max_buffered
        for client in self.clients:
            if client.offer(frame, text, limit):
                sent += 1
            else:
                skipped += 1
        self.sent += sent
        self.skipped += skipped
        if skipped:
            logger.debug("pulse %d: %d clients skipped (still reading an earlier pulse)", tick, skipped)
        return sent, skipped

    def close(self) -> None:
        for client in list(self.clients):
            with contextlib.suppress(Exception):
                client.stop()
        self.clients.clear()

"""``Pulse``: the stats pulse (``/stats``) as an async iterator that reconnects by itself.

Each pulse is the server's JSON object (``tick``, ``ts``, ``cpu``, ``hosts``, ``services``,
``instances``, ...). A tick already yielded (a reconnect gets the newest pulse again) is skipped, so
ticks only go up; ``pulse.latest`` is the newest one. Reconnects follow the same close-code table as
rooms; a final close raises ``Closed``.
"""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from realtime_client.backoff import Backoff
from realtime_client.closes import ABNORMAL, closed_error, should_reconnect


class Pulse:
    """``async for pulse in Pulse("ws://127.0.0.1:8000"): print(pulse["tick"], pulse["cpu"])``"""

    def __init__(
        self, url: str, *, path: str = "/stats", backoff: Backoff | None = None, open_timeout: float = 10.0
    ) -> None:
        if not url.startswith(("ws://", "wss://")):
            raise ValueError("url must start with ws:// or wss://")
        self.url = url.rstrip("/") + path
        self.backoff = backoff or Backoff()
        self.open_timeout = open_timeout
        self.latest: dict[str, Any] | None = None
        self.connects = 0
        self.closes: list[tuple[int, str]] = []

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._pulses()

    async def _pulses(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            self.connects += 1
            code, reason = ABNORMAL, ""
            try:
                conn = await connect(self.url, compression=None, open_timeout=self.open_timeout)
            except InvalidStatus as exc:
                reason = f"HTTP {exc.response.status_code}"
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                reason = str(exc)
            else:
                try:
                    async for raw in conn:
                        pulse = json.loads(raw)
                        if self._seen(pulse):
                            continue
                        self.latest = pulse
                        self.backoff.reset()
                        yield pulse
                except ConnectionClosed:
                    pass
                finally:
                    await conn.close()
                if conn.protocol.close_rcvd is not None:
                    code, reason = conn.protocol.close_rcvd.code, conn.protocol.close_rcvd.reason
            self.closes.append((code, reason))
            if not should_reconnect(code):
                raise closed_error(code, reason, room=False)
            await asyncio.sleep(self.backoff.next())

    def _seen(self, pulse: dict[str, Any]) -> bool:
        tick = pulse.get("tick")
        if self.latest is None or not isinstance(tick, int):
            return False
        return tick <= self.latest.get("tick", -1)

"""Join admission: a replica works on at most ROOM_JOINS_IN_FLIGHT joins at once.

A join waits for its turn at most ROOM_JOIN_WAIT seconds, counted from when the gateway sent it
(``X-Request-Start: t=<microseconds>``, so the time it sat in this replica's queues before reaching the
app counts too); past that it is refused with 1013 "server busy" without any work on it (the clients
reconnect with their jittered backoff, so a storm spreads out). The wait plus a join's
own bounded work (its room's bus confirmation, at most 2 s; the census, PRESENCE_QUERY_TIMEOUT) stays
within the gateway's UPSTREAM_HANDSHAKE_TIMEOUT (5 s): the client hears the replica's answer, and a join
the gateway gave up on is not worked on after it.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from realtime.lograte import worth_logging

logger = logging.getLogger(__name__)


class Busy(RuntimeError):
    """No turn within the wait: the replica is saturated with joins."""


class Admission:
    def __init__(self, in_flight: int, wait: float) -> None:
        self._slots = asyncio.Semaphore(in_flight)
        self._wait = wait
        self.refused = 0

    @contextlib.asynccontextmanager
    async def turn(self, waited: float = 0.0) -> AsyncIterator[None]:
        """A turn for a join that has ``waited`` seconds already (``waited_since``)."""
        try:
            if waited >= self._wait:
                raise TimeoutError
            await asyncio.wait_for(self._slots.acquire(), self._wait - waited)
        except TimeoutError:
            self.refused += 1
            if worth_logging(self.refused):
                logger.warning("joins refused as the replica is busy: %d so far", self.refused)
            raise Busy("server busy") from None
        try:
            yield
        finally:
            self._slots.release()


def waited_since(request_start: str | None, now: float | None = None) -> float:
    """Seconds since ``X-Request-Start: t=<microseconds since the epoch>`` (0 when absent or malformed;
    a clock a little ahead counts as no wait)."""
    if not request_start or not request_start.startswith("t="):
        return 0.0
    try:
        started = int(request_start[2:]) / 1_000_000
    except ValueError:
        return 0.0
    return max(0.0, (time.time() if now is None else now) - started)

"""``Pacer``: the client's own copy of the server's message rate, so resends never break it.

The rooms service gives each socket a token bucket (MESSAGE_RATE a second after a burst of
MESSAGE_BURST, 20 and 40 by default) and closes a socket over it with 1008, a final close (``/ws``
refuses the sends with 4029, then closes). After a long stall a member may hold many unacknowledged
sends; resending them all at once after the welcome would end the session for good. So every message
sent on a socket spends a token here, and the resends after a welcome wait for theirs: at most ``burst``
at once, then ``rate`` a second. While resends are waiting, new sends queue behind them at the same
pace (the backlog goes first and nothing starves); otherwise a new send goes at once, as it always did.
The defaults stay below the server's defaults; a server with other limits wants matching
``resend_rate``/``resend_burst``.
"""

import asyncio
import time

RESEND_RATE = 15.0  # messages a second (the server's default MESSAGE_RATE is 20)
RESEND_BURST = 30  # messages at once (the server's default MESSAGE_BURST is 40)


class Pacer:
    """A token bucket of ``rate`` tokens a second holding at most ``burst``; full at each connect
    (the server's bucket is new on each connection too). Waiters are served in order."""

    def __init__(self, rate: float = RESEND_RATE, burst: int = RESEND_BURST) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("the resend rate must be above 0 and the burst at least 1")
        self.rate = rate
        self.burst = float(burst)
        self.backlog = 0  # resends registered and not sent yet, on this socket
        self._turn = asyncio.Lock()  # first come, first served
        self.reset()

    def reset(self) -> None:
        self._tokens = self.burst
        self._last = time.monotonic()

    def _fill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def spend(self) -> None:
        """A message sent without waiting: the resends after it wait the longer."""
        self._fill()
        self._tokens -= 1.0

    async def take(self) -> None:
        """Wait for this message's turn and a token, and spend it."""
        async with self._turn:
            while True:
                self._fill()
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self._tokens) / self.rate)

    async def new_send(self) -> None:
        """A new send: at once, unless resends are still to go (then behind them, at the pace)."""
        if self.backlog or self._turn.locked():
            await self.take()
        else:
            self.spend()

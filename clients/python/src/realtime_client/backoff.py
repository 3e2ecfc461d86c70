"""One backoff for every retry loop: storing a message, connecting to NATS, the launcher's restarts,
the clients' reconnects. Exponential from ``first`` by ``factor`` up to ``limit`` seconds, each delay
scaled by a random factor in [1 - jitter, 1 + jitter] so a crowd that failed together does not come back
together.

It lives in the client package (which depends on websockets alone) so a script can ``pip install`` the client
without the server's dependencies; the server side imports it as ``realtime.backoff.Backoff``."""

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    first: float = 0.5
    limit: float = 10.0
    factor: float = 2.0
    jitter: float = 0.25
    attempt: int = field(default=0, init=False)

    def delay(self, attempt: int) -> float:
        """The delay before try ``attempt + 1``, without jitter (what a restart policy prints)."""
        return min(self.limit, self.first * self.factor**attempt)

    def next(self) -> float:
        """The next delay, jittered; each call counts one more failure in a row."""
        delay = self.delay(self.attempt)
        self.attempt += 1
        return delay * random.uniform(1 - self.jitter, 1 + self.jitter) if self.jitter else delay

    def reset(self) -> None:
        """After a try that got going: the next failure starts again from ``first``."""
        self.attempt = 0

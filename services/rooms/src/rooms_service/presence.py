"""Who is in a room across replicas: soft state built from the replicas' own announcements.

Every replica announces its local member count of a room with each join and leave, answers a join from
a replica it does not know yet with its own count, and repeats its counts every presence interval.
A replica not heard from for three intervals (it crashed) stops counting. No central store, no
round trip on join: the total is exact once announcements have crossed, within one NATS hop.
"""

import time
from collections.abc import Callable


class Presence:
    __slots__ = ("_clock", "_expiry", "_remote")

    def __init__(self, expiry: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._expiry = expiry
        self._clock = clock
        self._remote: dict[str, tuple[int, float]] = {}  # other replica -> (its local count, heard at)

    def knows(self, origin: str) -> bool:
        return origin in self._remote

    def heard(self, origin: str, local_count: int) -> None:
        if local_count > 0:
            self._remote[origin] = (local_count, self._clock())
        else:
            self._remote.pop(origin, None)

    def prune(self) -> bool:
        """Forget replicas not heard from in time; True if any was forgotten."""
        cutoff = self._clock() - self._expiry
        stale = [origin for origin, (_, at) in self._remote.items() if at < cutoff]
        for origin in stale:
            del self._remote[origin]
        return bool(stale)

    def total(self, local_count: int) -> int:
        return local_count + sum(count for count, _ in self._remote.values())

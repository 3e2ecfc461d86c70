"""One room's presence on this replica (``presence.py`` keeps one per open room): the other replicas'
member counts, each forgotten when its replica falls silent, and the diffs of a big room."""

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from rooms_service.presence_diff import Diff


class Presence:
    """The other replicas' local counts of one room, each with when it was heard (expiry: silent ones go)."""

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


@dataclass(eq=False)
class RoomPresence:
    """What the roster (``presence.py``) keeps for one room open on this replica."""

    subject: str  # the room's core NATS subject: presence events travel with its stored messages
    presence: Presence
    mine: Diff  # this replica's joins and leaves not announced yet (a big room)
    told: Diff  # what this replica's members will be told at the next diff (a big room)
    live: "asyncio.Future[None]"  # this replica heard itself on the room's subject: its subscription is live
    last_total: int = 0  # the total its JSON members were last told

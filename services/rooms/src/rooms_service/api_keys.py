"""The HTTP API's keys: which configured key a bearer key is, a throttle on wrong ones, a rate per key.

A configured key is plain text or a salted hash (``pbkdf2_sha256$...``, as room passwords: guard.py), so
checking a candidate against hashed keys costs PBKDF2 per key. That runs in a worker thread, never on
the event loop; a key that verified is remembered by its SHA-256 digest (a bounded LRU), so a valid key
costs PBKDF2 once per replica, and concurrent checks of one candidate share one verification. A wrong
key is never remembered: each costs the full check, so wrong keys from one client address count on a
``FailureThrottle`` (AUTH_MAX_FAILURES in AUTH_FAILURE_WINDOW), and a throttled address is refused
unchecked. Comparisons are constant time. Nothing here logs, formats or raises with a key in it.
"""

import asyncio
import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rooms_service.guard import FailureThrottle, StoredPassword
from rooms_service.limits import TokenBucket

THROTTLE_SCOPE = "/api"  # the throttle's second key part: never a room id (they have no '/')
REMEMBERED = 1024  # verified keys remembered per replica (each configured key has one)


class Verdict:
    ALLOWED = "allowed"
    MISSING = "missing"  # no bearer key: not counted as a failure (nothing was guessed)
    WRONG = "wrong"
    THROTTLED = "throttled"  # too many wrong keys from this address lately: refused unchecked
    RATE_LIMITED = "rate limited"  # the key is over its rate


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: str
    retry_after: int = 0  # seconds, for THROTTLED and RATE_LIMITED


def _plain_key_ok(key: str) -> bool:
    """A plain key must survive an HTTP header unchanged: printable ASCII without spaces."""
    return bool(key) and key.isascii() and key.isprintable() and " " not in key


class ApiKeys:
    def __init__(
        self,
        configured: Sequence[str],
        throttle: FailureThrottle,
        *,
        rate: float,
        burst: int,
        remembered: int = REMEMBERED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        keys = []
        for i, value in enumerate(configured):
            stored = StoredPassword(value)  # a malformed hash fails here, at start
            if not stored.hashed and not _plain_key_ok(value):
                raise ValueError(f"API key #{i + 1} must be printable ASCII without spaces")
            keys.append(stored)
        self._plain = [(i, k) for i, k in enumerate(keys) if not k.hashed]
        self._hashed = [(i, k) for i, k in enumerate(keys) if k.hashed]
        self._buckets = [TokenBucket(rate, burst, clock=clock) for _ in keys]
        self.throttle = throttle
        self._remembered: OrderedDict[bytes, int] = OrderedDict()  # SHA-256 of a verified key -> index
        self._max_remembered = remembered
        self._verifying: dict[bytes, asyncio.Future[int | None]] = {}
        self.verifications = 0  # PBKDF2 checks run (each over every hashed key until one matches)

    def __len__(self) -> int:
        return len(self._buckets)

    async def check(self, client: str, candidate: str | None) -> Decision:
        """Whether ``client`` (its address) may call the API with the bearer key ``candidate``."""
        throttled = (client, THROTTLE_SCOPE)
        if self.throttle.blocked(throttled):
            return Decision(Verdict.THROTTLED, max(1, math.ceil(self.throttle.retry_in(throttled))))
        if candidate is None:
            return Decision(Verdict.MISSING)
        index = await self._identify(candidate, throttled)
        if index is None:
            return Decision(Verdict.WRONG)
        if not self._buckets[index].take():
            return Decision(Verdict.RATE_LIMITED, 1)
        return Decision(Verdict.ALLOWED)

    async def _identify(self, candidate: str, throttled: tuple[str, str]) -> int | None:
        """The index of the configured key ``candidate`` is, or None (then counted as a failure)."""
        digest = hashlib.sha256(candidate.encode("utf-8")).digest()
        index = self._remembered.get(digest)
        if index is None:
            index = self._match_plain(candidate)
        if index is None and self._hashed:
            pending = self._verifying.get(digest)
            if pending is None:
                # Charged before the slow check: a burst of guesses from one address starts at most
                # AUTH_MAX_FAILURES of them before the rest are throttled. Cleared if it verifies.
                self.throttle.failed(throttled)
                pending = self._verify(digest, candidate)
                index = await asyncio.shield(pending)
                if index is None:
                    return None  # counted above
            else:  # the same candidate is being verified already (a client's first burst): share it
                index = await asyncio.shield(pending)
        if index is None:
            self.throttle.failed(throttled)
            return None
        self.throttle.succeeded(throttled)
        self._remember(digest, index)
        return index

    def _match_plain(self, candidate: str) -> int | None:
        """Every plain key is compared (constant time each), whichever matches."""
        matches = [i for i, key in self._plain if key.matches(candidate)]
        return matches[0] if matches else None

    def _match_hashed(self, candidate: str) -> int | None:
        return next((i for i, key in self._hashed if key.matches(candidate)), None)

    def _verify(self, digest: bytes, candidate: str) -> "asyncio.Future[int | None]":
        """PBKDF2 in a worker thread; the result is remembered even if the request that asked is gone."""
        self.verifications += 1
        future = asyncio.ensure_future(asyncio.to_thread(self._match_hashed, candidate))
        self._verifying[digest] = future

        def done(finished: "asyncio.Future[int | None]") -> None:
            self._verifying.pop(digest, None)
            if not finished.cancelled() and finished.exception() is None:
                found = finished.result()
                if found is not None:
                    self._remember(digest, found)

        future.add_done_callback(done)
        return future

    def _remember(self, digest: bytes, index: int) -> None:
        self._remembered[digest] = index
        self._remembered.move_to_end(digest)
        while len(self._remembered) > self._max_remembered:
            self._remembered.popitem(last=False)

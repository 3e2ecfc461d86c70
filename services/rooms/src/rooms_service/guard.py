"""The guard: room passwords (salted hashes, constant-time checks), identity tokens (tokens.py), and
one throttle on repeated failures of either.

A configured password is either plain text or ``pbkdf2_sha256$<iterations>$<salt>$<hash>`` (salt and hash
in unpadded URL-safe base64, the hash 32 bytes), made by ``python -m rooms_service.hash_password``.
Nothing here logs, formats or raises with a password in it.
"""

import asyncio
import base64
import bisect
import hashlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping

from rooms_service.tokens import Identity, InvalidToken, TokenVerifier

logger = logging.getLogger(__name__)

HASH_SCHEME = "pbkdf2_sha256"
DEFAULT_ITERATIONS = 600_000  # OWASP's 2023 figure for PBKDF2-HMAC-SHA256


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return f"{HASH_SCHEME}${iterations}${_b64(salt)}${_b64(digest)}"


class StoredPassword:
    """One room's configured password: checks a candidate in constant time, hashed or not."""

    __slots__ = ("_digest", "_iterations", "_salt")

    def __init__(self, configured: str) -> None:
        if configured.startswith(HASH_SCHEME + "$"):
            parts = configured.split("$")
            if len(parts) != 4 or not parts[1].isdigit() or int(parts[1]) < 1:
                raise ValueError(f"a hashed password must look like {HASH_SCHEME}$<iterations>$<salt>$<hash>")
            self._iterations = int(parts[1])
            self._salt = _unb64(parts[2])
            self._digest = _unb64(parts[3])
        else:
            # Plain text is kept only as a digest, so the comparison never depends on its length.
            self._iterations = 0
            self._salt = b""
            self._digest = hashlib.sha256(configured.encode("utf-8")).digest()

    @property
    def hashed(self) -> bool:
        return self._iterations > 0

    def matches(self, candidate: str) -> bool:
        raw = candidate.encode("utf-8")
        if self.hashed:
            computed = hashlib.pbkdf2_hmac("sha256", raw, self._salt, self._iterations)
        else:
            computed = hashlib.sha256(raw).digest()
        return hmac.compare_digest(computed, self._digest)


class FailureThrottle:
    """Counts failed attempts per key in a sliding window; a key at the limit is refused unchecked.

    Memory is bounded: at most ``max_keys`` keys, the least recently failed forgotten first.
    """

    def __init__(
        self,
        max_failures: int,
        window: float,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        self.reached = 0  # times a key reached the limit (by its own failures or ones heard): /rooms

    def _recent(self, key: tuple[str, str]) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        cutoff = self._clock() - self.window
        while times and times[0] <= cutoff:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def blocked(self, key: tuple[str, str]) -> bool:
        times = self._recent(key)
        return times is not None and len(times) >= self.max_failures

    def failed(self, key: tuple[str, str], age: float = 0.0) -> int:
        """Record one failure that happened ``age`` seconds ago (one heard late from another replica);
        returns the failures inside the window, this one included."""
        at = self._clock() - age
        times = self._recent(key)
        if at <= self._clock() - self.window:  # already out of the window
            return len(times) if times is not None else 0
        if times is None:
            times = self._failures[key] = deque(maxlen=self.max_failures)
        was_blocked = len(times) >= self.max_failures
        if times and at < times[-1]:  # heard late: kept in time order, only the newest max_failures
            if len(times) == self.max_failures:
                if at <= times[0]:
                    return len(times)
                times.popleft()
            bisect.insort(times, at)
        else:
            times.append(at)
        if not was_blocked and len(times) >= self.max_failures:
            self.reached += 1
        self._failures.move_to_end(key)
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)
        return len(times)

    def succeeded(self, key: tuple[str, str]) -> None:
        self._failures.pop(key, None)

    def retry_in(self, key: tuple[str, str]) -> float:
        """Seconds until a blocked ``key`` may try again (its oldest counted failure leaves the window)."""
        times = self._recent(key)
        if times is None or len(times) < self.max_failures:
            return 0.0
        return max(0.0, times[0] + self.window - self._clock())


class Verdict:
    ALLOWED = "allowed"
    WRONG = "wrong"  # wrong or missing password
    THROTTLED = "throttled"  # too many recent failures: refused without checking
    INVALID_TOKEN = "invalid token"  # expired, forged, malformed, another room's, or tokens not configured


# (client address, room, succeeded): tells the other replicas, so the throttle holds across all of them.
Announce = Callable[[str, str, bool], Awaitable[None]]


class PasswordGuard:
    """Decides, before a client joins anything, whether it may enter a room."""

    def __init__(
        self,
        passwords: Mapping[str, str],
        throttle: FailureThrottle,
        announce: Announce | None = None,
        tokens: TokenVerifier | None = None,
    ) -> None:
        self._rooms = {room: StoredPassword(value) for room, value in passwords.items()}
        self.throttle = throttle
        self.announce = announce
        self.tokens = tokens or TokenVerifier()

    def heard(self, client: str, room_id: str, succeeded: bool, age: float = 0.0) -> None:
        """Another replica checked a password or a token for this room and this client ``age`` seconds ago."""
        if succeeded:
            self.throttle.succeeded((client, room_id))
        else:
            self.throttle.failed((client, room_id), age)

    def guarded(self, room_id: str) -> bool:
        return room_id in self._rooms

    async def check(self, room_id: str, client: str, candidate: str | None) -> str:
        stored = self._rooms.get(room_id)
        if stored is None:
            return Verdict.ALLOWED
        key = (client, room_id)
        if self.throttle.blocked(key):
            return Verdict.THROTTLED
        if candidate is None:
            ok = False
        elif stored.hashed:  # PBKDF2 takes a good part of a second: keep it off the event loop
            ok = await asyncio.to_thread(stored.matches, candidate)
        else:
            ok = stored.matches(candidate)
        await self._record(key, ok)
        return Verdict.ALLOWED if ok else Verdict.WRONG

    async def check_token(self, room_id: str, client: str, token: str) -> tuple[str, Identity | None]:
        """A token member: admitted to the rooms its token names, guarded ones included. A refused token
        counts as a failure for (client, room) exactly like a wrong password."""
        key = (client, room_id)
        if self.throttle.blocked(key):
            return Verdict.THROTTLED, None
        try:
            identity = self.tokens.verify(token)
            if not identity.may_join(room_id):
                raise InvalidToken("NotForThisRoom")
        except InvalidToken as exc:
            logger.info("room %s: token refused for %s (%s)", room_id, client, exc)
            await self._record(key, False)
            return Verdict.INVALID_TOKEN, None
        await self._record(key, True)
        return Verdict.ALLOWED, identity

    async def _record(self, key: tuple[str, str], ok: bool) -> None:
        if ok:
            self.throttle.succeeded(key)
        else:
            self.throttle.failed(key)
        if self.announce is not None:
            try:
                await self.announce(key[0], key[1], ok)
            except Exception as exc:  # the bus is away: this replica's throttle still holds
                logger.info("could not share a check result (%s)", type(exc).__name__)

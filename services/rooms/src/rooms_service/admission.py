"""Join admission, the same for ``/ws/{room_id}`` and for each join on ``/ws``: who may join
(``JoinChecks``) and when (``Admission``).

Who: a ``?name=`` without a token only where display names are on (else 1008); then the room's password
or the identity token, under the failure throttle shared by the replicas (``guard.py``: a wrong password
4003 ``forbidden``, a bad token 4001 ``invalid token``, a throttled client 4003 unchecked); then the app's
join hook (``hooks.py``: its 4000-4999 on a deny, 1013 when it could not decide), which may give the
member its ``user``/``name``. A refusal is a ``Refused`` (``refused.py``): ``/ws/{room_id}`` closes with it,
``/ws`` answers the join with an ``error`` frame.

When: a replica works on at most ROOM_JOINS_IN_FLIGHT joins at once.
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
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from realtime.close_codes import CloseCode
from realtime.lograte import worth_logging

from rooms_service.counters import AuthMetrics
from rooms_service.guard import PasswordGuard, Verdict
from rooms_service.hooks import Hooks
from rooms_service.refused import Refused
from rooms_service.tokens import Identity, display_name

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


@dataclass(frozen=True, slots=True)
class Admitted:
    """Who joins: the user and name it is shown with, and its token's identity (whose expiry closes it)."""

    user: str | None
    name: str | None
    identity: Identity | None


@dataclass(frozen=True, slots=True)
class JoinChecks:
    """Who may join a room: one per app, asked by both endpoints."""

    guard: PasswordGuard
    hooks: Hooks
    auth: AuthMetrics
    display_names: bool  # ROOM_DISPLAY_NAMES

    def shown_name(self, name: str | None, token: str | None) -> str | None:
        """A ``?name=`` without a token (a token member's name is the token's), or ``Refused`` 1008."""
        if name is None or token is not None:
            return None
        if not self.display_names:
            raise Refused(CloseCode.POLICY_VIOLATION, "display names need a token")
        shown = display_name(name)
        if shown is None:
            raise Refused(CloseCode.POLICY_VIOLATION, "invalid name")
        return shown

    async def admit(
        self,
        room_id: str,
        client: str,
        headers: Mapping[str, str],
        *,
        token: str | None,
        password: str | None,
        name: str | None,
        where: str = "",
    ) -> Admitted:
        """The password or token check for ``room_id`` (throttled), then the join hook; or ``Refused``.
        ``name`` is the ``shown_name``; ``where`` names the endpoint in the log line of a refusal."""
        identity: Identity | None = None
        if token is not None:
            verdict, identity = await self.guard.check_token(room_id, client, token)
        else:
            verdict = await self.guard.check(room_id, client, password)
        if verdict != Verdict.ALLOWED:
            (self.auth.throttled if verdict == Verdict.THROTTLED else self.auth.failures).inc()
            if verdict == Verdict.INVALID_TOKEN:
                raise Refused(CloseCode.INVALID_TOKEN, "invalid token")
            logger.warning("room %s: refused %s%s (%s password)", room_id, client, where, verdict)
            raise Refused(CloseCode.FORBIDDEN, "forbidden")
        user, shown = (identity.user, identity.name) if identity is not None else (None, name)
        if self.hooks.joins:  # the app decides, after the password or token check
            decision = await self.hooks.join(room_id, user, shown, client, headers)
            if not decision.allowed:  # the app's 4000-4999, or 1013 when it could not decide
                raise Refused(decision.code, decision.reason)
            if decision.user is not None or decision.name is not None:
                user, shown = decision.user or user, decision.name or shown
        return Admitted(user, shown, identity)

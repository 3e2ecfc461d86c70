"""Shares password and token check results between replicas, so the failure throttle counts across all,
also across a NATS server that hangs or dies under one of them.

Each replica publishes ``{"client", "room", "ok", "origin"}`` on ``<prefix>.auth.results`` after every
check of a guarded room's password or of a token (never the secret) and applies what the others publish
to its own throttle. A failure also carries an ``id`` (the replica, its start, a counter) and its ``age``.

Core NATS delivers to whoever listens at that moment: what a replica published into a hung server's
socket, and what the others published while it was moving to another node, is gone. So each replica
keeps its own failures still inside ``AUTH_FAILURE_WINDOW``, and when its bus is back it asks the others
to send theirs again (``resync``) and sends its own again: a failure heard twice (same ``id``) counts
once, and one heard late counts from when it happened (its ``age``), so it leaves the window on time.
A success lost that way is not resent: the client is at worst throttled a little longer, never less.
A room subject has two tokens (``<prefix>.<room_id>``, ids have no '.'), so this one never meets a room.
"""

import asyncio
import contextlib
import itertools
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

from realtime.bus import Bus

from rooms_service.guard import PasswordGuard

logger = logging.getLogger(__name__)

MAX_KEYS = 10_000  # (client, room) keys whose own failures are kept for a resend; the oldest go first
MAX_SEEN = 100_000  # failure ids heard (to count each once), forgotten once out of the window anyway


def results_subject(prefix: str) -> str:
    return f"{prefix}.auth.results"


def _encode(event: dict[str, object]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode("utf-8")


class SharedThrottle:
    """This replica's side of the shared throttle: ``announce`` (the guard's) and ``run`` (forever)."""

    def __init__(
        self,
        bus: Bus,
        subject: str,
        origin: str,
        guard: PasswordGuard,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bus = bus
        self._subject = subject
        self._origin = origin
        self._guard = guard
        self._window = guard.throttle.window
        self._most = guard.throttle.max_failures
        self._clock = clock
        self._ids = (f"{origin}.{secrets.token_hex(4)}.{n}" for n in itertools.count(1))
        self._own: OrderedDict[tuple[str, str], list[tuple[str, float]]] = OrderedDict()  # key -> (id, at)
        self._seen: OrderedDict[str, float] = OrderedDict()  # failure id heard -> when
        self._resending: asyncio.Task[None] | None = None

    async def announce(self, client: str, room_id: str, ok: bool) -> None:
        event: dict[str, object] = {"client": client, "room": room_id, "ok": ok, "origin": self._origin}
        key = (client, room_id)
        if ok:
            self._own.pop(key, None)
        else:
            failure_id = event["id"] = next(self._ids)
            event["age"] = 0.0
            own = self._own.setdefault(key, [])
            own.append((failure_id, self._clock()))
            del own[: -self._most]  # more than the limit never matters
            self._own.move_to_end(key)
            while len(self._own) > MAX_KEYS:
                self._own.popitem(last=False)
        await self._bus.publish(self._subject, _encode(event))

    async def run(self) -> None:
        """Forever: apply the other replicas' check results to this replica's throttle."""
        try:
            async with self._bus.subscribe(self._subject) as results:
                self._bus.on_ready_change(self._on_ready)
                async for message in results:
                    try:
                        event = json.loads(message.payload)
                        if event["origin"] != self._origin:
                            self._heard(event)
                    except (ValueError, KeyError, TypeError):
                        logger.warning("ignored a malformed password check result")
        finally:
            if self._resending is not None:  # stopping: a resend under way goes with it
                self._resending.cancel()

    def _heard(self, event: dict) -> None:
        if event.get("resync"):  # another replica is back on the bus: it missed what this one sent
            self._resend(ask=False)
            return
        client, room_id, ok = str(event["client"]), str(event["room"]), bool(event["ok"])
        if ok:
            self._guard.heard(client, room_id, True)
            return
        failure_id, age = event.get("id"), max(0.0, float(event.get("age", 0.0)))
        if failure_id is not None:  # (a replica of an older version sends none: counted as it comes)
            self._forget_seen()
            if str(failure_id) in self._seen:
                return
            self._seen[str(failure_id)] = self._clock() - age
            while len(self._seen) > MAX_SEEN:
                self._seen.popitem(last=False)
        self._guard.heard(client, room_id, False, age=age)

    def _forget_seen(self) -> None:
        cutoff = self._clock() - self._window
        while self._seen and next(iter(self._seen.values())) <= cutoff:
            self._seen.popitem(last=False)

    def _on_ready(self, ready: bool) -> None:
        if ready:  # (re)connected: what was published meanwhile, by this replica or to it, may be lost
            self._resend(ask=True)

    def _resend(self, *, ask: bool) -> None:
        if self._resending is not None and not self._resending.done():
            self._resending.cancel()
        self._resending = asyncio.get_running_loop().create_task(self._send_own(ask), name="throttle resync")

    async def _send_own(self, ask: bool) -> None:
        """This replica's failures still in the window, again (and, if ``ask``, a request for the others')."""
        now = self._clock()
        cutoff = now - self._window
        for key in [k for k, failures in self._own.items() if failures[-1][1] <= cutoff]:
            del self._own[key]  # out of the window: nothing to resend, ever
        with contextlib.suppress(Exception):  # the bus is away again: the next (re)connection resends
            if ask:
                await self._bus.publish(self._subject, _encode({"origin": self._origin, "resync": True}))
            for (client, room_id), failures in list(self._own.items()):
                for failure_id, at in failures:
                    if at > cutoff:
                        event = {"client": client, "room": room_id, "ok": False, "origin": self._origin}
                        event |= {"id": failure_id, "age": round(now - at, 3)}
                        await self._bus.publish(self._subject, _encode(event))

"""The census: when a replica opens a room it had no member in, the other live replicas' counts of it.

Every replica beats on ``<prefix>.presence.beat`` (the ``Roster``'s heartbeat calls ``beat``), so each
knows the others that are alive; ``query`` asks all of them for their count of one room and waits,
bounded by ``PRESENCE_QUERY_TIMEOUT``, until each has answered. A room's total is then right from its
first member's welcome instead of one presence interval later.
"""

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Callable

from realtime.bus import Bus, Subscription, safe_token

logger = logging.getLogger(__name__)

EXPIRY_INTERVALS = 1.5  # a replica silent this many presence intervals no longer counts


# (room id, replica, its local count of that room)
Heard = Callable[[str, str, int], None]


class Census:
    """The other live replicas, and a bounded round trip to all of them for one room's counts."""

    def __init__(
        self,
        bus: Bus,
        prefix: str,
        origin: str,
        *,
        interval: float,
        timeout: float,
        local_count: Callable[[str], int],
        heard: Heard,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bus = bus
        self.origin = origin
        self.beat_subject = f"{prefix}.presence.beat"
        self.query_subject = f"{prefix}.presence.query"
        self.reply_subject = f"{prefix}.presence.reply.{safe_token(origin)}"
        self._pattern = f"{prefix}.presence.*"
        self._expiry = EXPIRY_INTERVALS * interval
        self._timeout = timeout
        self._local_count = local_count
        self._heard = heard
        self._clock = clock
        self._peers: dict[str, float] = {}  # replica -> last heard
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[set[str], asyncio.Event]] = {}  # query id -> (still to answer, done)
        self._greeting: asyncio.Task[None] | None = None
        self.live = asyncio.Event()

    def peers(self) -> set[str]:
        cutoff = self._clock() - self._expiry
        return {o for o, at in self._peers.items() if at >= cutoff}

    def _saw(self, origin: str) -> None:
        if origin != self.origin:
            self._peers[origin] = self._clock()

    async def beat(self) -> None:
        with contextlib.suppress(Exception):  # not connected: the next beat tries again
            await self._bus.publish(self.beat_subject, json.dumps({"origin": self.origin}).encode())

    async def query(self, room_id: str) -> None:
        """Ask every live replica for its count of ``room_id``; returns once all answered or in time."""
        expected = self.peers()
        if not expected:
            return
        query_id = next(self._ids)
        done = asyncio.Event()
        self._pending[query_id] = (expected, done)
        event = {"origin": self.origin, "room": room_id, "id": query_id, "reply": self.reply_subject}
        try:
            await self._bus.publish(self.query_subject, json.dumps(event).encode())
            await asyncio.wait_for(done.wait(), self._timeout)
        except Exception as exc:  # no answer in time, or the bus is away: greet with what we know
            missing = sorted(self._pending.get(query_id, (set(), done))[0])
            logger.info("room %s: presence query unanswered by %s (%s)", room_id, missing, type(exc).__name__)
        finally:
            self._pending.pop(query_id, None)

    def _on_ready(self, ready: bool) -> None:
        # (Re)connected, subscriptions restored: beat now. A beat sent before the bus was up is lost,
        # and the others would not know this replica (nor it them) until its next periodic beat.
        if ready:
            self._greeting = asyncio.get_running_loop().create_task(self.beat(), name="presence greeting")

    async def run(self) -> None:
        """Forever: note heartbeats, answer the others' queries, collect answers to ours."""
        async with (
            self._bus.subscribe(self._pattern) as inbox,
            self._bus.subscribe(self.reply_subject) as replies,
        ):
            self._bus.on_ready_change(self._on_ready)
            self.live.set()
            await self.beat()  # the others answer with theirs: this replica knows them in one round trip
            async with asyncio.TaskGroup() as jobs:
                jobs.create_task(self._serve(inbox), name="presence queries")
                jobs.create_task(self._collect(replies), name="presence answers")

    async def _serve(self, inbox: Subscription) -> None:
        async for message in inbox:
            try:
                event = json.loads(message.payload)
                origin = str(event["origin"])
                new = origin != self.origin and origin not in self.peers()
                self._saw(origin)
                if new and message.subject == self.beat_subject:
                    await self.beat()  # a replica that just started: tell it about this one now
                if message.subject == self.query_subject and origin != self.origin:
                    room_id = str(event["room"])
                    answer = {"origin": self.origin, "room": room_id, "id": event["id"]}
                    answer["local"] = self._local_count(room_id)
                    with contextlib.suppress(Exception):
                        await self._bus.publish(str(event["reply"]), json.dumps(answer).encode())
            except (ValueError, KeyError, TypeError):
                logger.warning("ignored a malformed presence event")

    async def _collect(self, replies: Subscription) -> None:
        async for message in replies:
            try:
                event = json.loads(message.payload)
                origin, room_id, local = str(event["origin"]), str(event["room"]), int(event["local"])
                query_id = int(event["id"])
            except (ValueError, KeyError, TypeError):
                continue
            self._saw(origin)
            self._heard(room_id, origin, local)
            pending = self._pending.get(query_id)
            if pending is not None:
                pending[0].discard(origin)
                if not pending[0]:
                    pending[1].set()

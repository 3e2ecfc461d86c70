"""One ``/ws`` connection (``mux.py``): its memberships by room, its rates, and the four frames it answers
(``join``, ``leave``, ``send``, ``refresh``). A refused frame is an ``error`` and the connection goes on;
``STRIKES`` refusals in a row for going over a rate, or a frame that is not a JSON object of a known type,
close it (1008)."""

import json
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import WebSocket
from realtime.close_codes import CloseCode
from realtime.frames import text_frame
from realtime.hub import SLOW_CONSUMER
from realtime.transport import FrameWriter

from rooms_service import envelopes, mux_frames
from rooms_service.admission import JoinChecks
from rooms_service.counters import RelayMetrics
from rooms_service.inbound import next_text
from rooms_service.limits import TokenBucket
from rooms_service.membership import Membership
from rooms_service.refused import Refused
from rooms_service.rooms import NotAdmitted, Rooms
from rooms_service.settings import RoomsSettings
from rooms_service.tokens import Identity, InvalidToken, Lifetime

logger = logging.getLogger(__name__)

STRIKES = 10  # frames refused in a row for going over a rate: then the connection is closed (1008)


@dataclass(eq=False)
class Connection:
    """One ``/ws`` connection: what it was opened with, then its memberships and rates."""

    rooms: Rooms
    settings: RoomsSettings
    checks: JoinChecks  # who may join each room (admission.py)
    counts: RelayMetrics
    writer: FrameWriter
    client: str  # the client's address
    headers: Mapping[str, str]  # the handshake's, for the join hook
    token: str | None  # checked against each room at its join; replaced by a refresh
    identity: Identity | None
    name: str | None = None  # ``?name=`` without a token
    lifetime: Lifetime | None = None  # the token's expiry, for a connection with a token
    id: str = field(
        default_factory=lambda: secrets.token_hex(6)
    )  # the member id of each membership (``you``)
    members: dict[str, Membership] = field(default_factory=dict)
    strikes: int = 0
    joins: TokenBucket = field(init=False)
    messages: TokenBucket = field(init=False)

    def __post_init__(self) -> None:
        settings = self.settings
        self.joins = TokenBucket(settings.connection_join_rate, settings.connection_join_burst)
        self.messages = TokenBucket(settings.message_rate, settings.message_burst)

    async def run(self, websocket: WebSocket) -> None:
        """Answer frames one at a time, in order, until the client goes or abuses the connection."""
        handlers = {"join": self.join, "leave": self.leave, "send": self.send, "refresh": self.refresh}
        try:
            while True:
                text = await next_text(websocket, self.close, "text frames only")
                if text is None:
                    return
                try:
                    frame = json.loads(text)
                except ValueError:
                    self.close(CloseCode.POLICY_VIOLATION, "frames must be JSON")
                    return
                handler = handlers.get(frame.get("type")) if isinstance(frame, dict) else None
                if handler is None:
                    self.close(CloseCode.POLICY_VIOLATION, "unknown frame type")
                    return
                try:
                    await handler(frame)
                except Refused as refused:
                    self.tell(text_frame(mux_frames.error(frame, refused, self.settings.room_id_max_length)))
                    if self.strikes >= STRIKES:
                        self.close(CloseCode.POLICY_VIOLATION, "rate limit exceeded")
                        return
        finally:
            for member in list(self.members.values()):
                await self.rooms.leave(member)
            self.members.clear()

    # --- the four frames ------------------------------------------------------------------------
    async def join(self, frame: dict[str, Any]) -> None:
        room_id = mux_frames.room(frame, self.settings.room_id_max_length)
        resume = mux_frames.resume(frame, self.settings.room_history_max)
        password = frame.get("pass")
        if password is not None and not isinstance(password, str):
            raise Refused(CloseCode.POLICY_VIOLATION, "pass must be a string")
        if room_id in self.members:
            raise Refused(CloseCode.ALREADY_JOINED, "already joined")
        self._rate(self.joins, "joining too fast")
        if len(self.members) >= self.settings.max_rooms_per_connection:
            raise Refused(CloseCode.TOO_MANY, "too many rooms")
        admitted = await self.checks.admit(
            room_id,
            self.client,
            self.headers,
            token=self.token,
            password=password,
            name=self.name,
            where=" on /ws",
        )
        member = Membership(
            self.id,
            room_id,
            self.writer,
            True,
            user=admitted.user,
            name=admitted.name,
            ref=frame.get("ref"),
            multiplexed=True,
        )
        self.members[room_id] = member
        try:
            await self.rooms.join(member, resume)  # the welcome, the catch-up, then live
        except NotAdmitted as exc:  # NATS away or no history yet: nothing was joined
            del self.members[room_id]
            logger.warning("room %s: could not join on /ws (%s)", room_id, exc)
            raise Refused(CloseCode.TRY_AGAIN_LATER, "messaging unavailable") from exc
        except Exception as exc:  # the history went away between join and welcome
            del self.members[room_id]
            await self.rooms.leave(member)
            logger.warning("room %s: could not welcome on /ws (%s)", room_id, type(exc).__name__)
            raise Refused(CloseCode.TRY_AGAIN_LATER, "messaging unavailable") from exc

    async def leave(self, frame: dict[str, Any]) -> None:
        room_id = mux_frames.room(frame, self.settings.room_id_max_length)
        mux_frames.ref(frame)
        member = self.members.pop(room_id, None)
        if member is None:
            raise Refused(CloseCode.NOT_JOINED, "not joined")
        await self.rooms.leave(member)  # nothing of the room is written after this
        member.send(text_frame(mux_frames.left(frame, room_id)))

    async def send(self, frame: dict[str, Any]) -> None:
        msg_id = mux_frames.msg_id(frame)
        room_id = mux_frames.room(frame, self.settings.room_id_max_length)
        text = frame.get("text")
        if not isinstance(text, str):
            raise Refused(CloseCode.POLICY_VIOLATION, "text must be a string")
        member = self.members.get(room_id)
        if member is None:
            raise Refused(CloseCode.NOT_JOINED, "not joined")
        counts = self.counts
        try:
            self._rate(self.messages, "rate limit exceeded")
        except Refused:
            counts.rate_limited.inc()
            raise
        counts.received.value += 1
        started = time.perf_counter() if counts.on else 0.0
        hooks = self.checks.hooks
        if hooks.publishes:  # the app decides before anything is stored
            decision = await hooks.publish(room_id, member.user, member.name, text, msg_id)
            if not decision.allowed:  # an error with the send's id; 1013: it may send it again
                raise Refused(decision.code, decision.reason)
            if decision.text is not None:
                text = decision.text
        try:
            await self.rooms.send(
                member, text, msg_id
            )  # stored, then acked (with its room) when it has an id
        except Exception as exc:  # NATS away for longer than ROOM_STORE_TIMEOUT: the client resends
            logger.warning("room %s: could not store (%s)", room_id, type(exc).__name__)
            raise Refused(CloseCode.TRY_AGAIN_LATER, "messaging unavailable") from exc
        if counts.on:
            counts.publish_to_store.observe(time.perf_counter() - started)

    async def refresh(self, frame: dict[str, Any]) -> None:
        """``{"type":"refresh","token":T}``: a valid token for the same user (and every room joined)
        moves the connection's expiry on, answered ``refreshed``; else ``error`` 4001, the old expiry
        stands. Later joins are checked against the new token."""
        token = frame.get("token")
        lifetime = self.lifetime
        if lifetime is None or not isinstance(token, str):
            raise Refused(CloseCode.INVALID_TOKEN, "invalid token")
        try:
            exp = lifetime.refresh(token, self.members)
        except InvalidToken:
            raise Refused(CloseCode.INVALID_TOKEN, "invalid token") from None
        self.token, self.identity = token, lifetime.identity
        self.tell(text_frame(envelopes.refreshed(exp)))

    # --- answers --------------------------------------------------------------------------------
    def _rate(self, bucket: TokenBucket, reason: str) -> None:
        """Spend one of ``bucket``'s tokens, or refuse the frame (a strike: ``STRIKES`` in a row close)."""
        if bucket.take():
            self.strikes = 0
            return
        self.strikes += 1
        raise Refused(CloseCode.TOO_MANY, reason)

    def tell(self, frame: bytes) -> None:
        """A frame for this connection alone, under the slow-consumer rule of its rooms."""
        writer = self.writer
        if writer.write(frame) and writer.buffered > self.settings.send_buffer_limit:
            writer.close(
                CloseCode.TRY_AGAIN_LATER,
                SLOW_CONSUMER,
                abort_after=self.settings.slow_consumer_close_deadline,
            )

    def close(self, code: CloseCode, reason: str) -> None:
        self.writer.close(code, reason, abort_after=5.0)

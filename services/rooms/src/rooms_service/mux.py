"""One connection, many rooms: the multiplexed room protocol at ``GET /ws``.

A ``/ws`` connection carries one membership (``membership.py``) per room it joined, all writing through
the connection's one ``FrameWriter``; the engine (``rooms.py``) treats them exactly like the single
membership of a ``/ws/{room_id}`` connection: stored then delivered in seq order, acks deduplicated by
(room, id), resume by ``since``/``epoch``, presence counting both kinds of members, passwords and the
brute-force throttle. A room's message is encoded once per replica (its JSON hub) and written once to
each member connection; its frames already name their ``room``.

Frames, each one JSON text frame (``docs/howto/many-rooms.md``, ``docs/asyncapi.yaml``):

- client: ``join`` (room, ref, pass, since, epoch, history), ``leave`` (room, ref), ``send`` (room,
  text, id), ``refresh`` (token);
- server: ``welcome`` (with the join's ``ref``), ``message``, ``join``/``leave``/``members``, ``ack``
  (with ``room``), ``left`` (with the leave's ``ref``), ``refreshed`` (exp), and ``error`` (room, ref or
  id, code, reason).

The app's hooks (``hooks.py``, issue 21) apply as on ``/ws/{room_id}``: each join asks the join hook
after its password or token check (a deny is an ``error`` with the app's code for that join, a failure
one with 1013; an allow may give the member its ``user``/``name``), each send asks the publish hook
before it is stored (a deny or failure is an ``error`` with the send's id; an allow may replace the
text). A connection with a token is closed with 4002 ``token expired`` at the token's ``exp`` unless it
sent ``{"type":"refresh","token":T}`` first: a valid token for the same ``sub`` that may join every room
the connection is in, answered ``refreshed``; a bad one gets an ``error`` 4001 and the old expiry stands.

An ``error`` refuses one frame or one room and the connection goes on. The connection is closed (1008)
for abuse of the connection itself: a frame that is not JSON, not an object or of an unknown type, a
binary frame, or ``STRIKES`` frames in a row refused for going over a rate. Limits per connection:
``MAX_ROOMS_PER_CONNECTION``, ``CONNECTION_JOIN_RATE``/``CONNECTION_JOIN_BURST``, and the message rate
(``MESSAGE_RATE``/``MESSAGE_BURST``) across all its rooms; the slow-consumer rule (``SEND_BUFFER_LIMIT``)
is the connection's, since every hub measures the one writer.
"""

import functools
import json
import logging
import secrets
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, WebSocket
from realtime.close_codes import CloseCode
from realtime.frames import text_frame
from realtime.hub import SLOW_CONSUMER
from realtime.transport import FrameWriter, frame_writer

from rooms_service import envelopes
from rooms_service.guard import PasswordGuard, Verdict
from rooms_service.hooks import Hooks
from rooms_service.limits import TokenBucket
from rooms_service.membership import Membership, Resume
from rooms_service.room_ids import InvalidRoomId, validate_room_id
from rooms_service.rooms import NotAdmitted, Rooms
from rooms_service.settings import RoomsSettings
from rooms_service.tokens import Identity, InvalidToken, Lifetime, display_name

if TYPE_CHECKING:
    from rooms_service.app import _RelayMetrics

logger = logging.getLogger(__name__)

STRIKES = 10  # frames refused in a row for going over a rate: then the connection is closed (1008)
MAX_REF = 64  # characters of a string ``ref``
MAX_ID = 128  # characters of a message ``id`` (as on /ws/{room_id})


class Refused(Exception):
    """One frame refused: answered with an ``error`` frame, the connection goes on."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def add_route(
    app: FastAPI,
    settings: RoomsSettings,
    guard: PasswordGuard,
    counts: "_RelayMetrics",
    auth: tuple[Any, Any],
) -> None:
    """``GET /ws`` on ``app``; ``auth`` is (failures, throttled): the counters /ws/{room_id} counts on."""

    @app.websocket("/ws")
    async def multiplexed(websocket: WebSocket, token: str | None = None, name: str | None = None) -> None:
        identity: Identity | None = None
        shown_name = None
        if token is not None:  # checked once here, and against each room's name at its join
            try:
                identity = guard.tokens.verify(token)
            except InvalidToken:
                await _refuse(websocket, CloseCode.INVALID_TOKEN, "invalid token")
                return
        elif name is not None:
            if not settings.room_display_names:
                await _refuse(websocket, CloseCode.POLICY_VIOLATION, "display names need a token")
                return
            shown_name = display_name(name)
            if shown_name is None:
                await _refuse(websocket, CloseCode.POLICY_VIOLATION, "invalid name")
                return
        writer = frame_writer(websocket)
        if writer is None:
            raise RuntimeError("rooms needs the platform's WebSocket protocol (realtime.transport)")
        await websocket.accept()
        client = websocket.client.host if websocket.client else "unknown"
        connection = Connection(app.state.rooms, settings, guard, counts, writer, client, token, identity)
        connection.auth = auth
        connection.name = shown_name
        connection.hooks = app.state.hooks
        connection.headers = websocket.headers
        if identity is not None:  # closed with 4002 at its exp, unless it refreshes first
            expired = functools.partial(connection.close, CloseCode.TOKEN_EXPIRED, "token expired")
            connection.lifetime = Lifetime(
                guard.tokens, identity, None, expired, leeway=settings.token_leeway
            )
        try:
            await connection.run(websocket)
        finally:
            if connection.lifetime is not None:
                connection.lifetime.cancel()


async def _refuse(websocket: WebSocket, code: CloseCode, reason: str) -> None:
    await websocket.accept()
    await websocket.close(code, reason)


class Connection:
    """One ``/ws`` connection: its memberships by room, its rates, and the frames it answers."""

    def __init__(
        self,
        rooms: Rooms,
        settings: RoomsSettings,
        guard: PasswordGuard,
        counts: "_RelayMetrics",
        writer: FrameWriter,
        client: str,
        token: str | None,
        identity: Identity | None,
    ) -> None:
        self.id = secrets.token_hex(6)  # the member id of each of its memberships (``you``)
        self.rooms = rooms
        self.settings = settings
        self.guard = guard
        self.counts = counts
        self.writer = writer
        self.client = client
        self.token = token
        self.identity = identity
        self.name: str | None = None  # ``?name=`` without a token
        self.members: dict[str, Membership] = {}
        self.joins = TokenBucket(settings.connection_join_rate, settings.connection_join_burst)
        self.messages = TokenBucket(settings.message_rate, settings.message_burst)
        self.strikes = 0
        self.auth: tuple[Any, Any] = (None, None)  # counters: refused, throttled
        self.hooks: Hooks | None = None  # the app's join and publish hooks
        self.headers: Mapping[str, str] = {}  # the handshake's, for the join hook
        self.lifetime: Lifetime | None = None  # the token's expiry, for a connection with a token

    async def run(self, websocket: WebSocket) -> None:
        """Answer frames one at a time, in order, until the client goes or abuses the connection."""
        handlers = {"join": self.join, "leave": self.leave, "send": self.send, "refresh": self.refresh}
        try:
            while True:
                message: dict[str, Any] = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text")
                if text is None:
                    self.close(CloseCode.POLICY_VIOLATION, "text frames only")
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
                    self.refuse(frame, refused)
                    if self.strikes >= STRIKES:
                        self.close(CloseCode.POLICY_VIOLATION, "rate limit exceeded")
                        return
        finally:
            for member in list(self.members.values()):
                await self.rooms.leave(member)
            self.members.clear()

    # --- the four frames ------------------------------------------------------------------------
    async def join(self, frame: dict[str, Any]) -> None:
        room_id = _room(frame, self.settings)
        resume = _resume(frame, self.settings.room_history_max)
        password = frame.get("pass")
        if password is not None and not isinstance(password, str):
            raise Refused(CloseCode.POLICY_VIOLATION, "pass must be a string")
        if room_id in self.members:
            raise Refused(CloseCode.ALREADY_JOINED, "already joined")
        self._rate(self.joins, "joining too fast")
        if len(self.members) >= self.settings.max_rooms_per_connection:
            raise Refused(CloseCode.TOO_MANY, "too many rooms")
        identity = self.identity
        if self.token is not None:
            verdict, identity = await self.guard.check_token(room_id, self.client, self.token)
        else:
            verdict = await self.guard.check(room_id, self.client, password)
        if verdict != Verdict.ALLOWED:
            self.auth[verdict == Verdict.THROTTLED].inc()
            if verdict == Verdict.INVALID_TOKEN:
                raise Refused(CloseCode.INVALID_TOKEN, "invalid token")
            logger.warning("room %s: refused %s on /ws (%s password)", room_id, self.client, verdict)
            raise Refused(CloseCode.FORBIDDEN, "forbidden")
        user, name = (identity.user, identity.name) if identity is not None else (None, self.name)
        hooks = self.hooks
        if hooks is not None and hooks.joins:  # the app decides, after the password or token check
            decision = await hooks.join(room_id, user, name, self.client, self.headers)
            if not decision.allowed:  # the app's 4000-4999, or 1013 when it could not decide
                raise Refused(decision.code, decision.reason)
            if decision.user is not None or decision.name is not None:
                user, name = decision.user or user, decision.name or name
        member = Membership(
            self.id, room_id, self.writer, True, user=user, name=name, ref=frame.get("ref"), multiplexed=True
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
        room_id = _room(frame, self.settings)
        _ref(frame)
        member = self.members.pop(room_id, None)
        if member is None:
            raise Refused(CloseCode.NOT_JOINED, "not joined")
        await self.rooms.leave(member)  # nothing of the room is written after this
        left: dict[str, Any] = {"type": "left", "room": room_id}
        if "ref" in frame:
            left["ref"] = frame["ref"]
        member.send(text_frame(_encode(left)))

    async def send(self, frame: dict[str, Any]) -> None:
        msg_id = frame.get("id")
        if msg_id is not None and not (
            isinstance(msg_id, str) and 0 < len(msg_id) <= MAX_ID and msg_id.isprintable()
        ):
            raise Refused(
                CloseCode.POLICY_VIOLATION, "id must be a printable string of at most 128 characters"
            )
        room_id = _room(frame, self.settings)
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
        hooks = self.hooks
        if hooks is not None and hooks.publishes:  # the app decides before anything is stored
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

    def refuse(self, frame: dict[str, Any], refused: Refused) -> None:
        """The ``error`` frame answering ``frame``: its room, ref or id when it had them (and valid)."""
        error: dict[str, Any] = {"type": "error"}
        room = frame.get("room")
        if isinstance(room, str) and len(room) <= self.settings.room_id_max_length:
            error["room"] = room
        ref = frame.get("ref")
        if frame.get("type") in ("join", "leave") and _valid_ref(ref):
            error["ref"] = ref
        msg_id = frame.get("id")
        if frame.get("type") == "send" and isinstance(msg_id, str) and len(msg_id) <= MAX_ID:
            error["id"] = msg_id
        error["code"], error["reason"] = int(refused.code), refused.reason
        self.tell(text_frame(_encode(error)))

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


# --- reading frames -----------------------------------------------------------------------------
def _room(frame: dict[str, Any], settings: RoomsSettings) -> str:
    room_id = frame.get("room")
    if not isinstance(room_id, str):
        raise Refused(CloseCode.POLICY_VIOLATION, "invalid room id")
    try:
        validate_room_id(room_id, settings.room_id_max_length)
    except InvalidRoomId:
        raise Refused(CloseCode.POLICY_VIOLATION, "invalid room id") from None
    return room_id


def _valid_ref(ref: object) -> bool:
    if isinstance(ref, bool):
        return False
    if isinstance(ref, int):
        return abs(ref) < 2**53
    return isinstance(ref, str) and len(ref) <= MAX_REF


def _ref(frame: dict[str, Any]) -> None:
    if "ref" in frame and not _valid_ref(frame["ref"]):
        raise Refused(
            CloseCode.POLICY_VIOLATION, f"ref must be a string of at most {MAX_REF} characters or an integer"
        )


def _count(frame: dict[str, Any], key: str, digits: int) -> int | None:
    value = frame.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 10**digits:
        raise Refused(CloseCode.POLICY_VIOLATION, f"{key} must be a non-negative integer")
    return value


def _resume(frame: dict[str, Any], most: int) -> Resume:
    """A join's ``since``/``epoch``/``history``, checked as ``/ws/{room_id}`` checks its query."""
    _ref(frame)
    since = _count(frame, "since", 20)
    history = _count(frame, "history", 9)
    epoch = frame.get("epoch")
    if epoch is not None and not (isinstance(epoch, str) and len(epoch) <= 64):
        raise Refused(CloseCode.POLICY_VIOLATION, "epoch must be a string of at most 64 characters")
    return Resume(since=since, epoch=epoch, history=min(history, most) if history is not None else 0)


def _encode(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)

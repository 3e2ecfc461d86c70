"""``GET /ws/{room_id}``: one room per connection, and the member's session on it.

The order inside a connection is the contract: room id, format, name and password or identity token are
decided before the client joins or receives anything, and a refusal is accepted first so it is a close
code the client can see (4003 "forbidden", 4001 "invalid token", 1008 "invalid room id"), never an HTTP
403. A member then joins (its replica's subscription confirmed live over the bus), and only then is its
handshake accepted; a JSON member is then welcomed and caught up (``since``/``epoch``, ``history``) before
it hears the live stream. Who may join is decided as for a join on ``/ws`` (``admission.py``).
"""

import functools
import logging
import secrets
import time
from typing import Annotated

from fastapi import FastAPI, Query, WebSocket
from realtime.close_codes import CloseCode
from realtime.frames import text_frame
from realtime.transport import frame_writer

from rooms_service import envelopes
from rooms_service.admission import Busy, JoinChecks, waited_since
from rooms_service.counters import RelayMetrics
from rooms_service.hooks import Decision, Hooks
from rooms_service.inbound import next_text
from rooms_service.limits import TokenBucket
from rooms_service.membership import Membership, Resume
from rooms_service.refused import Refused, close_refused
from rooms_service.room_ids import InvalidRoomId, validate_room_id
from rooms_service.rooms import NotAdmitted, Rooms
from rooms_service.settings import RoomsSettings
from rooms_service.tokens import Identity, InvalidToken, Lifetime, TokenVerifier

logger = logging.getLogger(__name__)

FORMATS = ("text", "json")


def add_routes(app: FastAPI, settings: RoomsSettings, checks: JoinChecks, counts: RelayMetrics) -> None:
    """``GET /ws/{room_id}`` on ``app``, and a 1008 for any other path below ``/ws/``."""

    @app.websocket("/ws/{room_id}")
    async def room_socket(
        websocket: WebSocket,
        room_id: str,
        password: Annotated[str | None, Query(alias="pass")] = None,
        token: str | None = None,
        name: str | None = None,
        wire_format: Annotated[str, Query(alias="format")] = "text",
        since: str | None = None,
        epoch: str | None = None,
        history: str | None = None,
    ) -> None:
        try:
            validate_room_id(room_id, settings.room_id_max_length)
        except InvalidRoomId:
            await close_refused(websocket, CloseCode.POLICY_VIOLATION, "invalid room id")
            return
        if wire_format not in FORMATS:
            await close_refused(websocket, CloseCode.POLICY_VIOLATION, "format must be text or json")
            return
        try:
            resume = _resume(wire_format == "json", since, epoch, history, settings.room_history_max)
        except ValueError as exc:
            await close_refused(websocket, CloseCode.POLICY_VIOLATION, str(exc))
            return
        client = websocket.client.host if websocket.client else "unknown"
        try:
            shown_name = checks.shown_name(name, token)
            admitted = await checks.admit(
                room_id, client, websocket.headers, token=token, password=password, name=shown_name
            )
        except Refused as refused:
            await close_refused(websocket, refused.code, refused.reason)
            return
        await _session(
            app.state.rooms,
            settings,
            websocket,
            room_id,
            wire_format == "json",
            resume,
            counts,
            (admitted.user, admitted.name),
            checks.hooks,
            (checks.guard.tokens, admitted.identity),
        )

    @app.websocket("/ws/{rest:path}")
    async def not_a_room(websocket: WebSocket, rest: str) -> None:
        """``/ws/a/b`` (or an encoded '/'): not a room id; say so with a code the client can see."""
        await close_refused(websocket, CloseCode.POLICY_VIOLATION, "invalid room id")


def _resume(json: bool, since: str | None, epoch: str | None, history: str | None, most: int) -> Resume:
    """``since``/``epoch``/``history`` (JSON format only), checked before anything is joined."""
    if not json:
        if since is not None or history is not None:
            raise ValueError("since and history need format=json")
        return Resume()
    if since is not None and not (since.isdigit() and len(since) <= 20):
        raise ValueError("since must be a message seq")
    if history is not None and not (history.isdigit() and len(history) <= 9):
        raise ValueError("history must be a count")
    if epoch is not None and len(epoch) > 64:
        raise ValueError("epoch too long")
    return Resume(
        since=int(since) if since is not None else None,
        epoch=epoch,
        history=min(int(history), most) if history is not None else 0,
    )


async def _session(
    rooms: Rooms,
    settings: RoomsSettings,
    websocket: WebSocket,
    room_id: str,
    json: bool,
    resume: Resume,
    counts: RelayMetrics,
    who: tuple[str | None, str | None],
    hooks: Hooks,
    token: tuple[TokenVerifier, Identity | None],
) -> None:
    """Join first (the member hears the room from the moment its handshake completes), then accept."""
    writer = frame_writer(websocket)
    if writer is None:
        raise RuntimeError("rooms needs the platform's WebSocket protocol (realtime.transport)")
    member = Membership(secrets.token_hex(6), room_id, writer, json, user=who[0], name=who[1])
    lifetime: Lifetime | None = None
    try:
        try:
            waited = waited_since(websocket.headers.get("x-request-start"))
            async with websocket.app.state.admission.turn(waited):
                await rooms.join(member, resume, accept=websocket.accept)
        except Busy:  # too many joins at once here: the client backs off and comes back
            await close_refused(websocket, CloseCode.TRY_AGAIN_LATER, "server busy")
            return
        except NotAdmitted as exc:  # never connected to NATS, its reconnect buffer is full, or no history
            logger.warning("room %s: could not join (%s)", room_id, exc)
            await close_refused(websocket, CloseCode.TRY_AGAIN_LATER, "messaging unavailable")
            return
        except Exception as exc:  # the history went away between join and welcome
            logger.warning("room %s: could not welcome (%s)", room_id, type(exc).__name__)
            _close(member, CloseCode.TRY_AGAIN_LATER, "messaging unavailable")
            return
        verifier, identity = token
        if identity is not None:  # closed with 4002 at its exp, unless it refreshes first
            expired = functools.partial(_close, member, CloseCode.TOKEN_EXPIRED, "token expired")
            lifetime = Lifetime(verifier, identity, room_id, expired, leeway=settings.token_leeway)
        bucket = TokenBucket(settings.message_rate, settings.message_burst)
        await _relay(rooms, websocket, member, bucket, counts, hooks, lifetime)
    finally:
        if lifetime is not None:
            lifetime.cancel()
        await rooms.leave(member)


async def _relay(
    rooms: Rooms,
    websocket: WebSocket,
    member: Membership,
    bucket: TokenBucket,
    counts: RelayMetrics,
    hooks: Hooks,
    lifetime: Lifetime | None = None,
) -> None:
    """Store what the member says until it leaves or breaks a limit (size is uvicorn's: 1009); a JSON
    member that gave an id is acknowledged with the stored seq once it is stored."""
    close = functools.partial(_close, member)
    while True:
        text = await next_text(websocket, close, "text messages only")
        if text is None:
            return
        if not bucket.take():
            counts.rate_limited.inc()
            _close(member, CloseCode.POLICY_VIOLATION, "rate limit exceeded")
            return
        counts.received.value += 1
        started = time.perf_counter() if counts.on else 0.0
        msg_id = None
        if member.json:
            refresh = envelopes.parse_refresh(text)
            if refresh is not None:
                _refresh(member, lifetime, refresh)
                continue
            try:
                text, msg_id = envelopes.parse_send(text)
            except ValueError:
                _close(member, CloseCode.POLICY_VIOLATION, "invalid message id")
                return
        if hooks.publishes:  # the app decides before anything is stored
            decision = await hooks.publish(member.room_id, member.user, member.name, text, msg_id)
            if not decision.allowed:
                if not _not_stored(member, msg_id, decision):
                    return
                continue
            if decision.text is not None:
                text = decision.text
        try:
            await rooms.send(member, text, msg_id)  # stored, then acked when it has an id
        except Exception as exc:  # NATS away for longer than ROOM_STORE_TIMEOUT
            logger.warning("room %s: could not store (%s)", member.room_id, type(exc).__name__)
            _close(member, CloseCode.TRY_AGAIN_LATER, "messaging unavailable")
            return
        if counts.on:
            counts.publish_to_store.observe(time.perf_counter() - started)


def _refresh(member: Membership, lifetime: Lifetime | None, token: str) -> None:
    """``{"type":"refresh","token":T}``: a valid token for the same user moves the expiry on
    (``refreshed`` with the new ``exp``); anything else is an ``error`` 4001 and the old expiry stands."""
    try:
        if lifetime is None:
            raise InvalidToken("NoTokenToRefresh")
        exp = lifetime.refresh(token)
    except InvalidToken:
        member.send(text_frame(envelopes.error(None, CloseCode.INVALID_TOKEN, "invalid token")))
        return
    member.send(text_frame(envelopes.refreshed(exp)))


def _not_stored(member: Membership, msg_id: str | None, decision: Decision) -> bool:
    """A message the publish hook refused (or could not decide on): a JSON member hears ``error`` and stays;
    a plain one cannot be told, so a denied message is dropped and a failed hook closes it (1013)."""
    if member.json:
        member.send(text_frame(envelopes.error(msg_id, decision.code, decision.reason)))
        return True
    if decision.failed:
        _close(member, CloseCode.TRY_AGAIN_LATER, decision.reason)
        return False
    return True


def _close(member: Membership, code: CloseCode, reason: str) -> None:
    # The FrameWriter closes behind what is queued, without waiting for the client to read it.
    member.writer.close(code, reason, abort_after=5.0)

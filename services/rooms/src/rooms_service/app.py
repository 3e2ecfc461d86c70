"""Rooms service: chat rooms at ``/ws/{room_id}``, shared by every replica over the bus.

Reads top to bottom: the app factory and its lifespan, the WebSocket route, then the member's session.
The order inside a connection is the contract: room id, format and password are decided before the
client joins or receives anything, and a refusal is accepted first so it is a close code the client can
see (4003 "forbidden", 1008 "invalid room id"), never an HTTP 403. A member then joins (its replica's
subscription confirmed live over the bus), and only then is its handshake accepted.
"""

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import FastAPI, Query, WebSocket
from realtime.app import create_service_app
from realtime.close_codes import CloseCode
from realtime.serve import frame_writer

from rooms_service.fanout import Member, Room, Rooms
from rooms_service.guard import FailureThrottle, PasswordGuard, Verdict
from rooms_service.limits import TokenBucket
from rooms_service.room_ids import InvalidRoomId, validate_room_id
from rooms_service.settings import RoomsSettings
from rooms_service.throttle_sync import announcer, apply_others, results_subject

logger = logging.getLogger(__name__)

FORMATS = ("text", "json")


def create_app(settings: RoomsSettings | None = None) -> FastAPI:
    settings = settings or RoomsSettings()
    throttle = FailureThrottle(settings.auth_max_failures, settings.auth_failure_window)
    passwords = settings.passwords()
    for room_id in passwords:  # a typo in a guarded room's id must not leave the real room open silently
        validate_room_id(room_id, settings.room_id_max_length)
    guard = PasswordGuard(passwords, throttle)  # a malformed hash fails here, at start

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        bus, origin = app.state.bus, settings.instance_id
        rooms = Rooms(bus, settings)
        app.state.rooms = rooms
        results = results_subject(settings.subject_prefix)
        guard.announce = announcer(bus, results, origin)
        tasks = [
            asyncio.create_task(rooms.heartbeat(), name="presence heartbeat"),
            asyncio.create_task(apply_others(bus, results, origin, guard), name="shared throttle"),
        ]
        try:
            yield
        finally:
            for task in reversed(tasks):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            guard.announce = None
            await rooms.close()

    app = create_service_app(settings, lifespan=lifespan)
    app.state.guard = guard

    @app.get("/rooms", include_in_schema=False)
    async def room_stats() -> dict[str, int]:
        """Counts only (rooms, NATS subscriptions, local members, slow consumers cut off)."""
        return app.state.rooms.stats()

    @app.websocket("/ws/{room_id}")
    async def room_socket(
        websocket: WebSocket,
        room_id: str,
        password: Annotated[str | None, Query(alias="pass")] = None,
        wire_format: Annotated[str, Query(alias="format")] = "text",
    ) -> None:
        try:
            validate_room_id(room_id, settings.room_id_max_length)
        except InvalidRoomId:
            await _refuse(websocket, CloseCode.POLICY_VIOLATION, "invalid room id")
            return
        if wire_format not in FORMATS:
            await _refuse(websocket, CloseCode.POLICY_VIOLATION, "format must be text or json")
            return
        client = websocket.client.host if websocket.client else "unknown"
        verdict = await guard.check(room_id, client, password)
        if verdict != Verdict.ALLOWED:
            logger.warning("room %s: refused %s (%s password)", room_id, client, verdict)
            await _refuse(websocket, CloseCode.FORBIDDEN, "forbidden")
            return
        await _session(app.state.rooms, settings, websocket, room_id, wire_format == "json")

    @app.websocket("/ws/{rest:path}")
    async def not_a_room(websocket: WebSocket, rest: str) -> None:
        """``/ws/a/b`` (or an encoded '/'): not a room id; say so with a code the client can see."""
        await _refuse(websocket, CloseCode.POLICY_VIOLATION, "invalid room id")

    return app


async def _refuse(websocket: WebSocket, code: CloseCode, reason: str) -> None:
    await websocket.accept()
    await websocket.close(code, reason)


async def _session(
    rooms: Rooms, settings: RoomsSettings, websocket: WebSocket, room_id: str, json: bool
) -> None:
    """Join first (the member hears the room from the moment its handshake completes), then accept."""
    member = Member(secrets.token_hex(6), websocket, frame_writer(websocket), json)
    try:
        room = await rooms.join(room_id, member)
    except Exception as exc:  # never connected to NATS, or its reconnect buffer is full
        logger.warning("room %s: could not join (%s)", room_id, type(exc).__name__)
        await _refuse(websocket, CloseCode.TRY_AGAIN_LATER, "messaging unavailable")
        return
    try:
        await websocket.accept()
        await rooms.greet(room, member)
        await _relay(rooms, room, member, TokenBucket(settings.message_rate, settings.message_burst))
    finally:
        await rooms.leave(room, member)


async def _relay(rooms: Rooms, room: Room, member: Member, bucket: TokenBucket) -> None:
    """Publish what the member says until it leaves or breaks a limit (size is uvicorn's: 1009)."""
    while True:
        message: dict[str, Any] = await member.websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None:
            await _close(member, CloseCode.POLICY_VIOLATION, "text messages only")
            return
        if not bucket.take():
            await _close(member, CloseCode.POLICY_VIOLATION, "rate limit exceeded")
            return
        try:
            await rooms.say(room, member, text)
        except Exception as exc:  # never connected, or NATS gone so long that nats-py's buffer is full
            logger.warning("room %s: could not publish (%s)", room.id, type(exc).__name__)
            await _close(member, CloseCode.TRY_AGAIN_LATER, "messaging unavailable")
            return


async def _close(member: Member, code: CloseCode, reason: str) -> None:
    # The FrameWriter closes without waiting for the client to drain its backlog (it may never read).
    if member.writer is not None:
        member.writer.close(code, reason)
    else:
        with contextlib.suppress(Exception):
            await member.websocket.close(code, reason)

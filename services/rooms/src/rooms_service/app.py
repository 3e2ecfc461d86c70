"""Rooms service: chat rooms at ``/ws/{room_id}``, shared by every replica over the bus.

Reads top to bottom: the app factory and its lifespan, the WebSocket route, then the member's session.
The order inside a connection is the contract: room id, format, name and password or identity token are
decided before the client joins or receives anything, and a refusal is accepted first so it is a close
code the client can see (4003 "forbidden", 4001 "invalid token", 1008 "invalid room id"), never an HTTP
403. A member then joins (its replica's
subscription confirmed live over the bus), and only then is its handshake accepted; a JSON member is
then welcomed and caught up (``since``/``epoch``, ``history``) before it hears the live stream.
"""

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import FastAPI, Query, WebSocket
from realtime import metrics
from realtime.app import create_service_app
from realtime.close_codes import CloseCode
from realtime.frames import text_frame
from realtime.operator import operator_route
from realtime.tasks import cancel_and_wait
from realtime.transport import frame_writer

from rooms_service import api, envelopes, mux, server_api
from rooms_service.admission import Admission, Busy, waited_since
from rooms_service.control import Control
from rooms_service.guard import FailureThrottle, PasswordGuard, Verdict
from rooms_service.hooks import Decision, Hooks
from rooms_service.limits import TokenBucket
from rooms_service.membership import Membership, Resume
from rooms_service.room_ids import InvalidRoomId, validate_room_id
from rooms_service.rooms import NotAdmitted, Rooms
from rooms_service.settings import RoomsSettings
from rooms_service.signing import Signer
from rooms_service.throttle_sync import SharedThrottle, results_subject
from rooms_service.tokens import Identity, InvalidToken, Lifetime, TokenVerifier, display_name
from rooms_service.webhooks import Webhooks, event_types

logger = logging.getLogger(__name__)

FORMATS = ("text", "json")


def create_app(settings: RoomsSettings | None = None) -> FastAPI:
    settings = settings or RoomsSettings()
    throttle = FailureThrottle(settings.auth_max_failures, settings.auth_failure_window)
    passwords = settings.passwords()
    for room_id in passwords:  # a typo in a guarded room's id must not leave the real room open silently
        validate_room_id(room_id, settings.room_id_max_length)
    tokens = TokenVerifier(  # a short secret or a bad PEM fails here, at start
        settings.token_secret.get_secret_value() if settings.token_secret else None,
        settings.public_key(),
        audience=settings.token_audience,
        issuer=settings.token_issuer,
        leeway=settings.token_leeway,
    )
    guard = PasswordGuard(passwords, throttle, tokens=tokens)  # a malformed hash fails here, at start
    if settings.events_webhook_url:  # unknown event types or a malformed secret fail here, at start
        event_types(settings.events_webhook_types)
        Signer(settings.events_webhook_secret.get_secret_value() if settings.events_webhook_secret else None)
    hooks = Hooks(settings)  # a malformed HOOK_SECRET fails here, at start

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        bus, origin = app.state.bus, settings.instance_id
        rooms = Rooms(bus, settings)
        app.state.rooms = rooms
        shared = SharedThrottle(bus, results_subject(settings.subject_prefix), origin, guard)
        guard.announce = shared.announce
        control = Control(
            bus,
            settings.subject_prefix,
            origin,
            peers=rooms.census.peers,
            handlers=server_api.handlers(rooms),
        )
        app.state.control = control  # the server API's questions to every replica
        tasks = [
            asyncio.create_task(rooms.keep_history(), name="room history"),
            asyncio.create_task(rooms.census.run(), name="presence census"),
            asyncio.create_task(rooms.heartbeat(), name="presence heartbeat"),
            asyncio.create_task(rooms.events.run(), name="room events"),
            asyncio.create_task(shared.run(), name="shared throttle"),
            asyncio.create_task(control.run(), name="server API"),
        ]
        if settings.events_webhook_url:  # events.py, webhooks.py: the app's webhook
            tasks.append(asyncio.create_task(Webhooks(rooms.events, settings).run(), name="webhooks"))
        app.state.readiness["history"] = lambda: rooms.history_ready
        await hooks.start()
        try:
            yield
        finally:
            for task in reversed(tasks):
                await cancel_and_wait(task)
            guard.announce = None
            await rooms.close()
            await hooks.close()

    app = create_service_app(settings, lifespan=lifespan)
    app.include_router(api.create_router(settings))  # POST/GET /api/rooms/{room_id}/messages
    app.state.guard = guard
    app.state.admission = Admission(settings.room_joins_in_flight, settings.room_join_wait)
    app.state.hooks = hooks  # join(room, user, name, address, headers) for every kind of join
    on, service = settings.metrics, settings.service_name
    auth_failures = metrics.child(metrics.AUTH_FAILURES, on, service=service)
    auth_throttled = metrics.child(metrics.AUTH_THROTTLED, on, service=service)
    counts = _RelayMetrics(
        metrics.tally(metrics.MESSAGES_RECEIVED, on, service=service),
        metrics.child(metrics.RATE_LIMITED, on, service=service),
        metrics.child(metrics.PUBLISH_TO_STORE, on, service=service),
        on,
    )

    mux.add_route(app, settings, guard, counts, (auth_failures, auth_throttled))  # GET /ws: many rooms

    @operator_route(app, "/rooms")
    async def room_stats() -> dict[str, int]:
        """Counts only (rooms, NATS subscriptions, local members, slow consumers cut off, clients that
        reached the password throttle); on the internal port only (realtime.operator)."""
        return app.state.rooms.stats() | {"clients_throttled": guard.throttle.reached}

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
            await _refuse(websocket, CloseCode.POLICY_VIOLATION, "invalid room id")
            return
        if wire_format not in FORMATS:
            await _refuse(websocket, CloseCode.POLICY_VIOLATION, "format must be text or json")
            return
        try:
            resume = _resume(wire_format == "json", since, epoch, history, settings.room_history_max)
        except ValueError as exc:
            await _refuse(websocket, CloseCode.POLICY_VIOLATION, str(exc))
            return
        shown_name = None
        if name is not None and token is None:  # a token member's name is the token's
            if not settings.room_display_names:
                await _refuse(websocket, CloseCode.POLICY_VIOLATION, "display names need a token")
                return
            shown_name = display_name(name)
            if shown_name is None:
                await _refuse(websocket, CloseCode.POLICY_VIOLATION, "invalid name")
                return
        client = websocket.client.host if websocket.client else "unknown"
        identity: Identity | None = None
        if token is not None:
            verdict, identity = await guard.check_token(room_id, client, token)
        else:
            verdict = await guard.check(room_id, client, password)
        if verdict != Verdict.ALLOWED:
            (auth_throttled if verdict == Verdict.THROTTLED else auth_failures).inc()
            if verdict == Verdict.INVALID_TOKEN:
                await _refuse(websocket, CloseCode.INVALID_TOKEN, "invalid token")
                return
            logger.warning("room %s: refused %s (%s password)", room_id, client, verdict)
            await _refuse(websocket, CloseCode.FORBIDDEN, "forbidden")
            return
        who = (identity.user, identity.name) if identity is not None else (None, shown_name)
        if hooks.joins:  # the app decides, after the password or token check
            decision = await hooks.join(room_id, *who, client, websocket.headers)
            if not decision.allowed:
                await _refuse(websocket, decision.code, decision.reason)
                return
            if decision.user is not None or decision.name is not None:
                who = (decision.user or who[0], decision.name or who[1])
        await _session(
            app.state.rooms,
            settings,
            websocket,
            room_id,
            wire_format == "json",
            resume,
            counts,
            who,
            hooks,
            (tokens, identity),
        )

    @app.websocket("/ws/{rest:path}")
    async def not_a_room(websocket: WebSocket, rest: str) -> None:
        """``/ws/a/b`` (or an encoded '/'): not a room id; say so with a code the client can see."""
        await _refuse(websocket, CloseCode.POLICY_VIOLATION, "invalid room id")

    return app


async def _refuse(websocket: WebSocket, code: int, reason: str) -> None:
    await websocket.accept()
    await websocket.close(code, reason)


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


@dataclass(frozen=True, slots=True)
class _RelayMetrics:
    """What a member's messages count on, resolved once per app (never a label lookup per message)."""

    received: metrics.Tally
    rate_limited: Any
    publish_to_store: Any
    on: bool


async def _session(
    rooms: Rooms,
    settings: RoomsSettings,
    websocket: WebSocket,
    room_id: str,
    json: bool,
    resume: Resume,
    counts: _RelayMetrics,
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
            await _refuse(websocket, CloseCode.TRY_AGAIN_LATER, "server busy")
            return
        except NotAdmitted as exc:  # never connected to NATS, its reconnect buffer is full, or no history
            logger.warning("room %s: could not join (%s)", room_id, exc)
            await _refuse(websocket, CloseCode.TRY_AGAIN_LATER, "messaging unavailable")
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
    counts: _RelayMetrics,
    hooks: Hooks,
    lifetime: Lifetime | None = None,
) -> None:
    """Store what the member says until it leaves or breaks a limit (size is uvicorn's: 1009); a JSON
    member that gave an id is acknowledged with the stored seq once it is stored."""
    while True:
        message: dict[str, Any] = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None:
            _close(member, CloseCode.POLICY_VIOLATION, "text messages only")
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

"""Rooms service: chat rooms shared by every replica over the bus. The app factory and its lifespan;
the endpoints are ``room_socket.py`` (``/ws/{room_id}``: one room per connection), ``mux.py`` (``/ws``:
many rooms on one connection) and ``api.py`` (the HTTP API), each admitting joins through
``admission.py``.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from realtime.app import create_service_app
from realtime.operator import operator_route
from realtime.tasks import cancel_and_wait

from rooms_service import api, mux, room_socket, server_api
from rooms_service.admission import Admission, JoinChecks
from rooms_service.control import Control
from rooms_service.counters import auth_metrics, relay_metrics
from rooms_service.guard import FailureThrottle, PasswordGuard
from rooms_service.hooks import Hooks
from rooms_service.room_ids import validate_room_id
from rooms_service.rooms import Rooms
from rooms_service.settings import RoomsSettings
from rooms_service.signing import Signer
from rooms_service.throttle_sync import SharedThrottle, results_subject
from rooms_service.tokens import TokenVerifier
from rooms_service.webhooks import Webhooks, event_types


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
        secret = settings.events_webhook_secret
        Signer(secret.get_secret_value() if secret else None, "EVENTS_WEBHOOK_SECRET")
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
    checks = JoinChecks(guard, hooks, auth_metrics(settings), settings.room_display_names)
    counts = relay_metrics(settings)
    mux.add_route(app, settings, checks, counts)  # GET /ws: many rooms
    room_socket.add_routes(app, settings, checks, counts)  # GET /ws/{room_id}: one room

    @operator_route(app, "/rooms")
    async def room_stats() -> dict[str, int]:
        """Counts only (rooms, NATS subscriptions, local members, slow consumers cut off, clients that
        reached the password throttle); on the internal port only (realtime.operator)."""
        return app.state.rooms.stats() | {"clients_throttled": guard.throttle.reached}

    return app

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

Here: the route, which checks the token and the name once per connection; the connection and its frames
are ``mux_connection.py`` (reading and writing them: ``mux_frames.py``); each join is admitted as on
``/ws/{room_id}`` (``admission.py``).
"""

import functools

from fastapi import FastAPI, WebSocket
from realtime.close_codes import CloseCode
from realtime.transport import frame_writer

from rooms_service.admission import JoinChecks
from rooms_service.counters import RelayMetrics
from rooms_service.mux_connection import Connection
from rooms_service.refused import Refused, close_refused
from rooms_service.settings import RoomsSettings
from rooms_service.tokens import Identity, InvalidToken, Lifetime


def add_route(app: FastAPI, settings: RoomsSettings, checks: JoinChecks, counts: RelayMetrics) -> None:
    """``GET /ws`` on ``app``: its joins are admitted by ``checks``, its messages counted on ``counts``, as
    on /ws/{room_id}."""

    @app.websocket("/ws")
    async def multiplexed(websocket: WebSocket, token: str | None = None, name: str | None = None) -> None:
        identity: Identity | None = None
        if token is not None:  # checked once here, and against each room's name at its join
            try:
                identity = checks.guard.tokens.verify(token)
            except InvalidToken:
                await close_refused(websocket, CloseCode.INVALID_TOKEN, "invalid token")
                return
        try:
            shown_name = checks.shown_name(name, token)
        except Refused as refused:
            await close_refused(websocket, refused.code, refused.reason)
            return
        writer = frame_writer(websocket)
        if writer is None:
            raise RuntimeError("rooms needs the platform's WebSocket protocol (realtime.transport)")
        await websocket.accept()
        client = websocket.client.host if websocket.client else "unknown"
        connection = Connection(
            app.state.rooms, settings, checks, counts, writer, client, websocket.headers, token, identity
        )
        connection.name = shown_name
        if identity is not None:  # closed with 4002 at its exp, unless it refreshes first
            expired = functools.partial(connection.close, CloseCode.TOKEN_EXPIRED, "token expired")
            connection.lifetime = Lifetime(
                checks.guard.tokens, identity, None, expired, leeway=settings.token_leeway
            )
        try:
            await connection.run(websocket)
        finally:
            if connection.lifetime is not None:
                connection.lifetime.cancel()

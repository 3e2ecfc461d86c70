"""The server API: what an app's backend does to rooms and users across every replica (Centrifugo's
server API, built in). The same keys, rate rules and refusals as the publish API (api.py), through the
gateway, in the OpenAPI at ``/docs``:

- ``GET /api/rooms``: rooms with members now, each with its member count across every replica (paged
  by room id: ``cursor`` = the last page's ``next``);
- ``GET /api/rooms/{room_id}/presence``: its members across every replica (member id, user, name);
- ``POST /api/users/{user}/disconnect``: every connection of that user (token or join hook ``user``) on
  every replica is closed with 4010 ``disconnected by the server`` (final: clients do not come back),
  and a ``disconnected`` room event is recorded for each of its memberships (events.py);
- ``DELETE /api/rooms/{room_id}/messages``: the room's stored history removed (a member resuming from
  before then gets ``recovered: false``);
- ``POST /api/broadcast``: one message stored in (and delivered to) up to 100 rooms, each with its seq;
  a resend with the same ``id`` stores nothing twice. Like Centrifugo's, server API calls are the app
  itself speaking: ``broadcast`` does not go through the publish hook (a single-room publish does,
  unless PUBLISH_HOOK_API=false).

The questions to every replica go over the bus (control.py); an answer says ``complete: false`` when a
live replica did not answer within a second. Nothing here logs a user, a reason or a text.
"""

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from realtime.close_codes import CloseCode

from rooms_service.control import Control, Handler
from rooms_service.hooks import short_reason
from rooms_service.rooms import Rooms
from rooms_service.settings import RoomsSettings
from rooms_service.tokens import MAX_USER_LENGTH

MAX_BROADCAST_ROOMS = 100
ROOMS_PAGE = 1000
DISCONNECTED_REASON = "disconnected by the server"


# --- what every replica answers (control.py calls these with the question's arguments) -----------
def handlers(rooms: Rooms) -> dict[str, Handler]:
    async def counts(args: dict[str, Any]) -> dict[str, int]:
        return rooms.local_counts()

    async def presence(args: dict[str, Any]) -> list[list[Any]]:
        return [[m.id, m.user, m.name] for m in rooms.local_members(str(args["room"]))]

    async def disconnect(args: dict[str, Any]) -> int:
        user, code, reason = str(args["user"]), int(args["code"]), str(args["reason"])
        members = [m for m in rooms.local_members() if m.user == user]
        for member in members:  # recorded before the ``left`` the close brings (events.py)
            rooms.events.disconnected(member, code, reason)
        writers = {id(m.writer): m.writer for m in members}
        for writer in writers.values():  # a connection with several memberships is closed once
            writer.close(code, reason, abort_after=5.0)
        return len(writers)

    return {"rooms": counts, "presence": presence, "disconnect": disconnect}


# --- request and answer bodies ---------------------------------------------------------------------
class RoomCount(BaseModel):
    room: str
    members: int = Field(description="members across every replica")


class RoomsPage(BaseModel):
    rooms: list[RoomCount] = Field(description="ordered by room id")
    next: str | None = Field(description="`cursor` for the next page; null: this was the last one")
    complete: bool = Field(description="false: a live replica did not answer in time (counts may be low)")


class Member(BaseModel):
    member: str = Field(description="the membership's id (as in `join`/`leave`)")
    user: str | None = Field(description="its user (token `sub` or the join hook's `user`), when known")
    name: str | None = Field(description="its name, when known")


class PresenceAnswer(BaseModel):
    room: str
    count: int
    members: list[Member]
    complete: bool = Field(description="false: a live replica did not answer in time")


class DisconnectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: int = Field(default=int(CloseCode.DISCONNECTED), ge=4000, le=4999, description="the close code")
    reason: str = Field(default=DISCONNECTED_REASON, max_length=123, description="the close reason")


class DisconnectAnswer(BaseModel):
    user: str
    closed: int = Field(description="connections closed, across every replica")
    complete: bool = Field(description="false: a live replica did not answer in time")


class BroadcastRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"rooms": ["lobby", "support"], "text": "maintenance at 6", "id": "m-6"}]
        },
    )

    rooms: list[str] = Field(min_length=1, max_length=MAX_BROADCAST_ROOMS, description="room ids, no repeats")
    text: str = Field(description="the message; at most WS_MAX_SIZE bytes of UTF-8 (else 413)")
    name: str | None = Field(default=None, min_length=1, max_length=64, description="a sender name")
    id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="an idempotency id: a resend within ROOM_DEDUP_WINDOW stores nothing twice in any room",
    )

    @field_validator("rooms")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("rooms must not repeat")
        return value

    @field_validator("name", "id")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None and not value.isprintable():
            raise ValueError("must be printable characters")
        return value


class Stored(BaseModel):
    room: str
    seq: int
    duplicate: bool


class BroadcastAnswer(BaseModel):
    results: list[Stored] = Field(description="one per room, in the request's order")


# --- the routes --------------------------------------------------------------------------------------
def add_routes(
    router: APIRouter,
    settings: RoomsSettings,
    refusals: dict[int | str, dict[str, Any]],
    room: Callable[[str], str],
    unavailable: Callable[[str, str, Exception], HTTPException],
    read_body: Callable[[Request, int], Any],
) -> None:
    async def ask(request: Request, op: str, **args: Any) -> Any:
        control: Control = request.app.state.control
        try:
            return await control.ask(op, **args)
        except Exception as exc:
            raise unavailable(args.get("room", "*"), f"ask the replicas ({op})", exc) from None

    @router.get("/rooms", response_model=RoomsPage, summary="Rooms with members now", responses=refusals)
    async def list_rooms(
        request: Request,
        cursor: Annotated[str | None, Query(max_length=128, description="the last page's `next`")] = None,
        limit: Annotated[int, Query(ge=1, le=ROOMS_PAGE, description="at most this many rooms")] = 100,
    ) -> RoomsPage:
        """Every room with members on any replica, with its member count across all of them, by room id."""
        gathered = await ask(request, "rooms")
        totals: dict[str, int] = {}
        for counts in gathered.results.values():
            for room_id, count in (counts or {}).items():
                totals[room_id] = totals.get(room_id, 0) + int(count)
        names = sorted(r for r in totals if cursor is None or r > cursor)
        page = names[:limit]
        more = len(names) > limit
        return RoomsPage(
            rooms=[RoomCount(room=r, members=totals[r]) for r in page],
            next=page[-1] if more else None,
            complete=gathered.complete,
        )

    @router.get(
        "/rooms/{room_id}/presence",
        response_model=PresenceAnswer,
        summary="A room's members across every replica",
        responses=refusals,
    )
    async def room_presence(request: Request, room_id: str) -> PresenceAnswer:
        room_id = room(room_id)
        gathered = await ask(request, "presence", room=room_id)
        members = [
            Member(member=str(m[0]), user=m[1], name=m[2])
            for answer in gathered.results.values()
            for m in answer or []
        ]
        members.sort(key=lambda m: m.member)
        return PresenceAnswer(room=room_id, count=len(members), members=members, complete=gathered.complete)

    @router.post(
        "/users/{user}/disconnect",
        response_model=DisconnectAnswer,
        summary="Close every connection of a user, on every replica",
        responses={**refusals, 422: {"description": "a bad body or user"}},
        openapi_extra={
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": DisconnectRequest.model_json_schema()}},
            }
        },
    )
    async def disconnect_user(request: Request, user: str) -> DisconnectAnswer:
        """Closed with 4010 `disconnected by the server` (or the body's code and reason) within a second;
        4010 is final: the clients do not reconnect."""
        if not (0 < len(user) <= MAX_USER_LENGTH and user.isprintable()):
            raise HTTPException(422, "invalid user")
        body = await read_body(request, 4096)
        asked = _parse(DisconnectRequest, body) if body.strip() else DisconnectRequest()
        gathered = await ask(
            request, "disconnect", user=user, code=asked.code, reason=short_reason(asked.reason)
        )
        closed = sum(int(n or 0) for n in gathered.results.values())
        return DisconnectAnswer(user=user, closed=closed, complete=gathered.complete)

    @router.delete(
        "/rooms/{room_id}/messages",
        status_code=204,
        summary="Remove a room's stored messages",
        responses=refusals,
    )
    async def forget(request: Request, room_id: str) -> Response:
        """Every stored message of the room is removed (seqs go on from where they were); a member that
        resumes from before gets `recovered: false`. Members connected now keep what they have."""
        room_id = room(room_id)
        rooms: Rooms = request.app.state.rooms
        try:
            async with asyncio.timeout(settings.room_store_timeout):
                await rooms.forget_history(room_id)
        except Exception as exc:
            raise unavailable(room_id, "remove the history", exc) from None
        return Response(status_code=204)

    broadcast_bound = (
        6 * settings.ws_max_size + 8 * 1024 + MAX_BROADCAST_ROOMS * (settings.room_id_max_length + 8)
    )

    @router.post(
        "/broadcast",
        response_model=BroadcastAnswer,
        summary="Publish one message into many rooms",
        responses={
            **refusals,
            413: {"description": "text over WS_MAX_SIZE bytes, or a larger body"},
            422: {"description": "broken JSON, more than 100 rooms, a repeated room, an unknown field"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": BroadcastRequest.model_json_schema()}},
            }
        },
    )
    async def broadcast(request: Request) -> BroadcastAnswer:
        """Stored in each room (then delivered to its members, both wire formats) and answered with each
        room's `seq`. A resend with the same `id` stores nothing twice (`duplicate: true`, the first
        seqs); after a 503, resend it as it was."""
        message = _parse(BroadcastRequest, await read_body(request, broadcast_bound))
        room_ids = [room(r) for r in message.rooms]
        if len(message.text.encode("utf-8")) > settings.ws_max_size:
            raise HTTPException(413, "text over WS_MAX_SIZE bytes")
        rooms: Rooms = request.app.state.rooms
        try:
            acks = await asyncio.gather(
                *(rooms.publish(r, message.text, message.id, name=message.name) for r in room_ids)
            )
        except Exception as exc:
            raise unavailable("*", "broadcast", exc) from None
        return BroadcastAnswer(
            results=[
                Stored(room=r, seq=a.seq, duplicate=a.duplicate) for r, a in zip(room_ids, acks, strict=True)
            ]
        )


T = TypeVar("T", bound=BaseModel)


def _parse(model: type[T], body: bytes) -> T:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors, body=body) from None

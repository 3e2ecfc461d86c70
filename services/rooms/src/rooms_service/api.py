"""The HTTP API of rooms: a backend publishes into a room and reads its history.

- ``POST /api/rooms/{room_id}/messages`` ``{"text", "name"?, "id"?}`` stores a message exactly like a
  member's (sender ``"api"``, the stream's ``seq``, both wire formats), by any replica, whether or not it
  has the room open; a repeated ``id`` inside ROOM_DEDUP_WINDOW is stored once (``duplicate: true``).
- ``GET /api/rooms/{room_id}/messages?since=&limit=`` gives stored messages as JSON members get them.

Both need ``Authorization: Bearer <key>`` (api_keys.py). The order of the checks is the contract: the
key (401, or 429 for a throttled address or a key over its rate), the room id (400), then the body:
its size before it is read beyond a bound (413), its JSON and fields (422), the text's size (413).
A refusal never carries the key; nothing here logs the key or a message's text.
"""

import asyncio
import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rooms_service import envelopes, server_api
from rooms_service.api_keys import ApiKeys, Verdict
from rooms_service.guard import FailureThrottle
from rooms_service.hooks import Hooks
from rooms_service.room_ids import InvalidRoomId, validate_room_id
from rooms_service.rooms import Rooms
from rooms_service.settings import RoomsSettings

logger = logging.getLogger(__name__)

BODY_OVERHEAD = 8 * 1024  # bytes a request body may hold beyond its JSON-escaped text: keys, name, id
ESCAPED = 6  # the most bytes JSON may spend on one byte of UTF-8 text ("\u0001" for a control byte)
HISTORY_LIMIT = 1000  # the most messages one GET returns
UNAVAILABLE_RETRY_AFTER = 5  # seconds, on a 503
MAX_SEQ = 2**64 - 1  # JetStream sequences are unsigned 64-bit


class PublishRequest(BaseModel):
    """One message for a room."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"text": "order 1234 shipped", "name": "shop", "id": "order-1234"}]},
    )

    text: str = Field(description="the message; at most WS_MAX_SIZE bytes of UTF-8 (else 413)")
    name: str | None = Field(
        default=None, min_length=1, max_length=64, description="a sender name members see (`name`)"
    )
    id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="an idempotency id: the same id in the same room within ROOM_DEDUP_WINDOW is stored once",
    )

    @field_validator("name", "id")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None and not value.isprintable():
            raise ValueError("must be printable characters")
        return value


class PublishResponse(BaseModel):
    seq: int = Field(description="the message's seq in the room (the first one's for a duplicate)")
    duplicate: bool = Field(description="true: this id was stored before, nothing new was stored")


class MessageEnvelope(BaseModel):
    """A stored message as JSON members get it; optional keys are absent (never null) when unknown."""

    type: Literal["message"]
    room: str
    sender: str = Field(description='a member id, or "api"')
    text: str
    ts: float = Field(description="server time it was received, Unix seconds")
    origin: str = Field(description="the replica that stored it")
    id: str | None = None
    user: str | None = None
    name: str | None = None
    seq: int


class HistoryResponse(BaseModel):
    room: str
    epoch: str = Field(description="names this history; seqs of another epoch mean nothing here")
    seq: int = Field(description="the room's newest stored seq (0: none); above the last message's: more")
    messages: list[MessageEnvelope]


class Problem(BaseModel):
    detail: str


REFUSALS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "invalid room id"},
    401: {"model": Problem, "description": "missing or wrong API key (`WWW-Authenticate: Bearer`)"},
    429: {
        "model": Problem,
        "description": "too many wrong keys from this address, or the key is over its rate (`Retry-After`)",
    },
    503: {"model": Problem, "description": "messaging unavailable (`Retry-After`)"},
}


def create_router(settings: RoomsSettings) -> APIRouter:
    """The API's routes; its keys are read and checked here, at start (a malformed one stops it)."""
    throttle = FailureThrottle(settings.auth_max_failures, settings.auth_failure_window)
    keys = ApiKeys(settings.api_keys(), throttle, rate=settings.publish_rate, burst=settings.publish_burst)
    bearer = HTTPBearer(auto_error=False, description="one of PUBLISH_API_KEYS")
    body_bound = ESCAPED * settings.ws_max_size + BODY_OVERHEAD

    async def authorized(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
    ) -> None:
        client = request.client.host if request.client else "unknown"
        decision = await keys.check(client, credentials.credentials if credentials else None)
        verdict = decision.verdict
        if verdict == Verdict.ALLOWED:
            return
        if verdict != Verdict.RATE_LIMITED:  # over its rate is a working key: not worth a log line each
            logger.warning("api: refused %s (%s key)", client, verdict)
        if verdict in (Verdict.RATE_LIMITED, Verdict.THROTTLED):
            detail = "rate limit exceeded" if verdict == Verdict.RATE_LIMITED else "too many failures"
            raise HTTPException(429, detail, headers={"Retry-After": str(decision.retry_after)})
        raise HTTPException(401, "missing or wrong API key", headers={"WWW-Authenticate": "Bearer"})

    router = APIRouter(prefix="/api", tags=["rooms"], dependencies=[Depends(authorized)])

    def room(room_id: str) -> str:
        try:
            return validate_room_id(room_id, settings.room_id_max_length)
        except InvalidRoomId:
            raise HTTPException(400, "invalid room id") from None

    def unavailable(room_id: str, what: str, exc: Exception) -> HTTPException:
        logger.warning("room %s: could not %s (%s)", room_id, what, type(exc).__name__)
        headers = {"Retry-After": str(UNAVAILABLE_RETRY_AFTER)}
        return HTTPException(503, "messaging unavailable", headers=headers)

    @router.post(
        "/rooms/{room_id}/messages",
        status_code=201,
        response_model=PublishResponse,
        summary="Publish a message into a room",
        responses={
            **REFUSALS,
            403: {"model": Problem, "description": "the publish hook denied it (`detail`: the app's reason)"},
            413: {"model": Problem, "description": "text over WS_MAX_SIZE bytes, or a larger body"},
            422: {"description": "broken JSON, a wrong type, an unknown field"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": PublishRequest.model_json_schema()}},
            }
        },
    )
    async def publish(request: Request, room_id: str) -> PublishResponse:
        """Stored, then delivered to every member (both wire formats) with its `seq`; answered once
        stored. A repeated `id` within ROOM_DEDUP_WINDOW: the first one's seq, `duplicate: true`."""
        room_id = room(room_id)
        message = _parse(await _read_bounded(request, body_bound))
        if len(message.text.encode("utf-8")) > settings.ws_max_size:
            raise HTTPException(413, "text over WS_MAX_SIZE bytes")
        rooms: Rooms = request.app.state.rooms
        text = await _moderated(request.app.state.hooks, room_id, message)
        try:
            ack = await rooms.publish(room_id, text, message.id, name=message.name)
        except Exception as exc:  # NATS away for longer than ROOM_STORE_TIMEOUT
            raise unavailable(room_id, "store an API message", exc) from None
        return PublishResponse(seq=ack.seq, duplicate=ack.duplicate)

    @router.get(
        "/rooms/{room_id}/messages",
        response_model=HistoryResponse,
        summary="Read a room's stored messages",
        responses=REFUSALS,
    )
    async def history(
        request: Request,
        room_id: str,
        since: Annotated[int, Query(ge=0, le=MAX_SEQ, description="messages after this seq")] = 0,
        limit: Annotated[int, Query(ge=1, le=HISTORY_LIMIT, description="at most this many")] = 100,
    ) -> Response:
        """The oldest `limit` stored messages after `since`, oldest first, as JSON members get them
        (also at most ROOM_HISTORY_SIZE). To page: ask again with `since` = the last message's seq."""
        room_id = room(room_id)
        rooms: Rooms = request.app.state.rooms
        try:
            if rooms.epoch is None:
                raise RuntimeError("the room history is not available yet")
            async with asyncio.timeout(settings.room_store_timeout):
                seq, stored = await rooms.history(room_id, since, min(limit, settings.room_history_size))
        except Exception as exc:
            raise unavailable(room_id, "read the history", exc) from None
        messages = b",".join(
            envelopes.with_seq(s.payload, s.seq)
            for s in stored
            if envelopes.stored_text(s.payload) is not None
        )
        head = envelopes.encode({"room": room_id, "epoch": rooms.epoch, "seq": seq})
        # The stored bytes as members get them, spliced in: never decoded and encoded again.
        return Response(b'%s,"messages":[%s]}' % (head[:-1], messages), media_type="application/json")

    # GET /api/rooms, presence, disconnect, DELETE messages, broadcast: the same keys and refusals
    server_api.add_routes(router, settings, REFUSALS, room, unavailable, _read_bounded)
    return router


async def _moderated(hooks: Hooks, room_id: str, message: PublishRequest) -> str:
    """The text to store: the publish hook's answer (``PUBLISH_HOOK_API``); 403 denied, 503 failed."""
    if not (hooks.publishes and hooks.publish_api):
        return message.text
    decision = await hooks.publish(room_id, None, message.name, message.text, message.id)
    if decision.failed:
        headers = {"Retry-After": str(UNAVAILABLE_RETRY_AFTER)}
        raise HTTPException(503, "publish hook unavailable", headers=headers)
    if not decision.allowed:
        raise HTTPException(403, decision.reason)
    return decision.text if decision.text is not None else message.text


async def _read_bounded(request: Request, bound: int) -> bytes:
    """The body, or 413 as soon as it is known to be larger than ``bound`` (never read beyond it)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > bound:
        raise HTTPException(413, "request body too large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > bound:
            raise HTTPException(413, "request body too large")
    return bytes(body)


def _parse(body: bytes) -> PublishRequest:
    """422 (FastAPI's shape, ``loc`` starting with "body") for broken JSON, wrong types, unknown fields."""
    try:
        return PublishRequest.model_validate_json(body)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors, body=body) from None

"""``Room``: one member of a chat room that resumes by itself.

The session is a background task: it connects with ``?format=json`` (plus ``since``/``epoch`` once it
has seen the room), reads every frame, and after a close the table calls "reconnect" comes back with a
jittered exponential backoff. Messages reach the iterator once each, in ``seq`` order: a message whose
seq is not above the last one delivered is dropped. When a resume cannot be complete (the welcome says
``recovered: false``), a ``Gap`` is recorded in ``room.gaps``, passed to ``on_gap`` and yielded by
``room.events()``. Sends carry an id (``<client id>-<n>``) and are sent again with the same id after each
reconnect until acknowledged; the server stores an id once, so ``send()`` returns the one stored seq.
A final close (4001, 4003, 4004, 1008, 1009, ...) ends the session: the iterator, ``send()`` and entering
the ``async with`` raise ``InvalidToken``/``Forbidden``/``RoomClosed`` with the code and reason, and nothing
is retried.

Identity: ``token=`` is an identity token (a JWT from the app's own login), given as a string or as a
callable (plain or async) that returns one; a callable is called before every connection attempt, so a
reconnect an hour later sends a fresh token, not an expired one; and while connected, shortly before the
token's ``exp`` it is asked again and the new token sent as ``refresh``, so the server never closes a
long-lived member with 4002 ``token expired`` (a plain string cannot be refreshed: 4002, then a
reconnect with it, which the server refuses). ``name=`` is an unverified display name
for a member without a token (``?name=``; the server ignores it when a token is given). Messages,
presence events and the welcome carry the sender's ``user`` (a token's ``sub``) and ``name`` when known.
"""

import asyncio
import base64
import contextlib
import inspect
import itertools
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from realtime_client.backoff import Backoff
from realtime_client.closes import ABNORMAL, Refused, closed_error, should_reconnect


@dataclass(frozen=True)
class Message:
    """One stored message, as every member sees it."""

    seq: int
    text: str
    sender: str
    ts: float
    id: str | None  # the sender's message id, when it gave one
    room: str
    data: dict[str, Any] = field(repr=False)  # the whole envelope, as received (origin, ...)
    user: str | None = None  # the sender's user id (its identity token's ``sub``); None without a token
    name: str | None = None  # the sender's name (its token's, its display name, the publish API's)


@dataclass(frozen=True)
class Presence:
    """``join``, ``leave`` (``member`` set) or ``members``; ``count`` is the room's total. A room above
    the server's PRESENCE_EVENTS_MAX_MEMBERS sends no join or leave: its ``members`` events list who
    ``joined`` and ``left`` since the last one ({"member", "user", "name"} each; None when the server
    listed nobody: too many changed, or only the count moved)."""

    type: str
    count: int
    member: str | None
    room: str
    data: dict[str, Any] = field(repr=False)
    user: str | None = None  # the member's user id (join, leave), when it has a token
    name: str | None = None  # the member's name (join, leave), when it has one
    joined: tuple[dict[str, Any], ...] | None = None  # members: who joined since the last one
    left: tuple[dict[str, Any], ...] | None = None  # members: who left since the last one


@dataclass(frozen=True)
class Gap:
    """A resume could not be complete: messages after ``since`` may be missing (the history no longer
    reaches back, or it was recreated: then ``epoch`` is new and seqs start again)."""

    since: int | None
    seq: int  # the room's newest stored seq when the client came back
    epoch: str


@dataclass(frozen=True)
class Welcome:
    """What the room said at a (re)connect: this connection's member id, the total, the newest seq."""

    you: str
    count: int
    seq: int
    epoch: str
    recovered: bool | None
    data: dict[str, Any] = field(repr=False)
    user: str | None = None  # who the room took this client for (its token's ``sub``)
    name: str | None = None  # the name the room shows for this client (its token's, or ``name=``)


Event = Message | Presence | Gap
TokenSource = str | Callable[[], str | Awaitable[str]]
_END = object()


class Member:
    """What a client knows of one room it is in, and what it waits for there: the part ``Room`` (one
    socket per room) and ``Joined`` (a room on a multiplexed ``Connection``) share. Messages reach the
    iterator once each, in ``seq`` order; sends wait for their ack and are sent again, with the same id,
    after each re-welcome until acknowledged."""

    def __init__(
        self,
        room: str,
        *,
        password: str | None = None,
        history: int = 0,
        client_id: str | None = None,
        join_timeout: float | None = 30.0,
        on_gap: Callable[[Gap], None] | None = None,
    ) -> None:
        self.room = room
        self.password = password
        self.history = history
        self.client_id = client_id or secrets.token_hex(6)
        self.join_timeout = join_timeout
        self.on_gap = on_gap
        # what the client knows of the room
        self.you: str | None = None
        self.count = 0
        self.epoch: str | None = None
        self.last_seq: int | None = None  # the last message seq delivered (in this epoch)
        self.welcome: Welcome | None = None
        self.gaps: list[Gap] = []
        # what happened to the connection, for callers and tests
        self.closes: list[tuple[int, str]] = []
        self.duplicates = 0  # messages dropped because their seq was not new
        self.welcomes = 0
        self.resent = 0  # sends sent again after a reconnect
        self._since: int | None = None  # what the next connection asks for
        self._events: asyncio.Queue[object] = asyncio.Queue()
        self._pending: dict[str, tuple[str, asyncio.Future[int]]] = {}
        self._ids = itertools.count()
        self._joined = asyncio.Event()
        self._error: Exception | None = None  # a final close (Closed), or what the token callable raised

    # --- reading ---------------------------------------------------------------------------------
    def __aiter__(self) -> AsyncIterator[Message]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[Message]:
        async for event in self.events():
            if isinstance(event, Message):
                yield event

    async def events(self) -> AsyncIterator[Event]:
        """Every message, presence event and gap, in the order the client learnt of them."""
        while True:
            item = await self._events.get()
            if item is _END:
                return
            if isinstance(item, Exception):
                self._events.put_nowait(item)  # every later reader sees it too
                raise item
            yield item  # type: ignore[misc]

    # --- sending ---------------------------------------------------------------------------------
    async def send(self, text: str, *, id: str | None = None) -> int:
        """Send ``text``; returns its stored seq once acknowledged. Across reconnects it is sent again
        with the same id until then. Raises ``RoomClosed`` (``InvalidToken``, ``Forbidden``) if the room
        closes for good first, ``Refused`` if the server refused it: the app's publish hook denied it
        (its code and reason) or could not decide (1013: sending it again with the same ``id`` is safe).
        ``id`` (at most 128 printable characters, unique in the room for ROOM_DEDUP_WINDOW) defaults
        to ``<client_id>-<n>``."""
        if self._error is not None:
            raise self._error
        msg_id = id if id is not None else f"{self.client_id}-{next(self._ids)}"
        if msg_id in self._pending:
            raise ValueError(f"message id {msg_id!r} is already waiting for its ack")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = (text, future)
        try:
            if self._joined.is_set():
                await self._transmit(text, msg_id)
            return await future
        finally:
            self._pending.pop(msg_id, None)

    async def _transmit(self, text: str, msg_id: str) -> None:
        """Put one send on the wire (it may be lost: it goes again after the next welcome)."""
        raise NotImplementedError

    @property
    def unacknowledged(self) -> int:
        return len(self._pending)

    # --- what the room says ----------------------------------------------------------------------
    def _take(self, event: dict[str, Any]) -> None:
        """A message, an ack or a presence event of this room."""
        kind = event.get("type")
        if kind == "message":
            seq = event["seq"]
            if self.last_seq is not None and seq <= self.last_seq:
                self.duplicates += 1
                return
            self.last_seq = self._since = seq
            message = Message(
                seq,
                event["text"],
                event["sender"],
                event["ts"],
                event.get("id"),
                event["room"],
                event,
                event.get("user"),
                event.get("name"),
            )
            self._events.put_nowait(message)
        elif kind == "ack":
            pending = self._pending.get(event["id"])
            if pending is not None and not pending[1].done():
                pending[1].set_result(event["seq"])
        elif kind == "error" and "id" in event:  # one send refused (the publish hook, or 1013)
            self._refuse(event["id"], event.get("code", 0), event.get("reason", ""))
        elif kind in ("join", "leave", "members"):
            self.count = event["count"]
            who = {"user": event.get("user"), "name": event.get("name")}
            lists = {k: tuple(event[k]) for k in ("joined", "left") if isinstance(event.get(k), list)}
            member = event.get("member")
            presence = Presence(kind, event["count"], member, event["room"], event, **who, **lists)
            self._events.put_nowait(presence)

    def _refuse(self, msg_id: str, code: int, reason: str) -> None:
        """One send was not stored: its ``send()`` raises ``Refused``; the session goes on."""
        pending = self._pending.get(msg_id)
        if pending is not None and not pending[1].done():
            pending[1].set_exception(Refused(code, reason))

    def _resume_from(self) -> int | None:
        """The ``since`` the next join asks for (None: nothing seen in a known epoch)."""
        return self._since if self.epoch is not None else None

    async def _welcomed(self, event: dict[str, Any], asked: int | None) -> None:
        epoch = event["epoch"]
        if self.epoch is not None and epoch != self.epoch:  # the history was recreated: seqs start over
            self.last_seq = None
            self._since = None
        self.epoch = epoch
        if self._since is None:
            self._since = event["seq"]  # nothing seen yet: a resume starts after what the room had
        self.you, self.count = event["you"], event["count"]
        self.welcome = Welcome(
            event["you"],
            event["count"],
            event["seq"],
            epoch,
            event.get("recovered"),
            event,
            event.get("user"),
            event.get("name"),
        )
        if event.get("recovered") is False:
            gap = Gap(asked, event["seq"], epoch)
            self.gaps.append(gap)
            if self.on_gap is not None:
                self.on_gap(gap)
            self._events.put_nowait(gap)
        self.welcomes += 1
        self._joined.set()
        for msg_id, (text, _) in list(self._pending.items()):  # what may not have been stored
            await self._transmit(text, msg_id)
            self.resent += 1

    def _fail(self, error: Exception) -> None:
        self._error = error
        for _, future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._events.put_nowait(error)

    def _end(self) -> None:
        for _, future in self._pending.values():
            future.cancel()
        self._events.put_nowait(_END)


class Refreshing:
    """A socket's token kept fresh: shortly before its ``exp`` (a quarter of what is left, at most 30 s)
    the token callable is asked again and the new token sent as ``{"type": "refresh", "token": T}``; the
    server answers ``refreshed`` and does not close with 4002 at the old exp. ``Room`` (its own socket)
    and ``Connection`` (all its rooms on one socket) both do it."""

    token: "TokenSource | None"
    _exp: float | None = None  # the current token's exp
    _refresher: asyncio.Task[None] | None = None  # sends a fresh token before exp
    refreshes = 0

    def _start_refresh(self, conn: ClientConnection) -> None:
        if callable(self.token) and self._exp is not None and self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh(conn), name="refresh")

    def _stop_refresh(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None

    async def _refresh(self, conn: ClientConnection) -> None:
        while self._exp is not None:
            left = self._exp - time.time()
            await asyncio.sleep(max(0.0, left - min(30.0, left / 4)))
            try:
                token = await token_of(self.token)
            except Exception:  # the app's login said no: the server closes with 4002 at exp
                return
            with contextlib.suppress(ConnectionClosed):
                await conn.send(json.dumps({"type": "refresh", "token": token}))
            self.refreshes += 1
            self._exp = expiry(token)


class Room(Member, Refreshing):
    """``async with Room(url, room) as room: async for message in room: ...``

    ``url`` is the gateway's base (``ws://host:port``). ``token`` is an identity token (a JWT: the member
    is its user, and a refused token raises ``InvalidToken`` and is never retried): a string, or a
    callable (sync or async) returning a fresh one, called before every connection attempt (tokens
    expire; a callable that raises ends the session with its exception). ``name`` is a display name
    (``?name=``, unverified; ignored by the server when a token is given). ``password`` is sent as
    ``pass``; ``history=N`` asks for the last N messages before live ones.
    Use either ``async for message in room`` (messages only) or ``async for event in room.events()``
    (messages, presence and gaps), not both at once: they read the same queue.
    One socket per room; ``Connection`` carries many rooms on one.
    """

    def __init__(
        self,
        url: str,
        room: str,
        *,
        token: TokenSource | None = None,
        password: str | None = None,
        name: str | None = None,
        history: int = 0,
        client_id: str | None = None,
        backoff: Backoff | None = None,
        open_timeout: float = 10.0,
        join_timeout: float | None = 30.0,
        on_gap: Callable[[Gap], None] | None = None,
    ) -> None:
        if not url.startswith(("ws://", "wss://")):
            raise ValueError("url must start with ws:// or wss://")
        super().__init__(
            room,
            password=password,
            history=history,
            client_id=client_id,
            join_timeout=join_timeout,
            on_gap=on_gap,
        )
        self.url = url.rstrip("/")
        self.token = token
        self.name = name
        self.backoff = backoff or Backoff()
        self.open_timeout = open_timeout
        self.connects = 0  # connection attempts
        self._conn: ClientConnection | None = None  # set while welcomed
        self._task: asyncio.Task[None] | None = None

    # --- the context manager ---------------------------------------------------------------------
    async def __aenter__(self) -> "Room":
        self._task = asyncio.create_task(self._run(), name=f"room-{self.room}")
        joined = asyncio.create_task(self._joined.wait())
        try:
            await asyncio.wait({joined, self._task}, timeout=self.join_timeout, return_when="FIRST_COMPLETED")
        finally:
            joined.cancel()
        if self._error is not None:
            raise self._error
        if not self._joined.is_set():
            await self.close()
            raise TimeoutError(f"could not join {self.room!r} within {self.join_timeout} s")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Leave the room; pending sends are cancelled and the iterators end."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._end()

    async def _transmit(self, text: str, msg_id: str) -> None:
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(ConnectionClosed):
                await conn.send(_frame(text, msg_id))

    # --- the session -----------------------------------------------------------------------------
    async def _token(self) -> str | None:
        """The token for the next connection attempt: a callable is asked every time."""
        return await token_of(self.token)

    def _target(self, token: str | None) -> str:
        params = [("format", "json")]
        if self._since is not None and self.epoch is not None:
            params += [("since", str(self._since)), ("epoch", self.epoch)]
        if self.history:
            params.append(("history", str(self.history)))
        if self.password is not None:
            params.append(("pass", self.password))
        if self.name is not None:
            params.append(("name", self.name))
        if token is not None:
            params.append(("token", token))
        return f"{self.url}/ws/{quote(self.room, safe='')}?{urlencode(params)}"

    async def _run(self) -> None:
        while True:
            try:
                token = await self._token()
            except Exception as exc:  # the app's login said no, or its callable broke: not ours to retry
                self._fail(exc)
                return
            self._exp = expiry(token)
            code, reason = await self._session(token)
            self.closes.append((code, reason))
            if not should_reconnect(code):
                self._fail(closed_error(code, reason))
                return
            await asyncio.sleep(self.backoff.next())

    async def _session(self, token: str | None) -> tuple[int, str]:
        asked = self._resume_from()
        self.connects += 1
        try:
            conn = await connect(self._target(token), compression=None, open_timeout=self.open_timeout)
        except InvalidStatus as exc:  # refused before the upgrade: a browser would see 1006
            return ABNORMAL, f"HTTP {exc.response.status_code}"
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            return ABNORMAL, str(exc)
        try:
            async for raw in conn:
                if isinstance(raw, str):
                    event = json.loads(raw)
                    if event.get("type") == "welcome":
                        self._conn = conn
                        self.backoff.reset()
                        self._start_refresh(conn)
                        await self._welcomed(event, asked)
                    else:
                        self._take(event)
        except ConnectionClosed:
            pass
        finally:
            self._stop_refresh()
            self._conn = None
            self._joined.clear()
            await conn.close()
        return close_of(conn)


async def token_of(source: TokenSource | None) -> str | None:
    """A token for the next connection attempt: a callable is asked every time."""
    if source is None or isinstance(source, str):
        return source
    token = source()
    if inspect.isawaitable(token):
        token = await token
    if not isinstance(token, str):
        raise TypeError(f"the token callable returned {type(token).__name__}, not str")
    return token


def close_of(conn: ClientConnection) -> tuple[int, str]:
    """The code and reason the server closed with (1006 when no close frame came)."""
    rcvd = conn.protocol.close_rcvd
    if rcvd is None:
        return ABNORMAL, ""
    return rcvd.code, rcvd.reason


def expiry(token: str | None) -> float | None:
    """A JWT's ``exp``, read without checking the token (the server checks it; this only says when)."""
    try:
        payload = token.split(".")[1]  # type: ignore[union-attr]
        exp = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))).get("exp")
    except (AttributeError, IndexError, ValueError):
        return None
    return float(exp) if isinstance(exp, int | float) else None


def _frame(text: str, msg_id: str) -> str:
    return json.dumps({"text": text, "id": msg_id}, ensure_ascii=False)

"""``Connection``: one socket (``/ws``) carrying many rooms, each with today's ``Room`` API.

    async with Connection("ws://127.0.0.1:8000", token=get_token) as conn:
        lobby = await conn.join("lobby")
        vip = await conn.join("VIP", password="...")
        await vip.send("hello")                   # the stored seq, once acknowledged
        async for message in lobby: ...           # every message once, in seq order, across reconnects

The socket's loop is ``Session``, the one ``Room`` runs on: it connects to ``/ws`` (``?token=``,
``?name=``), sends a ``join`` frame for every room the caller joined, and routes each frame to its room
by ``room``. After a close the table calls "reconnect" it comes back with a jittered exponential backoff
and joins every room again, each with its own ``since``/``epoch``, by itself; unacknowledged sends are
sent again after each room's welcome, paced for the socket as a whole (the server's message rate is the
connection's, across its rooms). A final close of the connection (1008, 4001 at connect, ...) ends every
room. An ``error`` frame concerns one room or one frame: a refused join raises from ``join()``
(``Forbidden``, ``InvalidToken``, ``RoomClosed``; 1013 "messaging unavailable" is retried), a refused
send raises from its ``send()`` (``Refused``, also named ``SendRefused``: the app's publish hook denied
it, or the frame was refused; 1013 is sent again after a pause, like any unacknowledged send). A token
from a callable is refreshed on the connection shortly before its ``exp`` (``refresh``), so the server
never closes it with 4002.
"""

import asyncio
import contextlib
import secrets
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection

from realtime_client.backoff import Backoff
from realtime_client.closes import closed_error
from realtime_client.events import Gap
from realtime_client.member import Member
from realtime_client.pacing import RESEND_BURST, RESEND_RATE, Pacer
from realtime_client.session import Session
from realtime_client.tokens import TokenSource

TRY_AGAIN_LATER = 1013  # an error frame's "messaging unavailable": the same frame may pass later


class Joined(Member):
    """A room joined on a ``Connection``: iterate it, ``send``, read ``gaps``, ``count`` and presence as on
    a ``Room``; ``await leave()`` (or ``async with``) leaves it, the connection goes on."""

    def __init__(self, connection: "Connection", room: str, **kwargs: Any) -> None:
        super().__init__(room, client_id=connection.client_id, **kwargs)
        self.connection = connection
        self._asked: int | None = None  # the since its pending join asked for
        self._left = asyncio.Event()
        self._answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # the first welcome

    @property
    def _pacer(self) -> Pacer:
        return self.connection.pacer

    async def _welcomed(self, event: dict[str, Any], asked: int | None) -> None:
        await super()._welcomed(event, asked)
        if not self._answer.done():
            self._answer.set_result(None)

    def _fail(self, error: Exception) -> None:
        super()._fail(error)
        if not self._answer.done():
            self._answer.set_exception(error)
            self._answer.exception()  # retrieved: join() raises it, or nobody waits any more

    async def __aenter__(self) -> "Joined":
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.leave()

    async def leave(self) -> None:
        """Leave the room (the server says ``left``); pending sends are cancelled, the iterators end."""
        await self.connection._leave(self)

    close = leave  # the name Room uses

    async def _transmit(self, text: str, msg_id: str) -> None:
        await self.connection._put({"type": "send", "room": self.room, "text": text, "id": msg_id})

    def _join_frame(self, ref: str) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "join", "room": self.room, "ref": ref}
        self._asked = self._resume_from()
        if self._asked is not None and self.epoch is not None:
            frame["since"], frame["epoch"] = self._asked, self.epoch
        if self.history:
            frame["history"] = self.history
        if self.password is not None:
            frame["pass"] = self.password
        return frame


class Connection(Session):
    """``async with Connection(url, token=..., name=...) as conn: room = await conn.join("lobby")``.

    ``url`` is the gateway's base (``ws://host:port``); ``token``, ``name``, ``resend_rate`` and
    ``resend_burst`` are as for ``Room`` and apply to every room joined (a token's ``rooms`` claim limits
    which). ``rooms`` holds the rooms joined.
    """

    def __init__(
        self,
        url: str,
        *,
        token: TokenSource | None = None,
        name: str | None = None,
        client_id: str | None = None,
        backoff: Backoff | None = None,
        open_timeout: float = 10.0,
        join_timeout: float | None = 30.0,
        resend_rate: float = RESEND_RATE,
        resend_burst: int = RESEND_BURST,
    ) -> None:
        super().__init__(url, token, name, backoff, open_timeout, Pacer(resend_rate, resend_burst))
        self.client_id = client_id or secrets.token_hex(6)
        self.join_timeout = join_timeout
        self.rooms: dict[str, Joined] = {}
        self._refs: dict[str, Joined] = {}  # the ref of each join or leave waiting for its answer
        self._next_ref = 0
        self._opened = asyncio.Event()
        self._retries: set[asyncio.Future[None]] = set()

    # --- the context manager ---------------------------------------------------------------------
    async def __aenter__(self) -> "Connection":
        await self._start(self._opened, self.open_timeout, "could not connect", "connection")
        return self

    async def close(self) -> None:
        """Close the socket; every room's pending sends are cancelled and its iterators end."""
        await self._stop()
        for retry in list(self._retries):
            retry.cancel()
        for room in list(self.rooms.values()):
            room._end()
        self.rooms.clear()

    # --- rooms -----------------------------------------------------------------------------------
    async def join(
        self,
        room: str,
        *,
        password: str | None = None,
        history: int = 0,
        on_gap: Callable[[Gap], None] | None = None,
    ) -> Joined:
        """Join ``room`` and wait for its welcome; raises ``Forbidden`` (4003), ``InvalidToken`` (4001) or
        ``RoomClosed`` (an invalid room id, a room already joined, too many rooms, joining too fast)."""
        if self._error is not None:
            raise self._error
        if room in self.rooms:
            raise ValueError(f"room {room!r} is already joined on this connection")
        joined = Joined(
            self, room, password=password, history=history, join_timeout=self.join_timeout, on_gap=on_gap
        )
        self.rooms[room] = joined
        await self._ask_join(joined)
        try:
            await asyncio.wait_for(asyncio.shield(joined._answer), self.join_timeout)
        except TimeoutError:
            if self.rooms.get(room) is joined:
                del self.rooms[room]
            joined._end()
            raise TimeoutError(f"could not join {room!r} within {self.join_timeout} s") from None
        return joined

    async def _ask_join(self, joined: Joined) -> None:
        if self._conn is None:
            return  # sent when the connection opens
        ref = self._ref(joined)
        await self._put(joined._join_frame(ref))

    async def _leave(self, joined: Joined) -> None:
        if self.rooms.get(joined.room) is not joined:
            return
        del self.rooms[joined.room]
        if self._conn is not None and joined._joined.is_set():
            ref = self._ref(joined)
            await self._put({"type": "leave", "room": joined.room, "ref": ref})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(joined._left.wait(), self.join_timeout)
        joined._unwelcomed()
        joined._end()

    def _ref(self, joined: Joined) -> str:
        self._next_ref += 1
        ref = str(self._next_ref)
        self._refs[ref] = joined
        return ref

    # --- the session -----------------------------------------------------------------------------
    def _target(self, token: str | None) -> str:
        params = []
        if self.name is not None:
            params.append(("name", self.name))
        if token is not None:
            params.append(("token", token))
        return f"{self.url}/ws" + (f"?{urlencode(params)}" if params else "")

    async def _connected(self, conn: ClientConnection) -> None:
        self._conn = conn
        self._refs.clear()
        self._start_refresh(conn)
        for joined in list(self.rooms.values()):  # every room again, each from where it was
            await self._ask_join(joined)
        self._opened.set()

    def _lost(self) -> None:
        self._opened.clear()
        for joined in self.rooms.values():
            joined._unwelcomed()

    def _closed(self, code: int, reason: str) -> None:
        super()._closed(code, reason)
        for room in self.rooms.values():
            room.closes.append((code, reason))

    async def _handle(self, conn: ClientConnection, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "welcome":
            joined = self._refs.pop(str(event.get("ref")), None)
            if joined is not None and self.rooms.get(joined.room) is joined:
                self.backoff.reset()
                await joined._welcomed(event, joined._asked)
        elif kind == "left":
            joined = self._refs.pop(str(event.get("ref")), None)
            if joined is not None:
                joined._left.set()
        elif kind == "error":
            self._refused(event)
        else:
            joined = self.rooms.get(event.get("room"))  # type: ignore[arg-type]
            if joined is not None and joined._joined.is_set():
                joined._take(event)

    def _refused(self, event: dict[str, Any]) -> None:
        code, reason = event.get("code", 0), event.get("reason", "")
        if "ref" in event:  # a join (or a leave) refused
            joined = self._refs.pop(str(event["ref"]), None)
            if joined is None or self.rooms.get(joined.room) is not joined:
                if joined is not None:
                    joined._left.set()
                return
            if code == TRY_AGAIN_LATER:  # messaging unavailable on that replica for now: ask again
                self._after(self.backoff.next(), lambda: self._ask_join(joined))
                return
            del self.rooms[joined.room]
            joined._fail(closed_error(code, reason))
            return
        joined = self.rooms.get(event.get("room"))  # type: ignore[arg-type]
        msg_id = event.get("id")
        if joined is None or msg_id is None or joined._waiting(msg_id) is None:
            return
        if code == TRY_AGAIN_LATER:  # not stored: the same id again after a pause (stored once)
            text = joined._waiting(msg_id)
            self._after(self.backoff.next(), lambda: joined._transmit(text, msg_id))  # type: ignore[arg-type]
            return
        joined._refuse(msg_id, code, reason)

    def _after(self, delay: float, step: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run a retry (a join or a send again) after ``delay`` as a task the connection holds until it
        is done."""

        def start() -> None:
            task = asyncio.ensure_future(step())
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)

        asyncio.get_running_loop().call_later(delay, start)

    def _fail(self, error: Exception) -> None:
        self._error = error
        for joined in self.rooms.values():
            joined._fail(error)

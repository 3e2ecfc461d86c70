"""``Connection``: one socket (``/ws``) carrying many rooms, each with today's ``Room`` API.

    async with Connection("ws://127.0.0.1:8000", token=get_token) as conn:
        lobby = await conn.join("lobby")
        vip = await conn.join("VIP", password="...")
        await vip.send("hello")                   # the stored seq, once acknowledged
        async for message in lobby: ...           # every message once, in seq order, across reconnects

The session is a background task: it connects to ``/ws`` (``?token=``, ``?name=``), sends a ``join``
frame for every room the caller joined, and routes each frame to its room by ``room``. After a close the
table calls "reconnect" it comes back with a jittered exponential backoff and joins every room again,
each with its own ``since``/``epoch``, by itself; unacknowledged sends are sent again after each room's
welcome. A final close of the connection (1008, 4001 at connect, ...) ends every room. An ``error`` frame
concerns one room or one frame: a refused join raises from ``join()`` (``Forbidden``, ``InvalidToken``,
``RoomClosed``; 1013 "messaging unavailable" is retried), a refused send raises from its ``send()``
(``Refused``, also named ``SendRefused``: the app's publish hook denied it, or the frame was refused;
1013 is sent again after a pause, like any unacknowledged send). A token from a callable is refreshed on
the connection shortly before its ``exp`` (``refresh``), so the server never closes it with 4002.
"""

import asyncio
import contextlib
import json
import secrets
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from realtime_client.backoff import Backoff
from realtime_client.closes import ABNORMAL, Refused, closed_error, should_reconnect
from realtime_client.room import Gap, Member, Refreshing, TokenSource, close_of, expiry, token_of

TRY_AGAIN_LATER = 1013  # an error frame's "messaging unavailable": the same frame may pass later


SendRefused = Refused  # the server refused one message (1008 malformed, 4011 not joined, 4029 over the
# rate, or the publish hook's code): not resent; the name issue 20 gave it


class Joined(Member):
    """A room joined on a ``Connection``: iterate it, ``send``, read ``gaps``, ``count`` and presence as on
    a ``Room``; ``await leave()`` (or ``async with``) leaves it, the connection goes on."""

    def __init__(self, connection: "Connection", room: str, **kwargs: Any) -> None:
        super().__init__(room, client_id=connection.client_id, **kwargs)
        self.connection = connection
        self._asked: int | None = None  # the since its pending join asked for
        self._left = asyncio.Event()
        self._answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # the first welcome

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


class Connection(Refreshing):
    """``async with Connection(url, token=..., name=...) as conn: room = await conn.join("lobby")``.

    ``url`` is the gateway's base (``ws://host:port``); ``token`` and ``name`` are as for ``Room`` and
    apply to every room joined (a token's ``rooms`` claim limits which). ``rooms`` holds the rooms joined.
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
    ) -> None:
        if not url.startswith(("ws://", "wss://")):
            raise ValueError("url must start with ws:// or wss://")
        self.url = url.rstrip("/")
        self.token = token
        self.name = name
        self.client_id = client_id or secrets.token_hex(6)
        self.backoff = backoff or Backoff()
        self.open_timeout = open_timeout
        self.join_timeout = join_timeout
        self.rooms: dict[str, Joined] = {}
        self.connects = 0  # connection attempts
        self.closes: list[tuple[int, str]] = []
        self._refs: dict[str, Joined] = {}  # the ref of each join or leave waiting for its answer
        self._next_ref = 0
        self._conn: ClientConnection | None = None  # set while open
        self._opened = asyncio.Event()
        self._error: Exception | None = None
        self._task: asyncio.Task[None] | None = None
        self._retries: set[asyncio.Future[None]] = set()

    # --- the context manager ---------------------------------------------------------------------
    async def __aenter__(self) -> "Connection":
        self._task = asyncio.create_task(self._run(), name="connection")
        opened = asyncio.create_task(self._opened.wait())
        try:
            await asyncio.wait({opened, self._task}, timeout=self.open_timeout, return_when="FIRST_COMPLETED")
        finally:
            opened.cancel()
        if self._error is not None:
            raise self._error
        if not self._opened.is_set():
            await self.close()
            raise TimeoutError(f"could not connect within {self.open_timeout} s")
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the socket; every room's pending sends are cancelled and its iterators end."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
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
        joined._joined.clear()
        joined._end()

    def _ref(self, joined: Joined) -> str:
        self._next_ref += 1
        ref = str(self._next_ref)
        self._refs[ref] = joined
        return ref

    async def _put(self, frame: dict[str, Any]) -> None:
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(ConnectionClosed):
                await conn.send(json.dumps(frame, ensure_ascii=False))

    # --- the session -----------------------------------------------------------------------------
    def _target(self, token: str | None) -> str:
        params = []
        if self.name is not None:
            params.append(("name", self.name))
        if token is not None:
            params.append(("token", token))
        return f"{self.url}/ws" + (f"?{urlencode(params)}" if params else "")

    async def _run(self) -> None:
        while True:
            try:
                token = await token_of(self.token)
            except Exception as exc:  # the app's login said no, or its callable broke: not ours to retry
                self._fail(exc)
                return
            self._exp = expiry(token)
            code, reason = await self._session(token)
            self.closes.append((code, reason))
            for room in self.rooms.values():
                room.closes.append((code, reason))
            if not should_reconnect(code):
                self._fail(closed_error(code, reason))
                return
            await asyncio.sleep(self.backoff.next())

    async def _session(self, token: str | None) -> tuple[int, str]:
        self.connects += 1
        try:
            conn = await connect(self._target(token), compression=None, open_timeout=self.open_timeout)
        except InvalidStatus as exc:  # refused before the upgrade: a browser would see 1006
            return ABNORMAL, f"HTTP {exc.response.status_code}"
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            return ABNORMAL, str(exc)
        self._conn = conn
        self._refs.clear()
        self._start_refresh(conn)
        try:
            for joined in list(self.rooms.values()):  # every room again, each from where it was
                await self._ask_join(joined)
            self._opened.set()
            async for raw in conn:
                if isinstance(raw, str):
                    await self._handle(json.loads(raw))
        except ConnectionClosed:
            pass
        finally:
            self._stop_refresh()
            self._conn = None
            self._opened.clear()
            for joined in self.rooms.values():
                joined._joined.clear()
            await conn.close()
        return close_of(conn)

    async def _handle(self, event: dict[str, Any]) -> None:
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
            await self._refused(event)
        else:
            joined = self.rooms.get(event.get("room"))  # type: ignore[arg-type]
            if joined is not None and joined._joined.is_set():
                joined._take(event)

    async def _refused(self, event: dict[str, Any]) -> None:
        code, reason = event.get("code", 0), event.get("reason", "")
        if "ref" in event:  # a join (or a leave) refused
            joined = self._refs.pop(str(event["ref"]), None)
            if joined is None or self.rooms.get(joined.room) is not joined:
                if joined is not None:
                    joined._left.set()
                return
            if code == TRY_AGAIN_LATER:  # messaging unavailable on that replica for now: ask again
                asyncio.get_running_loop().call_later(
                    self.backoff.next(), lambda: self._later(self._ask_join(joined))
                )
                return
            del self.rooms[joined.room]
            joined._fail(closed_error(code, reason))
            return
        joined = self.rooms.get(event.get("room"))  # type: ignore[arg-type]
        msg_id = event.get("id")
        if joined is None or msg_id is None:
            return
        pending = joined._pending.get(msg_id)
        if pending is None or pending[1].done():
            return
        if code == TRY_AGAIN_LATER:  # not stored: the same id again after a pause (stored once)
            text = pending[0]
            asyncio.get_running_loop().call_later(
                self.backoff.next(), lambda: self._later(joined._transmit(text, msg_id))
            )
            return
        joined._refuse(msg_id, code, reason)

    def _later(self, step: Coroutine[Any, Any, None]) -> None:
        """Run a retry (a join or a send again) as a task the connection holds until it is done."""
        task = asyncio.ensure_future(step)
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    def _fail(self, error: Exception) -> None:
        self._error = error
        for joined in self.rooms.values():
            joined._fail(error)

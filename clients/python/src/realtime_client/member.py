"""``Member``: what a client knows of one room it is in, and what it waits for there.

Messages reach the iterator once each, in ``seq`` order: a message whose seq is not above the last one
delivered is dropped. When a resume cannot be complete (the welcome says ``recovered: false``), a
``Gap`` is recorded in ``gaps``, passed to ``on_gap`` and yielded by ``events()``. Sends carry an id
(``<client id>-<n>``) and are sent again with the same id after each welcome until acknowledged; the
server stores an id once, so ``send()`` returns the one stored seq. Those resends are paced (``Pacer``)
so a long backlog never breaks the server's message rate.
"""

import asyncio
import itertools
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

from realtime_client.closes import Refused
from realtime_client.events import Event, Gap, Message, Welcome, message_of, presence_of, welcome_of
from realtime_client.pacing import Pacer

_END = object()


class Member:
    """The part ``Room`` (one socket per room) and ``Joined`` (a room on a multiplexed ``Connection``)
    share. Messages reach the iterator once each, in ``seq`` order; sends wait for their ack and are sent
    again, with the same id, after each re-welcome until acknowledged."""

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
        self._resending: asyncio.Task[None] | None = None  # the backlog going out again after a welcome
        self._error: Exception | None = None  # a final close (Closed), or what the token callable raised

    @property
    def _pacer(self) -> Pacer:
        """The rate of the socket this room's sends go out on."""
        raise NotImplementedError

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
                welcomes = self.welcomes
                await self._pacer.new_send()
                if self._joined.is_set() and self.welcomes == welcomes:  # else the next welcome sends it
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

    def _waiting(self, msg_id: str) -> str | None:
        """The text of a send still waiting for its answer (None: answered, or never sent)."""
        pending = self._pending.get(msg_id)
        return None if pending is None or pending[1].done() else pending[0]

    async def _resend(self, backlog: list[str]) -> None:
        """What may not have been stored, again with the same ids, no faster than the socket's pace
        (new sends wait behind it meanwhile)."""
        pacer = self._pacer
        pacer.backlog += len(backlog)
        left = len(backlog)
        try:
            for msg_id in backlog:
                if self._waiting(msg_id) is not None:  # not answered meanwhile
                    await pacer.take()
                    text = self._waiting(msg_id)
                    if text is not None:
                        await self._transmit(text, msg_id)
                        self.resent += 1
                left -= 1
                pacer.backlog -= 1
        finally:
            pacer.backlog -= left  # cancelled (the socket went): the next welcome starts over

    def _stop_resending(self) -> None:
        if self._resending is not None:
            self._resending.cancel()
            self._resending = None

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
            self._events.put_nowait(message_of(event))
        elif kind == "ack":
            pending = self._pending.get(event["id"])
            if pending is not None and not pending[1].done():
                pending[1].set_result(event["seq"])
        elif kind == "error" and "id" in event:  # one send refused (the publish hook, or 1013)
            self._refuse(event["id"], event.get("code", 0), event.get("reason", ""))
        elif kind in ("join", "leave", "members"):
            self.count = event["count"]
            self._events.put_nowait(presence_of(event))

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
        self.welcome = welcome_of(event)
        if event.get("recovered") is False:
            gap = Gap(asked, event["seq"], epoch)
            self.gaps.append(gap)
            if self.on_gap is not None:
                self.on_gap(gap)
            self._events.put_nowait(gap)
        self.welcomes += 1
        self._joined.set()
        self._stop_resending()
        backlog = [msg_id for msg_id in self._pending if self._waiting(msg_id) is not None]
        if backlog:  # a task: the socket goes on being read (acks, messages) while they go out
            self._resending = asyncio.create_task(self._resend(backlog), name=f"resend-{self.room}")

    def _unwelcomed(self) -> None:
        """The socket is gone: nothing goes out until the next welcome."""
        self._joined.clear()
        self._stop_resending()

    def _fail(self, error: Exception) -> None:
        self._error = error
        self._stop_resending()
        for _, future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._events.put_nowait(error)

    def _end(self) -> None:
        self._stop_resending()
        for _, future in self._pending.values():
            future.cancel()
        self._events.put_nowait(_END)

"""``Room``: one member of a chat room that resumes by itself, on its own socket (``/ws/{room}``).

The session is a background task (``Session``): it connects with ``?format=json`` (plus
``since``/``epoch`` once it has seen the room), reads every frame, and after a close the table calls
"reconnect" comes back with a jittered exponential backoff. What it knows of the room and waits for
there (messages once each in ``seq`` order, gaps, acknowledged sends sent again after each reconnect,
paced) is the ``Member`` a ``Connection``'s rooms share. A final close (4001, 4003, 4004, 1008, 1009, ...)
ends the session: the iterator, ``send()`` and entering the ``async with`` raise
``InvalidToken``/``Forbidden``/``RoomClosed`` with the code and reason, and nothing is retried.

Identity: ``token=`` is an identity token (a JWT from the app's own login), given as a string or as a
callable (plain or async) that returns one; a callable is called before every connection attempt, so a
reconnect an hour later sends a fresh token, not an expired one; and while connected, shortly before the
token's ``exp`` it is asked again and the new token sent as ``refresh``, so the server never closes a
long-lived member with 4002 ``token expired`` (a plain string cannot be refreshed: 4002, then a
reconnect with it, which the server refuses). ``name=`` is an unverified display name
for a member without a token (``?name=``; the server ignores it when a token is given). Messages,
presence events and the welcome carry the sender's ``user`` (a token's ``sub``) and ``name`` when known.
"""

from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from websockets.asyncio.client import ClientConnection

from realtime_client.backoff import Backoff
from realtime_client.events import Gap
from realtime_client.member import Member
from realtime_client.pacing import RESEND_BURST, RESEND_RATE, Pacer
from realtime_client.session import Session
from realtime_client.tokens import TokenSource


class Room(Member, Session):
    """``async with Room(url, room) as room: async for message in room: ...``

    ``url`` is the gateway's base (``ws://host:port``). ``token`` is an identity token (a JWT: the member
    is its user, and a refused token raises ``InvalidToken`` and is never retried): a string, or a
    callable (sync or async) returning a fresh one, called before every connection attempt (tokens
    expire; a callable that raises ends the session with its exception). ``name`` is a display name
    (``?name=``, unverified; ignored by the server when a token is given). ``password`` is sent as
    ``pass``; ``history=N`` asks for the last N messages before live ones. After a reconnect the
    unacknowledged sends go again at most ``resend_burst`` at once, then ``resend_rate`` a second
    (counting new sends), below the server's MESSAGE_BURST and MESSAGE_RATE, which close with 1008.
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
        resend_rate: float = RESEND_RATE,
        resend_burst: int = RESEND_BURST,
    ) -> None:
        Session.__init__(self, url, token, name, backoff, open_timeout, Pacer(resend_rate, resend_burst))
        Member.__init__(
            self,
            room,
            password=password,
            history=history,
            client_id=client_id,
            join_timeout=join_timeout,
            on_gap=on_gap,
        )
        self._asked: int | None = None  # the since the current connection asked for

    @property
    def _pacer(self) -> Pacer:
        return self.pacer

    # --- the context manager ---------------------------------------------------------------------
    async def __aenter__(self) -> "Room":
        await self._start(
            self._joined, self.join_timeout, f"could not join {self.room!r}", f"room-{self.room}"
        )
        return self

    async def close(self) -> None:
        """Leave the room; pending sends are cancelled and the iterators end."""
        await self._stop()
        self._end()

    async def _transmit(self, text: str, msg_id: str) -> None:
        await self._put({"text": text, "id": msg_id})

    # --- the session -----------------------------------------------------------------------------
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

    async def _connected(self, conn: ClientConnection) -> None:
        self._asked = self._resume_from()

    async def _handle(self, conn: ClientConnection, event: dict[str, Any]) -> None:
        if event.get("type") == "welcome":
            self._conn = conn  # sends go out from the welcome on
            self.backoff.reset()
            self._start_refresh(conn)
            await self._welcomed(event, self._asked)
        else:
            self._take(event)

    def _lost(self) -> None:
        self._unwelcomed()
